#!/usr/bin/env bash
# Bring up the kind cluster `idlelab` with Istio, reusing whatever already exists.
#
#   kind-up.sh [--offline]   `just kind-up`
#   kind-up.sh --down        `just kind-down`: the cluster, the lab's engine and its namespace
#
# Engine: a Docker engine that already answers (a laptop's) is used with public images, unless
# --offline. Otherwise the lab starts its own (engine.sh: Debian's docker.io in a network
# namespace of its own, which no registry can reach) and builds every image (build.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
source "$here/versions.env"
IDLELAB_HOME="${IDLELAB_HOME:-/var/cache/idlelab}"
export KIND_HOME="${KIND_HOME:-$IDLELAB_HOME/kind}"
export PATH="$KIND_HOME/bin:$PATH"
CLUSTER=idlelab
say() { echo "kind-up: $*" >&2; }
t0=$SECONDS
step() { say "$* (at $((SECONDS - t0)) s)"; }

offline=""
case "${1:-}" in
  --offline) offline=1 ;;
  --down)
    if bash "$here/engine.sh" status; then
      export DOCKER_HOST="unix://$LAB_ENGINE_SOCKET"
      bash "$here/engine.sh" exec kind delete cluster --name "$CLUSTER" --kubeconfig "$KIND_HOME/kubeconfig" || true
    fi
    bash "$here/engine.sh" stop
    rm -f "$KIND_HOME/kubeconfig"
    exit 0 ;;
  --load)
    # kind-up.sh --load IMAGE…: the images the node lacks, by name. kind's own check asks the
    # node's crictl, which the offline node image has not; every tag here names its content
    # (a hash of the inputs), so the name is enough.
    shift
    [ -S "$LAB_ENGINE_SOCKET" ] && export DOCKER_HOST="unix://$LAB_ENGINE_SOCKET"
    node="$CLUSTER-control-plane"
    have=$(docker exec "$node" ctr --namespace=k8s.io images ls -q 2>/dev/null || true)
    for img in "$@"; do
      ref="$img"
      case "${img%%/*}" in *.*|*:*|localhost) ;; *) ref="docker.io/$img" ;; esac
      if grep -qxF "$ref" <<<"$have"; then continue; fi
      kind load docker-image --name "$CLUSTER" "$img" >/dev/null
    done
    exit 0 ;;
  "") ;;
  *) echo "usage: kind-up.sh [--offline | --down | --load IMAGE…]" >&2; exit 2 ;;
esac

# The lab's own engine when no other answers (or offline); everything below then runs in its
# network namespace (kind publishes the API server on 127.0.0.1 there).
in_ns=()
if [ -n "$offline" ] || [ -S "$LAB_ENGINE_SOCKET" ] || ! docker version >/dev/null 2>&1; then
  offline=1
  missing=()
  for p in docker.io debootstrap jq gcc libc6-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { say "missing Debian packages: ${missing[*]}; run as root"; exit 2; }
    step "installing ${missing[*]} (Debian)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  step "starting the lab's Docker engine (network namespace $LAB_ENGINE_NETNS)"
  bash "$here/engine.sh" start >/dev/null
  export DOCKER_HOST="unix://$LAB_ENGINE_SOCKET"
  export KUBECONFIG="$KIND_HOME/kubeconfig"
  in_ns=(nsenter --net="/run/netns/$LAB_ENGINE_NETNS")
fi

step "tools: kind $KIND_VERSION, kubectl $KUBE_VERSION, istioctl $ISTIO_TAG"
bash "$here/build.sh" tools
# The istioctl that installs must be the Istio the images are: built from source, istioctl's
# built-in profile names Istio's *testing* hub, so the hub and tag are always given explicitly.
got=$(istioctl version --remote=false 2>&1 | sed -n 's/^client version: //p')
[ "$got" = "$ISTIO_TAG" ] || { say "istioctl reports version '$got', expected $ISTIO_TAG: rebuild it (rm -rf $KIND_HOME/istio-*; just kind-up)"; exit 1; }

