# The probe image for the kind backend: `idlelab probe`, `idlelab-probe-go` (the Go client
# libraries), the lab's HTTP server, and the tools a middlebox pod needs (nft, sysctl, getent). `just kind-up` builds it and loads it
# into kind with `kind load docker-image` (no registry).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY harness ./harness
RUN cargo build --release --locked --bin idlelab

FROM golang:1.26-bookworm AS build-go
WORKDIR /src
COPY clients/go ./
RUN CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" -o /idlelab-probe-go ./cmd/idlelab-probe-go

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables procps ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/idlelab /usr/local/bin/idlelab
COPY --from=build-go /idlelab-probe-go /usr/local/bin/idlelab-probe-go
ENTRYPOINT []
CMD ["idlelab", "probe", "--spec", "/spec/probe.json"]
