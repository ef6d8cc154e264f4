#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time each (default
# 60 s), starting from the seeds in fuzz/seeds/<target>/ plus whatever
# earlier runs left in fuzz/corpus/<target>/ (not committed). Prints one
# line per target (seconds, executions, result) and exits non-zero if any
# target fails to build or finds a crash (the input is kept in
# fuzz/artifacts/<target>/: turn it into a regression seed and a test).
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# RACK_GATEWAY_FUZZ_RUNS=N also stops each target after N executions: with
# the fixed mutation seed that makes a run repeatable on any machine (a
# slower one that hits the time limit first runs a prefix of the same
# sequence), which is what the CI smoke wants; exploratory runs leave it
# unset and give a random seed (RACK_GATEWAY_FUZZ_SEED=0).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
shift || true
case "$secs" in '' | *[!0-9]*) echo "scripts/fuzz.sh: seconds must be a whole number, got '$secs'" >&2; exit 2 ;; esac
case "${RACK_GATEWAY_FUZZ_RUNS:-0}" in *[!0-9]*) echo "scripts/fuzz.sh: RACK_GATEWAY_FUZZ_RUNS must be a whole number, got '$RACK_GATEWAY_FUZZ_RUNS'" >&2; exit 2 ;; esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "scripts/fuzz.sh: installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked --version 0.13.2
fi
# cargo-fuzz passes -Z flags (sanitizer coverage) that only nightly takes;
# RUSTC_BOOTSTRAP lets the stable toolchain accept them. No sanitizer: the
# crate forbids unsafe code, so AddressSanitizer would only slow the run;
# debug assertions stay on so integer overflow is a crash too.
export RUSTC_BOOTSTRAP=1
flags=(--sanitizer none --debug-assertions)
cargo fuzz build "${flags[@]}"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  set +e
  # A fixed mutation seed (RACK_GATEWAY_FUZZ_SEED, default 1) keeps the
  # CI smoke repeatable; set it to 0 for a random seed on longer runs.
  cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
    -seed="${RACK_GATEWAY_FUZZ_SEED:-1}" ${RACK_GATEWAY_FUZZ_RUNS:+-runs="$RACK_GATEWAY_FUZZ_RUNS"} \
    >"$logs/$t" 2>&1
  rc=$?
  set -e
  execs=$(awk '/stat::number_of_executed_units:/ { print $2 }' "$logs/$t" | tail -1)
  if [ "$rc" = 0 ]; then
    result=ok
  else
    result="FAILED (exit $rc)"
    failed=1
    tail -40 "$logs/$t" >&2
  fi
  summary+=("$(printf '%-14s %6ss %12s execs  %s' "$t" "$secs" "${execs:-?}" "$result")")
done
printf '%s\n' "${summary[@]}"
exit "$failed"
