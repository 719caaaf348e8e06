#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmark need on Debian: Dovecot (imapd + core with
# doveadm), Courier-IMAP and Cyrus IMAP (more OLD server types, tests/common/{courier,cyrus}.rs,
# the latter through scripts/install-cyrus.sh), openssl, the mail
# clients tests/proxy_clients.rs drives through the proxy (mbsync from isync, curl; those tests
# fail without them), offlineimap (Debian's offlineimap3: tests/client_caches.rs runs it and
# mbsync against OLD, then through the migration proxy, and fails without them), python3
# (imaplib clients in the proxy tests), and what scripts/package.sh
# checks the Debian package with (systemd-analyze from systemd, man from man-db), and PostgreSQL
# (the fleet's state store; tests/common/postgres.rs runs its own clusters with initdb). Does
# nothing when everything is already there.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# Debian's courier-imap conflicts with dovecot-imapd (both provide imap-server): installing it would
# remove Dovecot's imap. So courier-base is installed (couriertcpd, authdaemond, makeuserdb) and the
# courier-imap package (imapd, imaplogin) is only unpacked here, where tests/common/courier.rs looks.
COURIER_IMAP=/opt/courier-imap
need=()
command -v dovecot >/dev/null 2>&1 || need+=(dovecot-imapd dovecot-core)
command -v doveadm >/dev/null 2>&1 || need+=(dovecot-core)
[ -x /usr/sbin/couriertcpd ] || need+=(courier-base)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v mbsync >/dev/null 2>&1 || need+=(isync)
command -v offlineimap >/dev/null 2>&1 || need+=(offlineimap3)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v man >/dev/null 2>&1 || need+=(man-db)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  # Debian starts a system Dovecot on 143/993 where it can; the tests never use it.
  # courier-base starts a system authdaemond where it can; the tests run their own: stop it.
  if [[ " ${need[*]} " == *" courier-base "* ]]; then
    if [ -d /run/systemd/system ]; then
      $SUDO systemctl disable --now courier-authdaemon >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/courier-authdaemon ]; then
      $SUDO /etc/init.d/courier-authdaemon stop >/dev/null 2>&1 || true
      $SUDO update-rc.d courier-authdaemon disable >/dev/null 2>&1 || true
    fi
  fi
fi
if [ ! -x "$COURIER_IMAP/usr/lib/courier/courier/imaplogin" ]; then
  tmp=$(mktemp -d)
  # The package lists may be missing or stale (no apt-get update above): update once on failure.
  (cd "$tmp" && { apt-get download -qq courier-imap 2>/dev/null ||
    { $SUDO apt-get update -qq && apt-get download -qq courier-imap; }; })
  $SUDO mkdir -p "$COURIER_IMAP"
  $SUDO dpkg-deb -x "$tmp"/courier-imap_*.deb "$COURIER_IMAP"
  rm -rf "$tmp"
fi
# Cyrus IMAP, a third OLD server type (tests/common/cyrus.rs), unpacked the same way.
"$(dirname "$0")/install-cyrus.sh"
