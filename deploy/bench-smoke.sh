#!/usr/bin/env bash
# Every benchmark once, in a small configuration, to prove it still runs and prints its figures
# (JSON lines). Not a timing: the figures are printed, never compared. Run by deploy/test.sh
# after the tests (it needs what they need: root, QEMU, the guest images, the binaries built,
# and CLOUD_TEST_DATABASE_URL or PostgreSQL to start a private cluster).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

# Runs a benchmark; fails unless it exits 0 and prints at least one JSON line, all of them valid.
bench() {
  local name=$1
  shift
  say "benchmark $name (small): $*"
  local out
  if ! out=$("$@"); then
    echo "benchmark $name failed" >&2
    exit 1
  fi
  printf '%s\n' "$out"
  printf '%s\n' "$out" | python3 -c '
import json, sys
lines = [l for l in sys.stdin.read().splitlines() if l.startswith("{")]
if not lines:
    sys.exit("benchmark " + sys.argv[1] + " printed no JSON line")
for line in lines:
    json.loads(line)
' "$name"
}

bench placement cargo run -q -p control-plane --example placement-bench -- --hosts 200 --preplaced 2000 --placements 200 --workers 4
bench api-load cargo run -q -p cloud-tests --example api-load-bench -- --hosts 10 --creates 40 --concurrency 8 --warmup 8 --report-interval-ms 1000 --list-instances 400
bench vmm cargo bench -q --profile dev -p vmm --bench vmm-bench -- 1
bench suspend cargo run -q -p cloud-tests --example suspend-bench -- 1
bench first-create cargo run -q -p cloud-tests --example first-create-bench
bench dr cargo run -q -p cloud-tests --example dr-bench -- 1
bench launch cargo run -q -p cloud-tests --example launch-bench -- 1
