#!/usr/bin/env bash
# The lab's own Docker engine, in a network namespace of its own: every bridge, NAT and
# iptables rule dockerd and kind create live in that namespace; the host's stay untouched.
#
#   engine.sh start   start dockerd in netns idlelab-kind (idempotent); prints DOCKER_HOST
#   engine.sh stop    stop it, remove its netns and run dirs (images stay in its data root)
#   engine.sh status  exit 0 when it answers
#
# Anything that connects to a port a container publishes (kubectl to kind's API server) must
# run in the namespace: `nsenter --net=/run/netns/idlelab-kind CMD` (the `exec` verb does it).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/versions.env"
NETNS="$LAB_ENGINE_NETNS"
RUN="$(dirname "$LAB_ENGINE_SOCKET")"
DATA="${IDLELAB_DOCKER_ROOT:-/var/lib/idlelab/docker}"
SOCK="$LAB_ENGINE_SOCKET"
export DOCKER_HOST="unix://$SOCK"

answers() { [ -S "$SOCK" ] && timeout 10 docker version >/dev/null 2>&1; }

start() {
  if answers; then echo "DOCKER_HOST=$DOCKER_HOST"; return 0; fi
  [ "$(id -u)" = 0 ] || { echo "engine: the lab's Docker engine runs as root (a network namespace of its own)" >&2; exit 2; }
  for p in dockerd containerd runc nsenter jq; do
    command -v "$p" >/dev/null || { echo "engine: $p is missing; run: just setup-kind (Debian: docker.io containerd runc util-linux jq)" >&2; exit 2; }
  done
  stop quiet
  mkdir -p "$RUN" "$DATA"
  ip netns add "$NETNS"
  # kind asks the kernel for a free port on 127.0.0.1 for the API server.
  ip -n "$NETNS" link set lo up
  local runtime=()
  # CAP_SYS_RESOURCE is bit 24 of the bounding set.
  if (( (16#$(awk '/^CapBnd/ {print $2}' /proc/self/status) >> 24 & 1) == 0 )); then
    runtime=(--add-runtime "idlelab-runc=$here/runc-without-sys-resource" --default-runtime idlelab-runc)
  fi
  # setsid: the engine outlives this script, in a session of its own (engine.sh stop ends it).
  setsid nsenter --net=/run/netns/$NETNS dockerd --data-root "$DATA" --exec-root "$RUN/exec" \
    -H "unix://$SOCK" --pidfile "$RUN/dockerd.pid" --containerd-namespace idlelab --containerd-plugins-namespace idlelab-plugins \
    "${runtime[@]}" </dev/null >"$RUN/dockerd.log" 2>&1 &
  for _ in $(seq 60); do
    if answers; then echo "DOCKER_HOST=$DOCKER_HOST"; return 0; fi
    sleep 0.5
  done
  echo "engine: dockerd did not answer within 30 s; its log ($RUN/dockerd.log) ends:" >&2
  tail -5 "$RUN/dockerd.log" >&2 || true
  stop quiet
  exit 1
}

stop() {
  if [ -f "$RUN/dockerd.pid" ]; then
    local pid; pid=$(cat "$RUN/dockerd.pid")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  # A containerd dockerd started and anything left in the namespace (a killed engine).
  if [ -e "/run/netns/$NETNS" ]; then
    for pid in $(ip netns pids "$NETNS" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$NETNS" 2>/dev/null || true
  fi
  # Mounts under the exec root (container rootfs, netns files) go before the directory.
  if [ -d "$RUN" ]; then
    { grep -o " $RUN[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$RUN"
  fi
  [ "${1:-}" = quiet ] || echo "engine: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) answers ;;
  exec) shift; exec nsenter --net=/run/netns/$NETNS "$@" ;;
  *) echo "usage: engine.sh start|stop|status|exec CMD…" >&2; exit 2 ;;
esac
