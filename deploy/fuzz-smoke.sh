#!/usr/bin/env bash
# Every fuzz target (fuzz/, cargo fuzz) built and run briefly, as CI does after the tests: a
# smoke run that proves the targets build, their seeds pass, and a short search finds nothing.
# Not a substitute for long runs (docs/fuzzing.md). Stable Rust: no sanitizer (-s none); the
# targets' own assertions and Rust's checks (overflow included) are what fail.
#
#   deploy/fuzz-smoke.sh [TARGET...]     (default: every target; FUZZ_SECONDS per target, 20)
#
# Builds go to $FUZZ_TARGET_DIR, next to CARGO_TARGET_DIR (outside the clone); the corpus each
# run grows and any crash input are kept in $FUZZ_DIR, so later runs start from what earlier
# ones found. Exits 1 if a target crashed, printing the input and how to reproduce it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/common.sh
source deploy/common.sh

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$(dirname "$CARGO_TARGET_DIR")/target-fuzz}"
FUZZ_DIR="${FUZZ_DIR:-$(dirname "$CARGO_TARGET_DIR")/fuzz}"
# cargo's jobs (cargo fuzz's own -j means libFuzzer workers): the machine's cores, 2 in CI.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-$(nproc)}"

ensure_packages build-essential
ensure_cargo_tool cargo-fuzz cargo-fuzz 0.13.2
export PATH="$TOOLS_ROOT/bin:$PATH"

say "fuzz targets: cargo fmt --check"
cargo fmt --manifest-path fuzz/Cargo.toml --check

started=$SECONDS
say "fuzz targets: building (-s none) into $FUZZ_TARGET_DIR"
cargo fuzz build -s none --target-dir "$FUZZ_TARGET_DIR"
say "fuzz targets built in $((SECONDS - started)) s"

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

crashed=()
for target in "${targets[@]}"; do
  corpus="$FUZZ_DIR/corpus/$target"
  artifacts="$FUZZ_DIR/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  seeds=()
  if [ -d "fuzz/corpus/$target" ]; then
    seeds=("fuzz/corpus/$target")
  fi
  say "fuzz $target: ${FUZZ_SECONDS} s, corpus $corpus ${seeds[*]/#/+ seeds }"
  log="$artifacts/last-run.log"
  # New inputs go to the first corpus directory; the committed seeds are only read.
  # -timeout: an input taking 10 s is a hang, reported like a crash; `timeout`: a hard cap.
  if timeout --kill-after=10 $((FUZZ_SECONDS + 300)) \
    cargo fuzz run -s none --target-dir "$FUZZ_TARGET_DIR" "$target" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^(stat::number_of_executed_units|Done [0-9]+ runs)' "$log" | sed "s/^/    $target: /" >&2 || true
    continue
  fi
  tail -n 60 "$log" >&2
  input=$(grep -o "Test unit written to .*" "$log" | tail -n 1 | sed 's/^Test unit written to //' || true)
  say "FUZZ TARGET $target CRASHED (full log: $log)"
  if [ -n "$input" ]; then
    say "crash input: $input"
    say "reproduce: cargo fuzz run -s none --target-dir $FUZZ_TARGET_DIR $target $input"
  fi
  crashed+=("$target${input:+ ($input)}")
done

if [ ${#crashed[@]} -gt 0 ]; then
  say "fuzz smoke run FAILED: ${#crashed[@]} target(s) crashed:"
  printf '    %s\n' "${crashed[@]}" >&2
  exit 1
fi
say "fuzz smoke run passed: ${#targets[@]} targets, ${FUZZ_SECONDS} s each, $((SECONDS - started)) s in all"
