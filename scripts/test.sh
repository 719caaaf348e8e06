#!/usr/bin/env bash
# The whole test suite: installs Dovecot and the clients if missing, builds the fuzz targets and
# replays their committed corpora (scripts/fuzz.sh), then runs every test (unit tests, and
# integration tests that start private Dovecot servers on loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/fuzz.sh 0
cargo test --all-targets "$@"
