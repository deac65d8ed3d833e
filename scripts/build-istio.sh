#!/usr/bin/env bash
# Build Istio's code for the lab with Istio's own release recipe: idlelab-xds (istio/cmd),
# pilot-agent, and the Envoy bootstrap template pilot-agent needs, as
#   DEST/bin/idlelab-xds  DEST/bin/pilot-agent  DEST/share/istio/envoy_bootstrap.json
# Usage: build-istio.sh DEST          the release istio/go.mod pins (what `just setup` builds)
#        build-istio.sh DEST NAME     the release istio/versions/NAME/go.mod pins (--istio NAME)
#                                     (go.mod and go.sum: scripts/pin-istio.sh)
# Up to date (a stamp of the Go toolchain, this script, the glue's .go files and the go.mod
# and go.sum used): it only checks. Otherwise it builds in DEST.partial-PID and moves the files
# in, the stamp last: a failed or interrupted build leaves no stamp, and its partial directory
# is removed on exit (or, after a SIGKILL, by the next run). A cold build takes ~8-10 min.
# Progress and errors go to stderr.
set -euo pipefail

if ! command -v go >/dev/null; then
  echo "build-istio: go not found: Istio's code is built with Go >= 1.26 (just setup installs the rest)" >&2
  exit 3
fi
dest=$(realpath -m -- "${1:?usage: build-istio.sh DEST [NAME]}")
name="${2:-}"
istio_src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/istio"
if [ -n "$name" ]; then
  # $IDLELAB_ISTIO_VERSIONS: another folder of pinned releases (the tests' broken one)
  pins="${IDLELAB_ISTIO_VERSIONS:-$istio_src/versions}/$name"
  if [ ! -f "$pins/go.mod" ] || [ ! -f "$pins/go.sum" ]; then
    echo "build-istio: no Istio release named '$name' is pinned in ${pins%/*}" >&2
    exit 2
  fi
else
  pins="$istio_src"
fi
export GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0

# What a killed build left: partial directories of processes that are gone.
for stale in "$dest".partial-*; do
  if [ -d "$stale" ] && [ ! -d "/proc/${stale##*.partial-}" ]; then rm -rf "$stale"; fi
done

stamp="$dest/bin/.istio-build.sha256"
gover=$(go env GOVERSION)
hash=$({ echo "$gover"; sha256sum < "${BASH_SOURCE[0]}"
         (cd "$istio_src" && find cmd -name '*.go' | LC_ALL=C sort | xargs sha256sum; sha256sum tools.go)
         (cd "$pins" && sha256sum go.mod go.sum); } | sha256sum | cut -d' ' -f1)
if [ -x "$dest/bin/idlelab-xds" ] && [ -x "$dest/bin/pilot-agent" ] && [ -f "$dest/share/istio/envoy_bootstrap.json" ] \
   && [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then
  echo "build-istio: idlelab-xds and pilot-agent${name:+ of Istio $name} up to date in $dest/bin" >&2
  exit 0
fi

partial="$dest.partial-$$"
trap 'rm -rf "$partial"' EXIT
mkdir -p "$partial/src" "$partial/bin" "$partial/share/istio"
# The glue's code with the release's pins beside it (for the pinned release: istio/ itself).
if [ -n "$name" ]; then
  cp -r "$istio_src/cmd" "$istio_src/tools.go" "$pins/go.mod" "$pins/go.sum" "$partial/src/"
  src="$partial/src"
else
  src="$istio_src"
fi
echo "build-istio: building idlelab-xds and pilot-agent${name:+ of Istio $name} (cold: ~8-10 min)" >&2
t0=$(date +%s)
(
  cd "$src"
  go mod download istio.io/istio # .Dir is empty until the module is in the module cache
  istio_dir=$(go list -m -f '{{.Dir}}' istio.io/istio)
  istio_ver=$(go list -m -f '{{.Version}}' istio.io/istio)
  # Istio's own release recipe: static (CGO off); what its Makefile stamps in (pkg/version),
  # so the proxy reports a parseable version; AGENT_TAGS of Makefile.core.mk for pilot-agent
  ldflags="-s -w -X istio.io/istio/pkg/version.buildVersion=$(cat "$istio_dir/VERSION")-dev"
  ldflags="$ldflags -X istio.io/istio/pkg/version.buildGitRevision=${istio_ver##*-}"
  ldflags="$ldflags -X istio.io/istio/pkg/version.buildStatus=Clean"
  nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$partial/bin/idlelab-xds" ./cmd/idlelab-xds
  nice -n 19 go build -trimpath -ldflags "$ldflags" -tags agent,disable_pgv,grpcnotrace,retrynotrace \
    -o "$partial/bin/pilot-agent" istio.io/istio/pilot/cmd/pilot-agent
  install -m 0644 "$istio_dir/tools/packaging/common/envoy_bootstrap.json" "$partial/share/istio/envoy_bootstrap.json"
)
mkdir -p "$dest/bin" "$dest/share/istio"
rm -f "$stamp"
mv -f "$partial/bin/idlelab-xds" "$partial/bin/pilot-agent" "$dest/bin/"
mv -f "$partial/share/istio/envoy_bootstrap.json" "$dest/share/istio/"
# pilot-agent and Envoy run as uid 1337: every directory on the way must let it through.
chmod a+rX "$dest" "$dest/bin" "$dest/share" "$dest/share/istio" "$dest/bin/idlelab-xds" "$dest/bin/pilot-agent" \
  "$dest/share/istio/envoy_bootstrap.json"
if [ -n "$name" ]; then chmod a+rX "${dest%/*}"; fi
echo "$hash" > "$stamp"
echo "build-istio: built idlelab-xds and pilot-agent${name:+ of Istio $name} in $(( $(date +%s) - t0 ))s" >&2
