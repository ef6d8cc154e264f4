#!/usr/bin/env bash
# bench/load.sh: CPU per request, throughput and latency of rack-gateway
# against nginx and the mock rack itself, plain and over TLS, plus the
# gateway's memory while it streams a 200 MB upload.
#
# This is a benchmark, not a test: it never fails on slow numbers. It drives
# `GET /apps` with wrk against
#   direct       the mock rack itself (`rack-gateway mock-rack`),
#   nginx        Debian's nginx, 1 worker, keep-alive reverse proxy in front
#                of the same mock rack, no access log (bench/nginx.conf.template),
#   gateway      rack-gateway in front of the same mock rack: static CI
#                token (Basic auth), policy decision, rate-limit check and
#                one JSON audit record per request (written to a file),
#   nginx-tls    the nginx above terminating TLS (same certificate),
#   gateway-tls  a second rack-gateway terminating TLS with rustls,
# in interleaved rounds (nginx, gateway, nginx-tls, gateway-tls, then the
# 1-connection latency runs direct, nginx, gateway; ROUNDS times) and reports
# the median of each figure over the rounds.
#
# CPU per request: the on-CPU time of every thread of the process (for
# nginx, master and workers), the first field of
# /proc/<pid>/task/*/schedstat, before and after the measured run, divided
# by the requests wrk completed in it. Unlike requests/s this does not
# depend on how the shared CPUs were split between wrk, the proxy and the
# mock rack, so it is comparable between runs and between the two proxies.
#
# Usage (from any directory; the script changes to the repository root):
#   bench/load.sh                              # builds with `cargo build --release`
#   DURATION=5 ROUNDS=3 bench/load.sh > bench/results.md
#
# Environment:
#   DURATION=5        seconds measured per target and round
#   WARMUP=2          seconds of discarded load per target before the rounds
#   ROUNDS=3          interleaved rounds; figures are the medians
#   CONNECTIONS=16    wrk connections for the throughput/CPU runs (1 thread)
#   UPLOAD_MB=200     size of the upload used for the RSS measurement (0 skips it)
#   RACK_GATEWAY_BIN  use this binary instead of building a stripped
#                     target/release/rack-gateway
#   RACK_GATEWAY_LOG  the gateway's log filter (default info: one JSON audit
#                     record per request, written to a file in the temp dir)
#
# Output: the report (Markdown, ready to paste into a README section) goes to
# stdout; progress and build output go to stderr.
#
# Needs: cargo, wrk, nginx, openssl, curl, python3 (or bash) and /proc.
# Missing wrk, nginx or openssl are installed with apt-get when running as
# root (the nginx package's own service is kept from starting). Everything
# listens on 127.0.0.1 only, in a mktemp directory, and every process
# started here is stopped on exit.
set -euo pipefail

DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-16}
UPLOAD_MB=${UPLOAD_MB:-200}

INVOCATION="DURATION=$DURATION WARMUP=$WARMUP ROUNDS=$ROUNDS CONNECTIONS=$CONNECTIONS UPLOAD_MB=$UPLOAD_MB"
for v in RACK_GATEWAY_BIN RACK_GATEWAY_LOG; do
    if [[ -n ${!v:-} ]]; then
        INVOCATION+=" $v=$(printf '%q' "${!v}")"
    fi
done
INVOCATION+=" $(printf '%q' "$0")"

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'bench/load.sh: %s\n' "$*" >&2
    exit 1
}

