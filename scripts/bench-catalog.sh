#!/usr/bin/env bash
# Benchmark of planning from the catalog, on SQLite and on a PostgreSQL
# server started on loopback (Debian's postgresql; see
# scripts/test-deps.sh): N VMs x 100 points, the whole read beside the
# points kept between plans, and the planner after a night's changes.
#
#   scripts/bench-catalog.sh [VMS]      (default 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
COFFER_BENCH_VMS=${1:-10000} cargo test --release -q --test bench_catalog -- --ignored --nocapture
