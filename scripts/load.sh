#!/usr/bin/env bash
# Load test: 2,000 deliveries in one minute over 200 model versions (duplicates, 30% in parallel)
# through the host contract, with the ledger in Azurite. Asserts exactly 200 GitHub dispatches and
# prints p50/p99 latency and resident memory. Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin aml-autodeploy --example load
exec scripts/with-azurite.sh target/release/examples/load target/release/aml-autodeploy