if (($# > 0)); then
    die "no arguments expected; set DURATION, WARMUP, ROUNDS, CONNECTIONS, UPLOAD_MB in the environment"
fi
log "$INVOCATION"
for v in DURATION WARMUP ROUNDS CONNECTIONS UPLOAD_MB; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
((DURATION > 0 && ROUNDS > 0 && CONNECTIONS > 0)) || die "DURATION, ROUNDS and CONNECTIONS must be > 0"

# ---------------------------------------------------------------------------
# Cleanup: everything started here is recorded in PIDS and stopped on exit.

PIDS=()
TMP=""
POLICY_RC_D_CREATED=""

stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# forget_pid PID: the process has been waited for; cleanup need not stop it.
forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do
        [[ $p == "$1" ]] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local i
    # Reverse start order: load generators first, then proxies, then the rack.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}"
    done
    if [[ -n $POLICY_RC_D_CREATED ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    if [[ -n $TMP && -d $TMP ]]; then
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Tools

APT_UPDATED=""
ensure_tool() {
    local cmd=$1 pkg=$2
    if command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]]; then
        return 0
    fi
    if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        die "$cmd not found: install the Debian package '$pkg' (apt-get install $pkg)"
    fi
    log "installing $pkg with apt-get"
    if [[ -z $APT_UPDATED ]]; then
        apt-get update -qq >&2
        APT_UPDATED=1
    fi
    # The nginx package starts a system nginx on 0.0.0.0:80; policy-rc.d
    # exiting 101 tells invoke-rc.d/deb-systemd-invoke not to start services.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        POLICY_RC_D_CREATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >&2
    if [[ -n $POLICY_RC_D_CREATED ]]; then
        rm -f /usr/sbin/policy-rc.d
        POLICY_RC_D_CREATED=""
    fi
}

ensure_tool wrk wrk
ensure_tool nginx nginx
ensure_tool openssl openssl
command -v curl >/dev/null 2>&1 || die "curl not found (apt-get install curl)"
NGINX=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)

cd "$REPO_ROOT"
if [[ -n ${RACK_GATEWAY_BIN:-} ]]; then
    BIN=$RACK_GATEWAY_BIN
else
    log "cargo build --release"
    cargo build --release >&2
    BIN=$REPO_ROOT/target/release/rack-gateway
fi
[[ -x $BIN ]] || die "no executable at $BIN"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/rack-gateway-bench.XXXXXX")
# nginx workers drop to `nobody` when started as root; they must be able to
# reach their files under $TMP (traverse only, no listing).
chmod 0711 "$TMP"

# Measure the binary as shipped: stripped (binutils `strip`; the release
# profile keeps line tables for profiling). Code is the same, so this only
# changes the file size reported below.
BIN_SIZE_NOTE="$(du -m "$BIN" | cut -f1) MB"
if command -v strip >/dev/null 2>&1 && strip -o "$TMP/rack-gateway" "$BIN" 2>/dev/null; then
    BIN_SIZE_NOTE="$(du -m "$TMP/rack-gateway" | cut -f1) MB stripped ($BIN_SIZE_NOTE unstripped)"
    BIN=$TMP/rack-gateway
fi

# ---------------------------------------------------------------------------
# Ports: five free ports on 127.0.0.1, below the kernel's ephemeral range so
# wrk's own outgoing connections cannot take them between check and bind.

free_ports() {
    local n=$1
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$n" <<'PY'
import random, socket, sys
n = int(sys.argv[1])
held, tried = [], 0
while len(held) < n and tried < 2000:
    tried += 1
    port = random.randint(20000, 29999)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    held.append(s)
if len(held) < n:
    sys.exit("no free ports on 127.0.0.1 in 20000-29999")
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
    else
        local ports=() port
        while ((${#ports[@]} < n)); do
            port=$((20000 + RANDOM % 10000))
            [[ " ${ports[*]} " == *" $port "* ]] && continue
            # A refused connect means nothing listens there.
            if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                ports+=("$port")
            fi
        done
        echo "${ports[*]}"
    fi
}

read -r RACK_PORT NGINX_PORT NGINX_TLS_PORT GATEWAY_PORT GATEWAY_TLS_PORT <<<"$(free_ports 5)"

# ---------------------------------------------------------------------------
# Credentials (random per run) and Authorization headers.

rand_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
basic() { printf 'Authorization: Basic %s' "$(printf '%s' "$1" | base64 -w0)"; }

RACK_PASSWORD=$(rand_hex 24)
TOKEN="rgw_bench_$(rand_hex 24)"
TOKEN_SHA256=$(printf '%s' "$TOKEN" | sha256sum | cut -d' ' -f1)
RACK_AUTH=$(basic "convox:$RACK_PASSWORD")
GATEWAY_AUTH=$(basic "convox:$TOKEN")

# ---------------------------------------------------------------------------
# Processes

wait_http() {
    local name=$1 pid=$2 url=$3 logfile=$4 i
    for ((i = 0; i < 150; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$logfile" >&2 || true
            die "$name exited during startup (log above)"
        fi
        # Any HTTP answer (even 401) means the listener is up.
        if curl -s -o /dev/null --max-time 1 --cacert "$TMP/nginx/tls/cert.pem" "$url"; then
            return 0
        fi
        sleep 0.1
    done
    cat "$logfile" >&2 || true
    die "$name did not answer on $url within 15 s"
}

expect_200() {
    local name=$1 url=$2 auth=$3 code
    code=$(curl -s -o "$TMP/probe.body" -w '%{http_code}' --max-time 5 --cacert "$TMP/nginx/tls/cert.pem" -H "$auth" "$url" || true)
    if [[ $code != 200 ]]; then
        cat "$TMP/probe.body" >&2 2>/dev/null || true
        die "$name: GET $url answered HTTP $code, expected 200"
    fi
}

log "mock rack on 127.0.0.1:$RACK_PORT"
BENCH_RACK_PASSWORD=$RACK_PASSWORD "$BIN" mock-rack --listen "127.0.0.1:$RACK_PORT" \
    --password-env BENCH_RACK_PASSWORD >"$TMP/mock-rack.log" 2>&1 &
RACK_PID=$!
PIDS+=("$RACK_PID")

# One self-signed certificate for 127.0.0.1, served by both TLS listeners.
mkdir -p "$TMP/nginx/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$TMP/nginx/tls/key.pem" -out "$TMP/nginx/tls/cert.pem" 2>/dev/null ||
    die "openssl could not make a test certificate"
sed -e "s|@DIR@|$TMP/nginx|g" -e "s|@UPSTREAM_PORT@|$RACK_PORT|g" -e "s|@LISTEN_PORT@|$NGINX_PORT|g" \
    -e "s|@TLS_PORT@|$NGINX_TLS_PORT|g" "$SCRIPT_DIR/nginx.conf.template" >"$TMP/nginx/nginx.conf"
log "nginx on 127.0.0.1:$NGINX_PORT"
"$NGINX" -t -q -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" >&2 ||
    die "nginx rejected $TMP/nginx/nginx.conf"
"$NGINX" -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" >"$TMP/nginx/stdout.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

# The config directory: gateway.yaml (listener, rack), a role allowing just
# what is measured, and a CI identity holding the token's SHA-256.
mkdir -p "$TMP/gateway/roles"
cat >"$TMP/gateway/gateway.yaml" <<EOF
listen: 127.0.0.1:$GATEWAY_PORT
# Only the bench rack, whatever RACK_URL_* the caller has exported.
discover_racks_from_env: false
racks:
  bench:
    url: http://127.0.0.1:$RACK_PORT
    password_env: BENCH_RACK_PASSWORD
# One token drives all the load: lift its limit so the proxy is measured,
# not the limiter's refusals (the limiter's check still runs per request).
rate_limits:
  ci: {rate: 1000000/s, burst: 1000000}
EOF
cat >"$TMP/gateway/roles/bench.yaml" <<EOF
description: bench/load.sh - list apps and upload build sources.
allow:
  - apps
  - objects store
EOF
cat >"$TMP/gateway/ci.yaml" <<EOF
ci:
  bench:
    description: bench/load.sh
    token_sha256: $TOKEN_SHA256
    expires: $(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)
    grants:
      - {role: bench, scope: "bench/*"}
EOF
# The TLS gateway: the same configuration with a `tls:` block and its own port.
cp -r "$TMP/gateway" "$TMP/gateway-tls"
mkdir -p "$TMP/gateway-tls/tls"
cp "$TMP/nginx/tls/cert.pem" "$TMP/nginx/tls/key.pem" "$TMP/gateway-tls/tls/"
sed -i "s|^listen: .*|listen: 127.0.0.1:$GATEWAY_TLS_PORT|" "$TMP/gateway-tls/gateway.yaml"
printf 'tls:\n  cert_file: tls/cert.pem\n  key_file: tls/key.pem\n' >>"$TMP/gateway-tls/gateway.yaml"
for dir in gateway gateway-tls; do
    BENCH_RACK_PASSWORD=$RACK_PASSWORD "$BIN" check "$TMP/$dir" >&2 || die "rack-gateway check rejected $TMP/$dir"
done
start_gateway() {
    local dir=$1
    BENCH_RACK_PASSWORD=$RACK_PASSWORD RACK_GATEWAY_LOG_FORMAT=json "$BIN" serve --config "$TMP/$dir" \
        >"$TMP/$dir.log" 2>&1 &
    PIDS+=("$!")
    LAST_PID=$!
}
log "rack-gateway on 127.0.0.1:$GATEWAY_PORT, with TLS on 127.0.0.1:$GATEWAY_TLS_PORT"
start_gateway gateway
GATEWAY_PID=$LAST_PID
start_gateway gateway-tls
GATEWAY_TLS_PID=$LAST_PID

declare -A URL AUTH PID
URL[direct]="http://127.0.0.1:$RACK_PORT/apps"
URL[nginx]="http://127.0.0.1:$NGINX_PORT/apps"
URL[gateway]="http://127.0.0.1:$GATEWAY_PORT/apps"
URL[nginx-tls]="https://127.0.0.1:$NGINX_TLS_PORT/apps"
URL[gateway-tls]="https://127.0.0.1:$GATEWAY_TLS_PORT/apps"
AUTH[direct]=$RACK_AUTH
AUTH[nginx]=$RACK_AUTH
AUTH[nginx-tls]=$RACK_AUTH
AUTH[gateway]=$GATEWAY_AUTH
AUTH[gateway-tls]=$GATEWAY_AUTH
PID[direct]=$RACK_PID
PID[nginx]=$NGINX_PID
PID[nginx-tls]=$NGINX_PID
PID[gateway]=$GATEWAY_PID
PID[gateway-tls]=$GATEWAY_TLS_PID

wait_http "mock rack" "$RACK_PID" "${URL[direct]}" "$TMP/mock-rack.log"
wait_http nginx "$NGINX_PID" "${URL[nginx]}" "$TMP/nginx/error.log"
wait_http rack-gateway "$GATEWAY_PID" "${URL[gateway]}" "$TMP/gateway.log"
wait_http "rack-gateway (TLS)" "$GATEWAY_TLS_PID" "${URL[gateway-tls]}" "$TMP/gateway-tls.log"
for key in direct nginx gateway nginx-tls gateway-tls; do
    expect_200 "$key" "${URL[$key]}" "${AUTH[$key]}"
done

# ---------------------------------------------------------------------------
# Load

# cpu_ns PID: on-CPU nanoseconds of every thread of PID and of its direct
# children (nginx's workers), from /proc/<pid>/task/*/schedstat.
cpu_ns() {
    local pids=("$1") c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        pids+=("$c")
    done
    local files=() p
    for p in "${pids[@]}"; do
        files+=(/proc/"$p"/task/*/schedstat)
    done
    cat "${files[@]}" 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }'
}

# run_wrk SECONDS CONNECTIONS KEY OUTFILE; wrk runs in the background so a
# signal reaches the trap at once instead of after the run. The proxy's CPU
# time over the run goes to OUTFILE.cpu.
run_wrk() {
    local secs=$1 conns=$2 key=$3 out=$4 pid rc=0 before after
    before=$(cpu_ns "${PID[$key]}")
    wrk --latency -t1 -c"$conns" -d"${secs}s" -H "${AUTH[$key]}" "${URL[$key]}" >"$out" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait "$pid" || rc=$?
    forget_pid "$pid"
    after=$(cpu_ns "${PID[$key]}")
    echo $((after - before)) >"$out.cpu"
    if ((rc != 0)); then
        cat "$out" >&2
        die "wrk against ${URL[$key]} failed (exit $rc)"
    fi
}

# to_us 475.00us -> 475.0 (wrk prints us, ms, s, m or h).
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v; sub(/[a-z]+$/, "", n)
        u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") f = 1; else if (u == "ms") f = 1000; else if (u == "s") f = 1000000
        else if (u == "m") f = 60000000; else if (u == "h") f = 3600000000; else exit 1
        printf "%.1f", n * f
    }'
}

# Per key and connection count, one value per round, space separated.
declare -A RPS P50 P99 CPU NOTES
measure() {
    local key=$1 conns=$2 round=$3 out="$TMP/wrk-$1-c$2-r$3.txt" rps p50 p99 reqs non2xx sockerr id="$1/c$2"
    log "round $round: $key, $conns connection(s), ${DURATION}s"
    run_wrk "$DURATION" "$conns" "$key" "$out"
    rps=$(awk '$1 == "Requests/sec:" { print $2 }' "$out")
    p50=$(awk '$1 == "50%" { print $2 }' "$out")
    p99=$(awk '$1 == "99%" { print $2 }' "$out")
    reqs=$(awk '/requests in/ { print $1 }' "$out")
    if [[ -z $rps || -z $p50 || -z $p99 || -z $reqs ]]; then
        cat "$out" >&2
        die "could not parse wrk output for $key"
    fi
    RPS[$id]+="$(awk -v r="$rps" 'BEGIN { printf "%.0f", r }') "
    P50[$id]+="$(to_us "$p50") "
    P99[$id]+="$(to_us "$p99") "
    CPU[$id]+="$(awk -v c="$(cat "$out.cpu")" -v n="$reqs" 'BEGIN { printf "%.2f", (n > 0 ? c / n / 1000 : 0) }') "
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")
    sockerr=$(awk '/Socket errors:/ { sub(/^ *Socket errors: */, ""); print }' "$out")
    [[ -n $non2xx ]] && NOTES[$key]+="$non2xx non-2xx responses (round $round); "
    [[ -n $sockerr ]] && NOTES[$key]+="socket errors: $sockerr (round $round); "
    return 0
}

LOADED=(nginx gateway nginx-tls gateway-tls)
LATENCY=(direct nginx gateway)
if ((WARMUP > 0)); then
    for key in direct "${LOADED[@]}"; do
        log "warm-up: $key ${WARMUP}s"
        run_wrk "$WARMUP" "$CONNECTIONS" "$key" "$TMP/wrk-$key-warmup.txt"
    done
fi
for ((round = 1; round <= ROUNDS; round++)); do
    for key in "${LOADED[@]}"; do
        measure "$key" "$CONNECTIONS" "$round"
    done
    for key in "${LATENCY[@]}"; do
        measure "$key" 1 "$round"
    done
done

# ---------------------------------------------------------------------------
# Gateway memory while streaming an upload

# status_kib PID FIELD: VmRSS (resident now) or VmHWM (resident peak so far).
status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
rss_kib() { status_kib "$1" VmRSS; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

UPLOAD_RESULT=""
if ((UPLOAD_MB > 0)); then
    log "generating ${UPLOAD_MB} MB of random data"
    head -c "${UPLOAD_MB}M" /dev/urandom >"$TMP/upload.bin"
    UPLOAD_URL="http://127.0.0.1:$GATEWAY_PORT/apps/myapp/objects/tmp/bench.tgz"
    RSS_BEFORE=$(rss_kib "$GATEWAY_PID")
    HWM_BEFORE=$(status_kib "$GATEWAY_PID" VmHWM)
    : >"$TMP/rss.samples"
    touch "$TMP/sampling"
    (
        while [[ -e $TMP/sampling ]]; do
            rss_kib "$GATEWAY_PID" >>"$TMP/rss.samples"
            sleep 0.1
        done
    ) &
    SAMPLER_PID=$!
    PIDS+=("$SAMPLER_PID")
    log "POST ${UPLOAD_MB} MB through the gateway, sampling VmRSS every 100 ms"
    # -T streams the file with Content-Length (like the CLI); `Expect:` turns
    # off curl's 100-continue round trip.
    curl -sS -X POST -T "$TMP/upload.bin" -H "$GATEWAY_AUTH" \
        -H 'Content-Type: application/octet-stream' -H 'Expect:' \
        -o "$TMP/upload.body" -w '%{http_code} %{time_total}\n' "$UPLOAD_URL" >"$TMP/upload.status" 2>&1 &
    CURL_PID=$!
    PIDS+=("$CURL_PID")
    curl_rc=0
    wait "$CURL_PID" || curl_rc=$?
    forget_pid "$CURL_PID"
    rm -f "$TMP/sampling"
    wait "$SAMPLER_PID" || true
    forget_pid "$SAMPLER_PID"
    sleep 0.5
    RSS_AFTER=$(rss_kib "$GATEWAY_PID")
    HWM_AFTER=$(status_kib "$GATEWAY_PID" VmHWM)
    RSS_MAX=$(awk 'BEGIN { m = 0 } $1 > m { m = $1 } END { print m }' "$TMP/rss.samples")
    # The kernel's high-water mark catches a peak between two samples; it
    # only says something about the upload if the upload raised it.
    if [[ -n $HWM_AFTER && -n $HWM_BEFORE ]] && ((HWM_AFTER > HWM_BEFORE)); then
        HWM_NOTE="$(mib "$HWM_AFTER") MiB (raised by the upload)"
    else
        HWM_NOTE="$(mib "${HWM_AFTER:-0}") MiB (set before the upload)"
    fi
    SAMPLES=$(grep -c . "$TMP/rss.samples" || true)
    read -r UP_CODE UP_SECS <"$TMP/upload.status" || true
    if ((curl_rc != 0)); then
        UPLOAD_RESULT="curl failed (exit $curl_rc: $(tr '\n' ' ' <"$TMP/upload.status"))"
    else
        UPLOAD_RESULT="HTTP $UP_CODE in $(awk -v s="$UP_SECS" 'BEGIN { printf "%.2f", s }') s"
    fi
fi

# ---------------------------------------------------------------------------
# Report (stdout, Markdown)

# median "v1 v2 ..." [DECIMALS] (the mean of the middle two for an even count).
median() {
    tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk -v d="${2:-1}" '{ v[NR] = $1 } END {
        if (NR == 0) { print "n/a"; exit }
        if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%." d "f", m
    }'
}
# ratios "a1 a2 ..." "b1 b2 ...": the per-round ratios a/b.
ratios() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        n = split(a, x, " "); split(b, y, " ")
        for (i = 1; i <= n; i++) printf "%s%.2f", (i > 1 ? " " : ""), (y[i] > 0 ? x[i] / y[i] : 0)
    }'
}
cell() { if [[ -n ${2:-} ]]; then median "$2"; else echo "-"; fi; }

cpu_model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
wrk_version=$(wrk -v 2>&1 | awk 'NR == 1 { print $2 }' || true)
nginx_version=$("$NGINX" -v 2>&1 | sed 's|^nginx version: ||')
gateway_version=$("$BIN" --version 2>/dev/null || echo "rack-gateway (unknown version)")
if [[ -n ${RACK_GATEWAY_BIN:-} ]]; then
    build_note="binary $RACK_GATEWAY_BIN"
elif git_rev=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null); then
    build_note="built from commit $git_rev"
    if ! git -C "$REPO_ROOT" diff --quiet HEAD -- 2>/dev/null; then
        build_note+=" plus uncommitted changes"
    fi
else
    build_note="built from $REPO_ROOT"
fi

C=$CONNECTIONS
direct_p50=$(median "${P50[direct/c1]}")
added() { awk -v p="$(median "$1")" -v d="$direct_p50" 'BEGIN { printf "%+.1f", p - d }'; }
cpu_ratios=$(ratios "${CPU[gateway/c$C]}" "${CPU[nginx/c$C]}")
tls_ratios=$(ratios "${CPU[gateway-tls/c$C]}" "${CPU[nginx-tls/c$C]}")

echo "### Benchmark: rack-gateway vs nginx vs direct"
echo
echo '```'
echo "\$ $INVOCATION"
echo "wrk --latency -t1 -c<$C or 1> -d${DURATION}s -H \"Authorization: Basic <per-run credentials>\" http(s)://127.0.0.1:<port>/apps"
echo '```'
echo
echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPU(s)${cpu_model:+ ($cpu_model)}, $(uname -sr)"
echo "- ${gateway_version} (${build_note}; ${BIN_SIZE_NOTE}), wrk ${wrk_version:-?}, ${nginx_version}"
echo "- \`GET /apps\` against the mock rack, ${ROUNDS} interleaved rounds of ${DURATION} s per row (after ${WARMUP} s warm-up each); every figure is the median over the rounds."
echo "- rack-gateway: static CI token, policy decision, rate-limit check, RACK_GATEWAY_LOG=${RACK_GATEWAY_LOG:-info} in JSON to a file (at info: one audit record per request). nginx: 1 worker, keep-alive upstream pool, no access log. TLS rows: the same certificate (P-256), keep-alive."
echo "- CPU per request: on-CPU time of all the proxy's threads (schedstat) over the run / requests served. wrk, the proxy and the mock rack share the CPUs, so req/s and latencies move between runs; CPU per request much less."
echo
echo "| target | CPU µs/req | req/s ($C conns) | p50 µs ($C) | p99 µs ($C) | p50 µs (1 conn) | added over direct (1 conn) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
row() {
    local label=$1 key=$2 lat=""
    [[ -n ${P50[$key/c1]:-} ]] && lat=$(added "${P50[$key/c1]}")
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$(cell x "${CPU[$key/c$C]:-}")" \
        "$(cell x "${RPS[$key/c$C]:-}")" "$(cell x "${P50[$key/c$C]:-}")" "$(cell x "${P99[$key/c$C]:-}")" \
        "$(cell x "${P50[$key/c1]:-}")" "${lat:--}"
}
row "direct (mock rack)" direct
row "nginx" nginx
row "rack-gateway" gateway
row "nginx, TLS" nginx-tls
row "rack-gateway, TLS (rustls)" gateway-tls
echo
echo "- CPU per request gateway/nginx: **$(median "$cpu_ratios" 2)x** (per round: $cpu_ratios)"
echo "- CPU per request gateway/nginx over TLS: **$(median "$tls_ratios" 2)x** (per round: $tls_ratios)"
echo "- p99 at $C connections, gateway - nginx: $(awk -v g="$(median "${P99[gateway/c$C]}")" -v n="$(median "${P99[nginx/c$C]}")" 'BEGIN { printf "%+.1f", g - n }') µs"
echo "- 1-connection p50 added over direct, gateway - nginx: $(awk -v g="$(median "${P50[gateway/c1]}")" -v n="$(median "${P50[nginx/c1]}")" 'BEGIN { printf "%+.1f", g - n }') µs (goal ≤ +10)"
for key in direct "${LOADED[@]}"; do
    if [[ -n ${NOTES[$key]:-} ]]; then
        echo "- WARNING $key: ${NOTES[$key]%; } (numbers for this row include failed requests)"
    fi
done
if ((UPLOAD_MB > 0)); then
    echo
    echo "Gateway memory while streaming a ${UPLOAD_MB} MB \`POST /apps/myapp/objects/tmp/bench.tgz\` (VmRSS, ${SAMPLES} samples at 100 ms; upload: ${UPLOAD_RESULT}):"
    echo
    echo "| RSS before | max RSS during | RSS after | peak RSS of the process (VmHWM) |"
    echo "|---:|---:|---:|---:|"
    echo "| $(mib "${RSS_BEFORE:-0}") MiB | $(mib "${RSS_MAX:-0}") MiB | $(mib "${RSS_AFTER:-0}") MiB | $HWM_NOTE |"
fi
