#!/usr/bin/env bash
# Benchmarks aml-autodeploy beside a minimal axum server, in one run: readiness after process start,
# per-invocation latency (p50/p99), throughput under wrk and resident memory after 10,000 invocations;
# then many rules (10, 1,000 and 10,000 generated rules). `scripts/bench.sh --rules` runs only that.
# Release build; everything runs on loopback and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  # wrk generates the load for the throughput figures (Debian package).
  if [ "$(id -u)" = 0 ]; then apt-get install -y wrk; else sudo apt-get install -y wrk; fi
fi
t="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked --bin aml-autodeploy --example hello_axum --example parse_and_reply --example bench
exec "$t/release/examples/bench" "$t/release/aml-autodeploy" "$t/release/examples/hello_axum" \
  "$t/release/examples/parse_and_reply" "$@"
