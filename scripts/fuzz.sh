#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation (stable Rust: the flags
# cargo-fuzz passes with `--sanitizer none`), replays every committed corpus, then fuzzes each
# target for SECONDS (default 0: replay only). New coverage goes to a scratch directory; a crash
# stops the script, its input saved under fuzz/artifacts/<target>/ to be added to the corpus as a
# regression input once fixed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-0}
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
# --target keeps the flags off build scripts and proc macros.
cargo build --quiet --profile fuzz --target "$triple" --target-dir target
bin="target/$triple/fuzz"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for corpus in corpus/*/; do
  target=$(basename "$corpus")
  "$bin/$target" -runs=0 "$corpus" 2>/dev/null || {
    echo "fuzz target $target fails on its committed corpus" >&2
    "$bin/$target" -runs=0 "$corpus"
  }
done
echo "replayed every corpus"
[ "$seconds" -gt 0 ] || exit 0
for corpus in corpus/*/; do
  target=$(basename "$corpus")
  mkdir -p "$scratch/$target" "artifacts/$target"
  "$bin/$target" "$scratch/$target" "$corpus" -max_total_time="$seconds" -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$target/" -print_final_stats=1 2>"$scratch/$target.log" || {
    tail -40 "$scratch/$target.log" >&2
    echo "fuzz target $target failed; its input is in fuzz/artifacts/$target/" >&2
    exit 1
  }
  echo "$target: $(grep -E '^stat::number_of_executed_units' "$scratch/$target.log" | awk '{print $2}') runs in ${seconds}s, $(ls "$scratch/$target" | wc -l) new inputs"
done
