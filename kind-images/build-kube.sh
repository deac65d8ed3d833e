#!/usr/bin/env bash
# Build Kubernetes' binaries for the kind node image from the k8s.io/kubernetes module (kube/).
# Usage: build-kube.sh OUT_DIR. Writes OUT_DIR/{kubeadm,kubelet,kubectl,kube-apiserver,
# kube-controller-manager,kube-scheduler,kube-proxy} into OUT_DIR.partial, then renames it, so a
# killed build leaves nothing that looks finished.
set -euo pipefail
out="$1"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/kube/go.mod")
minor=$(echo "$version" | cut -d. -f2)
commit=0000000000000000000000000000000000000000
stamp="-X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitCommit=$commit -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/component-base/version.buildDate=2026-01-01T00:00:00Z"
stamp="$stamp ${stamp//component-base\/version/client-go\/pkg\/version}"
rm -rf "$out.partial"
mkdir -p "$out.partial"
cd "$here/kube"
export GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
go build -trimpath -ldflags "-s -w $stamp" -o "$out.partial/" \
  k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy
"$out.partial/kubeadm" version -o short | grep -qx "$version"
rm -rf "$out"
mv "$out.partial" "$out"
