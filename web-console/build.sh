#!/usr/bin/env bash
# Builds the web console into dist/: the API client's types are generated from the OpenAPI
# document of the control plane binary, so a console that no longer matches the API fails tsc.
#
#   web-console/build.sh [CONTROL_PLANE_BINARY]
#
# Default binary: ${CARGO_TARGET_DIR:-/var/cache/cloud/target}/debug/control-plane.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

binary="${1:-${CARGO_TARGET_DIR:-/var/cache/cloud/target}/debug/control-plane}"
if [[ ! -x "$binary" ]]; then
    echo "build.sh: no control-plane binary at $binary (build it with cargo, or pass its path)" >&2
    exit 1
fi

# npm ci when node_modules is missing or older than the lock file.
if [[ ! -d node_modules || package-lock.json -nt node_modules ]]; then
    npm ci --no-audit --no-fund
    touch node_modules
fi

"$binary" openapi > openapi.json.tmp
mv openapi.json.tmp openapi.json
npx --no-install openapi-typescript openapi.json -o src/api/schema.d.ts
npx --no-install tsc --noEmit
npx --no-install vite build
echo "build.sh: built $here/dist"
