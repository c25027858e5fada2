#!/usr/bin/env bash
# Code-upload figures for docs/evidence.md, in one run against one Azurite: our upload
# (examples/upload_bench.rs: the rollout's streaming upload) and the azure-ai-ml SDK's
# (BlobStorageClient.upload, what `az ml online-deployment create` runs) on the same folder of one
# 384 MiB file and 1,000 files of 32 KiB, each timed with its peak RSS; then 9,000 small files
# uploaded over successive visits that each stop at their deadline. Not part of `cargo test`.
#
#   scripts/upload-bench.sh [--rounds N]      (default 3)
#
# Needs python3 (a venv with azure-ai-ml 1.35.2 is made in $UPLOAD_BENCH_VENV, default
# /tmp/upload-bench-venv) and GNU time (/usr/bin/time, Debian package `time`).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${UPLOAD_BENCH_VENV:-/tmp/upload-bench-venv}"
if ! "$venv/bin/python" -c 'import azure.ai.ml' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q azure-ai-ml==1.35.2
fi
if [ ! -x /usr/bin/time ]; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y time; else sudo apt-get install -y time; fi
fi
t="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked --example upload_bench
rounds=3
if [ "${1:-}" = --rounds ]; then rounds="$2"; fi
ours="$t/release/examples/upload_bench"
py="$venv/bin/python"
scripts/with-azurite.sh "$py" scripts/upload-bench.py "$ours" compare "$rounds"
# Azurite slows down as it holds more blobs: each 9,000-file run gets a fresh one.
"$py" scripts/upload-bench.py "$ours" many-header
scripts/with-azurite.sh "$py" scripts/upload-bench.py "$ours" sdk
# 20 s: the rollout's upload step budget (each step records its progress); 2 s: many visits.
scripts/with-azurite.sh "$py" scripts/upload-bench.py "$ours" ours:20
scripts/with-azurite.sh "$py" scripts/upload-bench.py "$ours" ours:2
