#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmark need on Debian: Dovecot (imapd + core with
# doveadm), openssl, and the mail clients tests/proxy_clients.rs drives through the proxy (mbsync
# from isync, curl). Does nothing when everything is already there.
set -euo pipefail
need=()
command -v dovecot >/dev/null 2>&1 || need+=(dovecot-imapd dovecot-core)
command -v doveadm >/dev/null 2>&1 || need+=(dovecot-core)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v mbsync >/dev/null 2>&1 || need+=(isync)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  # Debian starts a system Dovecot on 143/993 where it can; the tests never use it.
fi
