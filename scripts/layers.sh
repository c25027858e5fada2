#!/usr/bin/env bash
# Prints every module's imports (the arrows `tests/layers.rs` checks against the layer list in
# src/lib.rs), then runs that check. Part of `cargo test`, so CI runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS_LIST=1 cargo test --locked --test layers -- --nocapture --test-threads 1 imports_point_down
