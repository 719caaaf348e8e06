#!/usr/bin/env bash
# Installs what tests/common/cyrus.rs needs: Debian's Cyrus IMAP 3.6 (master, imapd, ctl_cyrusdb)
# unpacked into /opt/cyrus-imapd, the shared libraries its binaries link, and saslpasswd2
# (sasl2-bin) with the sasldb auxprop plugin (libsasl2-modules-db).
#
# Debian's cyrus-imapd conflicts with dovecot-imapd (both provide imap-server), and cyrus-common
# pulls in an MTA and sets up a system Cyrus (user, /var/lib/cyrus, an init script); so, like
# Courier's imapd in scripts/install-deps.sh, both packages are only unpacked (dpkg-deb -x): no
# system Cyrus is ever installed, started or enabled. Packages are installed only after
# `apt-get -s` shows that nothing would be removed, with a policy-rc.d keeping any service from
# starting (an existing policy-rc.d is left alone). Does nothing when everything is already there.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
CYRUS_ROOT=/opt/cyrus-imapd
BIN="$CYRUS_ROOT/usr/lib/cyrus/bin"
# Cyrus's own libraries (libcyrus*.so) stay in the unpacked tree: the harness sets
# LD_LIBRARY_PATH to this directory.
LIBDIR="$CYRUS_ROOT/usr/lib/$(uname -m)-linux-gnu"
PROTECTED=(dovecot-imapd dovecot-core courier-base)
POLICY=/usr/sbin/policy-rc.d

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
# What the binaries load, with Cyrus's own libraries found in the unpacked tree.
ldd_cyrus() { LD_LIBRARY_PATH="$LIBDIR" ldd "$BIN/master" "$BIN/imapd" "$BIN/ctl_cyrusdb" 2>&1 || true; }
libs_ok() {
  [ -x "$BIN/master" ] && [ -x "$BIN/imapd" ] && [ -x "$BIN/ctl_cyrusdb" ] || return 1
  local out
  out=$(ldd_cyrus)
  [[ "$out" != *"not found"* ]]
}
sasl_ok() {
  command -v saslpasswd2 >/dev/null 2>&1 && compgen -G '/usr/lib/*/sasl2/libsasldb.so*' >/dev/null
}

if libs_ok && sasl_ok; then
  exit 0
fi

tmp=$(mktemp -d)
own_policy=0
cleanup() {
  rm -rf "$tmp"
  if [ "$own_policy" -eq 1 ]; then $SUDO rm -f "$POLICY"; fi
}
trap cleanup EXIT

# The package lists may be missing or stale: update once on failure.
(cd "$tmp" && { apt-get download -qq cyrus-common cyrus-imapd 2>/dev/null ||
  { $SUDO apt-get update -qq && apt-get download -qq cyrus-common cyrus-imapd; }; })

# Libraries both packages depend on (first choice of each alternative, versions dropped), plus
# saslpasswd2 and the sasldb plugin.
need=()
for pkg in $( (for deb in "$tmp"/cyrus-common_*.deb "$tmp"/cyrus-imapd_*.deb; do
  dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/:any//' -e 's/ //g'
done; echo sasl2-bin; echo libsasl2-modules-db) | grep -E '^(lib|sasl2-bin$)' | sort -u); do
  installed "$pkg" || need+=("$pkg")
done

if [ ${#need[@]} -gt 0 ]; then
  sim=$(apt-get -s install -y --no-install-recommends "${need[@]}" 2>&1) || {
    $SUDO apt-get update -qq
    sim=$(apt-get -s install -y --no-install-recommends "${need[@]}" 2>&1)
  }
  if grep -q '^Remv ' <<<"$sim"; then
    echo "install-cyrus.sh: installing ${need[*]} would remove packages; nothing done:" >&2
    grep '^Remv ' <<<"$sim" >&2
    for p in "${PROTECTED[@]}"; do
      grep -q "^Remv $p " <<<"$sim" && echo "  (including protected $p)" >&2
    done
    exit 1
  fi
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# Temporary, from scripts/install-cyrus.sh: no service starts.\nexit 101\n' |
      $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Unpack into a staging directory first, so an interrupted run never leaves a half tree behind.
$SUDO rm -rf "$CYRUS_ROOT.new"
$SUDO mkdir -p "$CYRUS_ROOT.new"
for deb in "$tmp"/cyrus-common_*.deb "$tmp"/cyrus-imapd_*.deb; do
  $SUDO dpkg-deb -x "$deb" "$CYRUS_ROOT.new"
done
$SUDO rm -rf "$CYRUS_ROOT"
$SUDO mv "$CYRUS_ROOT.new" "$CYRUS_ROOT"

if ! libs_ok; then
  echo "install-cyrus.sh: $BIN is incomplete or misses libraries:" >&2
  ldd_cyrus | grep "not found" >&2 || true
  exit 1
fi
sasl_ok || { echo "install-cyrus.sh: saslpasswd2 or the sasldb plugin is missing" >&2; exit 1; }

# Never leave a system Cyrus or saslauthd running or enabled (e.g. from an earlier install of
# Debian's packages, or where no policy-rc.d held them back).
for svc in cyrus-imapd saslauthd; do
  if [ -d /run/systemd/system ]; then
    if systemctl is-enabled --quiet "$svc" 2>/dev/null || systemctl is-active --quiet "$svc" 2>/dev/null; then
      $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  elif [ -x "/etc/init.d/$svc" ]; then
    $SUDO "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    $SUDO update-rc.d "$svc" disable >/dev/null 2>&1 || true
  fi
done
echo "Cyrus IMAP $(dpkg-deb -f "$tmp"/cyrus-imapd_*.deb Version) unpacked in $CYRUS_ROOT"
