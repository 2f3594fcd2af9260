// The dev server proxies the API (and the console WebSocket) to a control plane, so pages run
// same-origin as they do when the control plane serves dist/. CLOUD_API: its base URL.
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

const api = process.env.CLOUD_API ?? 'http://127.0.0.1:8090';

export default defineConfig({
  plugins: [react()],
  build: { outDir: 'dist', sourcemap: true, chunkSizeWarningLimit: 1024 },
  server: {
    proxy: {
      '/v1': { target: api, ws: true, changeOrigin: false },
      '/auth': { target: api, changeOrigin: false },
    },
  },
});
