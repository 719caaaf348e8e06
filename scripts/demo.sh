#!/usr/bin/env bash
# A live demo: installs Dovecot if missing, starts two private Dovecot servers on loopback (OLD with
# sample mail, NEW empty), migrates the account with `imapferry sync`, runs a second pass, and
# prints what happened.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --quiet --bin imapferry
cargo run --release --quiet --example demo
