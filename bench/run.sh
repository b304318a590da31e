#!/usr/bin/env bash
# Benchmark sluice against its peers; all options go to bench/bench.py (see --help).
#   bench/run.sh            10M rows, 3 runs -> bench/RESULTS.md, bench/results.png
#   bench/run.sh --quick    1M rows, 1 run   -> bench/out/RESULTS-quick.md (smoke test)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."   # sluice commands use repo-relative paths
PYTHON="${PYTHON:-python3}"
export SLUICE_BENCH_INVOKED_AS="bench/run.sh"
exec "$PYTHON" bench/bench.py "$@"
