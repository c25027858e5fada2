#!/usr/bin/env bash
# The whole test suite, from a clean clone: formatting, lints, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
