#!/usr/bin/env bash
# Benchmark of refreshing the catalog from a tier: a tier of N points on a
# local directory and on moto with a round trip added per request, the
# manifests read one by one (as before) against the refresh.
#
#   scripts/bench-refresh.sh [POINTS] [RTT_MS]      (default 1000 20)
#
# Needs moto (scripts/test-deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
COFFER_BENCH_POINTS=${1:-1000} COFFER_BENCH_RTT_MS=${2:-20} \
    cargo test --release -q --test bench_refresh -- --ignored --nocapture
