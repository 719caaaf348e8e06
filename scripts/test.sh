#!/usr/bin/env bash
# The whole test suite: installs Dovecot if missing, then runs every test (unit tests, and
# integration tests that start private Dovecot servers on loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --all-targets "$@"
