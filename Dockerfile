# syntax=docker/dockerfile:1
#
# rack-gateway container image.
#
#   docker build -t rack-gateway .
#   docker run --rm -p 8443:8443 \
#     -v "$PWD/config:/etc/rack-gateway:ro" \
#     -v "$PWD/secrets:/run/secrets:ro" \
#     --stop-timeout 45 rack-gateway
#
# Mount the config repository (gateway.yaml, roles/, users.yaml, ci.yaml,
# tests/) at /etc/rack-gateway. Inside a container the gateway must
# listen on 0.0.0.0:8443 (the default 127.0.0.1:8443 is unreachable from
# outside), which requires `tls: {cert_file, key_file}` or, behind a
# TLS-terminating load balancer, `allow_plaintext: true`. Rack passwords come
# from `password_file: /run/secrets/<name>` (Docker/Kubernetes secrets) or
# `password_env`; keep them out of the image and out of gateway.yaml.
#
# SIGTERM starts a graceful shutdown that waits up to timeouts.shutdown_grace
# (30s by default) for in-flight requests, then closes websocket sessions
# with close frames; Docker's default stop timeout is 10s, hence
# --stop-timeout 45 (Compose: stop_grace_period: 45s; Kubernetes:
# terminationGracePeriodSeconds: 45). Changes to the mounted config are
# picked up by themselves (watched, and re-read every 15s); SIGHUP forces it.
# Git mode: CMD ["serve", "--git", "/etc/rack-gateway/git.yaml"] with a
# writable volume for repository.cache_dir. Audit file: set
# RACK_GATEWAY_AUDIT_FILE to a path on a persistent volume.
#
# No HEALTHCHECK: the runtime image has no HTTP client and the binary no
# probe command. Orchestrators should probe GET /_gateway/healthz (liveness)
# and GET /_gateway/readyz (readiness: a valid config is loaded and every
# rack answers).
#
# What the binary links: glibc, zlib, and OpenSSL (libssl3/libcrypto3), which
# git2 uses for git mode's fetches over HTTPS and SSH. The gateway's own TLS
# (its listener and its connections to racks) is rustls with ring, with
# Mozilla's roots built in (webpki-roots) unless a rack sets ca_file.
#
# Network at build time: the builder fetches Debian packages (apt) and every
# crate in Cargo.lock from crates.io (`cargo build --locked`); the runtime
# stage fetches Debian packages (apt). Nothing is downloaded at run time.
# Base images are pinned by version; to pin them by content as well, append
# the digest `docker buildx imagetools inspect <image>` prints (@sha256:...).

# --- Build ---------------------------------------------------------------------
# The toolchain the project builds with (Cargo.toml rust-version is the floor).
FROM rust:1.95.0-bookworm AS builder

# libssl-dev/pkg-config: git2's HTTPS and SSH transports (libgit2, libssh2)
# link the system OpenSSL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# Dependencies first: compile them against stub sources, so this layer is
# reused until Cargo.toml or Cargo.lock change. Cargo refuses a manifest whose
# [[test]]/[[bench]]/[[example]] files are missing, so the awk below writes a
# stub for each (`cargo build` never compiles them). The crate's own outputs
# are then deleted so the real sources are always recompiled: COPY keeps
# file mtimes, which may be older than the stub build. A build.rs would have
# to be copied in before this step.
COPY Cargo.toml Cargo.lock ./
RUN set -eu; \
    mkdir -p src; \
    echo 'fn main() {}' > src/main.rs; \
    : > src/lib.rs; \
    awk 'function flush() { if (kind != "") print (path != "" ? path : dir[kind] "/" name ".rs"); kind = "" } \
        BEGIN { dir["bench"] = "benches"; dir["test"] = "tests"; dir["example"] = "examples" } \
        /^\[/ { flush(); if ($0 ~ /^\[\[(bench|test|example)\]\]/) { kind = $0; sub(/\]\].*/, "", kind); sub(/^\[\[/, "", kind); name = ""; path = "" } next } \
        kind != "" && /^[ \t]*name[ \t]*=/ { name = $0; sub(/^[^"]*"/, "", name); sub(/".*/, "", name) } \
        kind != "" && /^[ \t]*path[ \t]*=/ { path = $0; sub(/^[^"]*"/, "", path); sub(/".*/, "", path) } \
        END { flush() }' Cargo.toml \
    | while read -r stub; do mkdir -p "$(dirname "$stub")"; echo 'fn main() {}' > "$stub"; done; \
    cargo build --release --locked; \
    rm -rf src \
        target/release/rack-gateway \
        target/release/rack-gateway.d \
        target/release/.fingerprint/rack-gateway-* \
        target/release/deps/rack_gateway-* \
        target/release/deps/librack_gateway-*

# Then the sources, plus what they include_str! (roles/, *.yaml.example,
# tests/example-policy.yaml): copying the whole context keeps that list out of
# this file. .dockerignore keeps target/, .git/ and local secrets out.
COPY . .
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && ./target/release/rack-gateway --version

# --- Runtime -------------------------------------------------------------------
# The same Debian release as the builder (glibc and libssl3 must match).
FROM debian:12.11-slim

# libssl3: the binary links it (git2: git over HTTPS and SSH).
# ca-certificates: OpenSSL's trust store for git over HTTPS (the proxy's own
# TLS uses the roots built into the binary, or a rack's ca_file).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged uid/gid so mounted config and secrets can be
# chowned/chmodded for it (e.g. Kubernetes fsGroup: 10001).
RUN groupadd --system --gid 10001 rack-gateway \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin rack-gateway \
    && install -d -m 0755 /etc/rack-gateway

# The release profile strips symbols and debug info (Cargo.toml).
COPY --from=builder /src/target/release/rack-gateway /usr/local/bin/rack-gateway

ENV RACK_GATEWAY_LOG_FORMAT=json \
    RACK_GATEWAY_LOG=info

USER 10001
EXPOSE 8443
STOPSIGNAL SIGTERM
ENTRYPOINT ["rack-gateway"]
CMD ["serve", "--config", "/etc/rack-gateway"]
