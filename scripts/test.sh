#!/usr/bin/env bash
# The whole test suite: installs Dovecot and the clients if missing, builds the fuzz targets and
# replays their committed corpora (scripts/fuzz.sh), then runs every test (unit tests, and
# integration tests that start private Dovecot servers on loopback ports), and the proxy's
# suites again with client caches kept.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/fuzz.sh 0
cargo test --all-targets "$@"
# The proxy's relay, migration and real-client suites once more with `[migration]
# keep_client_caches = true` in every proxy they start (issue 15: they pass with the feature on).
IMAPFERRY_TEST_KEEP_CLIENT_CACHES=1 cargo test --test proxy_clients --test proxy_relay \
  --test proxy_migration --test proxy_mirror --test proxy_idle "$@"