if [ -n "$offline" ]; then
  step "images (built offline; cached by version and inputs)"
  bash "$here/build.sh" node >/dev/null
  tag=$(bash "$here/build.sh" istio)
  node_image=$(bash "$here/build.sh" node-name)
  hub="$ISTIO_HUB"
  config="$repo/kind-config/cluster-offline.yaml"
else
  node_image="$KIND_NODE_IMAGE"
  hub=docker.io/istio; tag="$ISTIO_RELEASE"
  config="$repo/kind-config/cluster.yaml"
fi
lab_image=$(bash "$here/build.sh" lab)

# kind bind-mounts the host's /lib/modules into its node.
[ -d /lib/modules ] || mkdir -p /lib/modules

ctx=(--context "kind-$CLUSTER")
node="$CLUSTER-control-plane"
# A cluster is reused only when its node runs and its API server answers. When the engine
# restarted (a reboot, a killed session, a CI machine restored from a snapshot), kind's restart
# policy brings the node back by itself or leaves it exited: then it is made anew.
cluster_answers() {
  local state
  for _ in $(seq 60); do
    state=$(docker inspect -f '{{.State.Status}}' "$node" 2>/dev/null || echo missing)
    case "$state" in
      running) "${in_ns[@]}" kubectl "${ctx[@]}" get --raw /readyz >/dev/null 2>&1 && return 0 ;;
      restarting) ;;
      *) say "node $node is $state"; return 1 ;;
    esac
    sleep 2
  done
  say "node $node is $state, and its API server did not answer /readyz within 120 s"
  return 1
}
if "${in_ns[@]}" kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  if cluster_answers; then
    step "cluster $CLUSTER exists; reusing it"
  else
    step "cluster $CLUSTER exists but does not answer; deleting it"
    "${in_ns[@]}" kind delete cluster --name "$CLUSTER"
  fi
fi
if ! "${in_ns[@]}" kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  step "creating cluster $CLUSTER ($node_image)"
  "${in_ns[@]}" kind create cluster --name "$CLUSTER" --config "$config" --image "$node_image" --wait 120s
fi
"${in_ns[@]}" kubectl "${ctx[@]}" wait --for=condition=Ready node --all --timeout=120s >/dev/null

images=("$lab_image")
[ -n "$offline" ] && images+=("$hub/pilot:$tag" "$hub/proxyv2:$tag")
step "loading images into the node"
bash "$here/kind-up.sh" --load "${images[@]}"

# Reused when the same images run with the same profile (its hash, kept on istiod as an
# annotation): a changed profile (the access log's format, say) is installed over it.
profile_hash=$(sha256sum "$repo/istio-profiles/minimal.yaml" | cut -c1-12)
installed=$("${in_ns[@]}" kubectl "${ctx[@]}" -n istio-system get deploy istiod -o jsonpath='{.spec.template.spec.containers[0].image} {.metadata.annotations.idlelab\.dev/profile}' 2>/dev/null || true)
if [ "$installed" = "$hub/pilot:$tag $profile_hash" ]; then
  step "Istio $tag is installed with istio-profiles/minimal.yaml as it is; reusing it"
else
  step "installing Istio $tag ($hub, istio-profiles/minimal.yaml $profile_hash)"
  "${in_ns[@]}" istioctl install "${ctx[@]}" -y -f "$repo/istio-profiles/minimal.yaml" --set "hub=$hub" --set "tag=$tag"
  "${in_ns[@]}" kubectl "${ctx[@]}" -n istio-system annotate --overwrite deploy istiod "idlelab.dev/profile=$profile_hash" >/dev/null
fi
"${in_ns[@]}" kubectl "${ctx[@]}" -n istio-system rollout status deploy/istiod deploy/istio-ingressgateway --timeout=300s >/dev/null
step "ready: cluster $CLUSTER, Istio $tag, lab image $lab_image"
