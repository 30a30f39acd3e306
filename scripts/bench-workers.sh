#!/usr/bin/env bash
# Benchmark of distributed runs: the lab (a vCenter of two hosts, its file
# service throttled as a host's is) backed up by 1, 2 and 4 `coffer worker`
# processes through a PostgreSQL catalog on loopback, beside one runner.
#
#   scripts/bench-workers.sh [VMS]      (default 16)
set -euo pipefail
cd "$(dirname "$0")/.."
COFFER_BENCH_VMS=${1:-16} cargo test --release -q --test distributed -- --ignored --nocapture workers_bench
