#!/usr/bin/env bash
# Runs the torture test (tests/torture.rs) over more seeds than CI does:
#   scripts/torture.sh N [FIRST] [STEPS]
# runs seeds FIRST .. FIRST+N-1 (FIRST defaults to 1000, so they differ from
# CI's seeds), each of STEPS random operations (default 14). A failing seed is
# printed with its steps; replay it with
#   COFFER_TORTURE_SEED=<seed> cargo test --test torture
# COFFER_TORTURE_WORKERS=N in the environment runs every seed with its
# backups handed to N workers (a PostgreSQL catalog, apply --distributed).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
FIRST=${2:-1000}
STEPS=${3:-14}
scripts/test-deps.sh >/dev/null
mkdir -p target
LOG=target/torture.log
status=0
COFFER_TORTURE_SEEDS=$N COFFER_TORTURE_FIRST_SEED=$FIRST COFFER_TORTURE_STEPS=$STEPS \
  cargo test --locked --test torture -- --nocapture >"$LOG" 2>&1 || status=$?
grep -E '^torture seed|^test result' "$LOG" || true
if [ "$status" -ne 0 ]; then
  grep -A40 'failed:' "$LOG" | head -60
  echo "torture: a seed failed (full log: $LOG)"
fi
exit "$status"
