#!/usr/bin/env bash
# Benchmark of what planning reads from the catalog, on SQLite and on a
# PostgreSQL server started on loopback (Debian's postgresql; see
# scripts/test-deps.sh): N VMs x 100 points, today's read beside the one
# before it.
#
#   scripts/bench-catalog.sh [VMS]      (default 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
COFFER_BENCH_VMS=${1:-10000} cargo test --release -q --test bench_catalog -- --ignored --nocapture
