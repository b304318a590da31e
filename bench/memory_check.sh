#!/usr/bin/env bash
# 2 GB of CSV (and the same rows as Parquet) through sluice with a 256 MB budget; peak RSS
# must stay under 320 MB. Writes its section of bench/RESULTS.md. Options: see --help.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec "${PYTHON:-python3}" bench/memory_check.py "$@"
