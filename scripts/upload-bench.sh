#!/usr/bin/env bash
# Code-upload figures for docs/evidence.md, in one run against one Azurite: our upload
# (examples/upload_bench.rs: the rollout's streaming upload) and the azure-ai-ml SDK's
# (BlobStorageClient.upload, what `az ml online-deployment create` runs) on the same folder of one
# 384 MiB file and 1,000 files of 32 KiB, each timed with its peak RSS; then 9,000 small files
# uploaded over successive visits that each stop at their deadline. Not part of `cargo test`.
#
#   scripts/upload-bench.sh [--rounds N]
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
exec scripts/with-azurite.sh "$venv/bin/python" scripts/upload-bench.py "$t/release/examples/upload_bench" "$@"
