#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time (default 60 s each) on stable Rust (`-s none`: no
# sanitizer, which needs nightly). Crashing inputs are copied to tests/fuzz-regressions/TARGET/, where
# `cargo test` replays them on every run (tests/regressions.rs).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(envelope_event config translate)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

status=0
for target in "${targets[@]}"; do
  echo "fuzz.sh: $target for ${seconds}s"
  mkdir -p "fuzz/corpus/$target"
  cp -n tests/fixtures/*.json "fuzz/corpus/$target/" 2>/dev/null || true
  cp -n examples/*.yml examples/deployments/*.yml "fuzz/corpus/$target/" 2>/dev/null || true
  if ! (cd fuzz && cargo fuzz run -s none "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048); then
    status=1
  fi
  if ls fuzz/artifacts/"$target"/crash-* >/dev/null 2>&1; then
    mkdir -p "tests/fuzz-regressions/$target"
    cp fuzz/artifacts/"$target"/crash-* "tests/fuzz-regressions/$target/"
    echo "fuzz.sh: $target found crashes; copied to tests/fuzz-regressions/$target/ (commit them with the fix)"
  fi
done
exit $status
