#!/usr/bin/env bash
# Runs the micro-benchmarks (release profile) and prints divan's table:
# per-request policy decision, routing, canonicalization, and loading a
# generated config repo of 1,000 users / 50 roles / 200 apps.
# Targets (not enforced): decision median <= 2 µs; load_and_validate <= 100 ms.
# Extra arguments go to divan, e.g. `scripts/bench.sh decision`.
# End-to-end proxy throughput is a separate script: bench/load.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo bench --locked --bench policy -- "$@"
