#!/usr/bin/env bash
# Benchmark of packs on object storage: PUT/GET requests, objects per GiB,
# repository size and restore throughput, one object per chunk against
# packs of 4, 16 and 64 MiB, on moto behind a counting proxy.
#
#   scripts/bench-packs.sh [IMAGE_MIB]      (default 256)
#
# Needs moto (scripts/test-deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
COFFER_BENCH_MIB=${1:-256} cargo test --release -q --test bench_packs -- --ignored --nocapture
