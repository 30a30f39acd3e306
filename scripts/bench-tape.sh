#!/usr/bin/env bash
# Benchmark of a tape tier against a disk tier on the emulated library:
# copy of a full and of an incremental, restore (tape: staging + restore),
# bytes stored, side by side with tape/disk ratios.
#
#   scripts/bench-tape.sh [IMAGE_MIB]      (default 256)
set -euo pipefail
cd "$(dirname "$0")/.."
COFFER_BENCH_MIB=${1:-256} cargo test --release -q --test bench_tape -- --ignored --nocapture
