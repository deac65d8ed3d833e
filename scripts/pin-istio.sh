#!/usr/bin/env bash
# Pin another Istio release for `--istio NAME`: resolves istio.io/istio at MODULE_VERSION (a
# pseudo-version: Istio's tags have no `v`) with the lab's glue (istio/cmd) and writes the
# resulting go.mod and go.sum to istio/versions/NAME/. Commit them: the build
# (scripts/build-istio.sh, on first use) then takes exactly those versions (-mod=readonly).
# Usage: pin-istio.sh MODULE_VERSION NAME
#   e.g. pin-istio.sh v0.0.0-20260827124520-eed52ebb66ad 1.31-dev.20260827
set -euo pipefail

version="${1:?usage: pin-istio.sh MODULE_VERSION NAME}"
name="${2:?usage: pin-istio.sh MODULE_VERSION NAME}"
case "$name" in
  *[!A-Za-z0-9.-]*|""|.*) echo "pin-istio: NAME: letters, digits, '.' and '-' only, not starting with '.'" >&2; exit 2 ;;
  1.30) echo "pin-istio: 1.30 is the release istio/go.mod pins (the default); pick another name" >&2; exit 2 ;;
esac
istio_src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/istio"
work=$(mktemp -d /tmp/idlelab-pin-istio.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -r "$istio_src/cmd" "$istio_src/tools.go" "$istio_src/go.mod" "$istio_src/go.sum" "$work/"
cd "$work"
export GOFLAGS="-mod=mod -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
go get "istio.io/istio@$version"
go mod tidy
go vet ./cmd/... # the glue compiles against this release's API
mkdir -p "$istio_src/versions/$name"
cp go.mod go.sum "$istio_src/versions/$name/"
echo "pin-istio: pinned istio.io/istio $version as $name ($(cat "$(go list -m -f '{{.Dir}}' istio.io/istio)/VERSION") in its VERSION file)"
