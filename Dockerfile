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
# No HEALTHCHECK: the runtime image has no HTTP client. Orchestrators should
# probe GET /_gateway/healthz (liveness) and GET /_gateway/readyz
# (readiness: a valid config is loaded and every rack answers).

# --- Build ---------------------------------------------------------------------
FROM rust:1-bookworm AS builder

# libssl-dev/pkg-config: not needed by today's pure-Rust TLS stack, but a
# dependency pulling in OpenSSL (e.g. libgit2) builds without touching this file.
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
FROM debian:bookworm-slim

# ca-certificates: for racks whose certificates chain to a public CA and for
# ca_file bundles; libssl3: so a future OpenSSL-linked build still runs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged uid/gid so mounted config and secrets can be
# chowned/chmodded for it (e.g. Kubernetes fsGroup: 10001).
RUN groupadd --system --gid 10001 rack-gateway \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin rack-gateway \
    && install -d -m 0755 /etc/rack-gateway

COPY --from=builder /src/target/release/rack-gateway /usr/local/bin/rack-gateway

ENV RACK_GATEWAY_LOG_FORMAT=json \
    RACK_GATEWAY_LOG=info

USER 10001
EXPOSE 8443
STOPSIGNAL SIGTERM
ENTRYPOINT ["rack-gateway"]
CMD ["serve", "--config", "/etc/rack-gateway"]
