// The console's entry: routes, each page under the signed-in shell except sign-in.
import { lazy, StrictMode, Suspense } from 'react';
import { createRoot } from 'react-dom/client';
import { BrowserRouter, Navigate, Route, Routes, useLocation } from 'react-router-dom';
import { AuthProvider, useAuth } from './auth';
import { Shell } from './components/Shell';
import { Loading } from './components/States';
import { ErrorBanner } from './components/Dialog';
import { SignIn } from './pages/SignIn';
import { Home } from './pages/Home';
import { Instances } from './pages/Instances';
import { InstanceCreate } from './pages/InstanceCreate';
import { InstanceDetail } from './pages/InstanceDetail';
import { SshKeys } from './pages/SshKeys';
import { Images } from './pages/Images';
import { Snapshots } from './pages/Snapshots';
import { Operations } from './pages/Operations';
import { Members } from './pages/Members';
import { Hosts } from './pages/Hosts';
import { NotFound } from './pages/NotFound';
import './styles/base.css';
import './styles/frame.css';
import './styles/pages.css';

// xterm.js is most of the code: loaded with the console page only.
const SerialConsole = lazy(() => import('./pages/SerialConsole').then((m) => ({ default: m.SerialConsole })));

/** Signed-in pages: the sign-in page (keeping where the user wanted to go) until there is a session. */
function RequireSession() {
  const { state, refresh } = useAuth();
  const location = useLocation();
  if (state.status === 'loading') return <Loading what="your session" />;
  if (state.status === 'error') {
    return (
      <div className="state-box">
        <ErrorBanner message={`Cannot reach the control plane: ${state.message}`} />
        <button type="button" className="btn" onClick={() => void refresh()}>
          Try again
        </button>
      </div>
    );
  }
  if (state.status === 'signed-out') {
    const next = location.pathname + location.search;
    return <Navigate to={`/signin?next=${encodeURIComponent(next)}`} replace />;
  }
  return <Shell />;
}

function App() {
  return (
    <Routes>
      <Route path="/signin" element={<SignIn />} />
      <Route element={<RequireSession />}>
        <Route index element={<Home />} />
        <Route path="projects/:project">
          <Route index element={<Navigate to="instances" replace />} />
          <Route path="instances" element={<Instances />} />
          <Route path="instances/new" element={<InstanceCreate />} />
          <Route path="instances/:instance" element={<InstanceDetail />} />
          <Route
            path="instances/:instance/console"
            element={
              <Suspense fallback={<Loading what="the console" />}>
                <SerialConsole />
              </Suspense>
            }
          />
          <Route path="ssh-keys" element={<SshKeys />} />
          <Route path="images" element={<Images />} />
          <Route path="snapshots" element={<Snapshots />} />
          <Route path="operations" element={<Operations />} />
          <Route path="members" element={<Members />} />
        </Route>
        <Route path="hosts" element={<Hosts />} />
        <Route path="*" element={<NotFound />} />
      </Route>
    </Routes>
  );
}

const root = document.getElementById('root');
if (!root) throw new Error('no #root element');
createRoot(root).render(
  <StrictMode>
    <BrowserRouter>
      <AuthProvider>
        <App />
      </AuthProvider>
    </BrowserRouter>
  </StrictMode>,
);
