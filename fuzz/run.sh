#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 20: CI's smoke run; 600 for a campaign) on the
# committed corpus, which grows with what the fuzzer finds. cargo-fuzz needs a nightly compiler.
# Usage: fuzz/run.sh [SECONDS] [TARGET…]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(q_filter events_json events_ndjson events_csv otlp_protobuf otlp_json remote_push)
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# No sanitizer: the code under test forbids `unsafe`; libFuzzer still finds panics, hangs
# (-timeout) and runaway memory (-rss_limit_mb).
cargo +nightly fuzz build -O --sanitizer none
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "fuzzing $target for ${seconds}s"
  cargo +nightly fuzz run -O --sanitizer none "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -n 12
done
