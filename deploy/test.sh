#!/usr/bin/env bash
# Runs the whole test suite as CI does: formatting, lints, then every test against real
# components (a PostgreSQL cluster for this run, QEMU, guest images built from Debian packages).
# Installs what it needs first; safe to run again and again.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/common.sh
source deploy/common.sh

ensure_packages "${RUNTIME_PACKAGES[@]}" build-essential pkg-config shellcheck

# The OpenID Connect provider the sign-in tests run against (npm oidc-provider, pinned by
# tests/oidc/package-lock.json). Node 18 or newer: Debian's nodejs will do when none is there.
say "the test identity provider (tests/oidc)"
ensure_packages nodejs
command -v npm >/dev/null || ensure_packages npm
npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
# The browser the console's tests drive: Debian's Chromium, through playwright-core (no download).
ensure_packages chromium

# The S3 server the store's tests run against (a real one: it checks SigV4 signatures).
ensure_cargo_tool s3s-fs s3s-fs 0.14.1 --features binary
export CLOUD_TEST_S3S_FS="$TOOLS_ROOT/bin/s3s-fs"

# A highly-available PostgreSQL for the failover test (tests/tests/e2e/ha.rs): Patroni and etcd.
# The test runs its own on free loopback ports; the services the packages start are not wanted.
ensure_packages_without_services patroni etcd-server python3-etcd

# The OpenAPI fuzzer the API's document is checked with (tests/tests/e2e/schemathesis.rs).
ensure_packages python3-venv
ensure_python_tool schemathesis tests/schemathesis/requirements.txt
export CLOUD_TEST_SCHEMATHESIS="$TOOLS_ROOT/schemathesis/bin/schemathesis"

say "shellcheck: the deploy scripts and the minimal guest's scripts"
shellcheck -x deploy/*.sh deploy/images/*.sh web-console/build.sh .ci/run
(cd deploy/images/minimal/rootfs && shellcheck -s sh init usr/lib/cloud-minimal/{ready,console,shutdown,udhcpc.script,guest-agent} etc/acpi/PWRF/00000080)

say "cargo fmt --check"
cargo fmt --all --check
say "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
say "cargo doc (broken links and markup in doc comments are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

say "guest images: minimal and debian-12 (cached; rebuilt only when their inputs change)"
deploy/images/build-minimal.sh
deploy/images/build-debian12.sh

say "building the tests"
cargo build --workspace --bins
say "the web console: its API client generated from this build's OpenAPI document, type-checked, bundled"
web-console/build.sh "$CARGO_TARGET_DIR/debug/control-plane"
cargo nextest run --workspace --no-run

# One throwaway PostgreSQL cluster for the whole run; each test creates its own database on it.
run_dir="$(mktemp -d /tmp/cloud-test-run.XXXXXX)"
pg_pid=""
cleanup() {
  if [ -n "$pg_pid" ] && kill -0 "$pg_pid" 2>/dev/null; then
    kill -INT "$pg_pid" || true
    wait "$pg_pid" || true
  fi
  rm -rf "$run_dir"
}
trap cleanup EXIT
say "starting the test run's PostgreSQL cluster in $run_dir"
"$CARGO_TARGET_DIR/debug/control-plane" --data-dir "$run_dir" --log-filter warn \
  embedded-db --unsafe-no-fsync --url-file "$run_dir/url" >/dev/null &
pg_pid=$!
for _ in $(seq 1 600); do
  [ -s "$run_dir/url" ] && break
  kill -0 "$pg_pid" 2>/dev/null || { say "the test cluster failed to start"; exit 1; }
  sleep 0.1
done
[ -s "$run_dir/url" ] || { say "the test cluster did not start within 60 s"; exit 1; }
CLOUD_TEST_DATABASE_URL="$(cat "$run_dir/url")"
export CLOUD_TEST_DATABASE_URL

say "cargo nextest run --workspace"
cargo nextest run --workspace --no-fail-fast "$@"

if [ "$#" -eq 0 ]; then
  deploy/bench-smoke.sh
  deploy/fuzz-smoke.sh
else
  say "benchmarks and fuzz targets not run: the tests were filtered ($*)"
fi
