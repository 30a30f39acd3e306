#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, and the whole test suite.
# Installs what the tests need first (scripts/test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
mkdir -p target
cargo test --locked --all-targets 2>&1 | tee target/test-output.txt
# Sum the per-binary result lines into one closing line.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, i }' target/test-output.txt
