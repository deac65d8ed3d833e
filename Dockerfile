# The lab image for the kind backend on a machine whose Docker engine reaches registries
# (kind-images/build.sh lab builds it with `--provenance=false`, so that `kind load` gets one
# plain image, kind#3795). Offline, build.sh assembles the same image from a debootstrap rootfs.
# It holds Debian's servers (the versions the local lab runs), nftables and iproute2 for the
# middlebox, tini as PID 1, `idlelab` and `idlelab-probe-go`.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY harness ./harness
COPY kind-images/versions.env ./kind-images/versions.env
RUN cargo build --locked --bin idlelab

FROM golang:1.26-bookworm AS build-go
WORKDIR /src
COPY clients/go ./
RUN CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" -o /idlelab-probe-go ./cmd/idlelab-probe-go

FROM debian:bookworm-slim
COPY kind-images/versions.env /tmp/versions.env
RUN . /tmp/versions.env && apt-get update \
 && apt-get install -y --no-install-recommends $LAB_PACKAGES \
 && rm -rf /var/lib/apt/lists/* /tmp/versions.env
COPY --from=build /src/target/debug/idlelab /usr/local/bin/idlelab
COPY --from=build-go /idlelab-probe-go /usr/local/bin/idlelab-probe-go
ENTRYPOINT ["/usr/bin/tini", "--"]
