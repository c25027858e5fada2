#!/usr/bin/env bash
# The whole test suite, from a clean clone: formatting, lints, and every test. The tests run with
# Azurite (installed if needed, started on a free loopback port, stopped at the end) for the ledger.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
scripts/with-azurite.sh cargo test --locked
