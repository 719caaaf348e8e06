#!/usr/bin/env bash
# The whole test suite: installs Dovecot if missing, builds the fuzz targets and replays their
# committed corpus, then runs every test (unit tests, and integration tests that start private
# Dovecot servers on loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --quiet --manifest-path fuzz/Cargo.toml --target-dir fuzz/target
for corpus in fuzz/corpus/*/; do
  target=$(basename "$corpus")
  "fuzz/target/debug/$target" -runs=0 "$corpus"
done
cargo test --all-targets "$@"
