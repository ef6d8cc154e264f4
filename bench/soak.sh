#!/usr/bin/env bash
# bench/soak.sh [minutes]: a soak of rack-gateway (issue 17). Not a test:
# it reports, it does not judge. For N minutes (default 10) it runs, against
# the gateway in front of `rack-gateway mock-rack`, all at once:
#   - sustained REST load: 4 keep-alive clients looping `GET /apps`;
#   - long-lived websocket sessions: 2 exec sessions echoing a line a
#     second (each ends after 30 s with EOF and is reopened) and 1 followed
#     logs session (reopened every 60 s);
#   - a valid config change every 5 s (a role file edited: reload applied);
#   - a broken users.yaml every 4th change, repaired 2 s later (refused).
# It prints: requests served, failed requests (non-200 answers and
# connection errors), audit records vs requests and sessions, the gateway's
# RSS and open file descriptors at start and end, reloads applied/refused.
#
# Environment: RACK_GATEWAY_BIN (default: cargo build --release, then
# target/release/rack-gateway). Needs python3, curl and /proc. Listens on
# 127.0.0.1 only; everything it starts is stopped on exit.
set -euo pipefail

MINUTES=${1:-10}
[[ $MINUTES =~ ^[0-9]+$ ]] && ((MINUTES > 0)) || {
    echo "bench/soak.sh: minutes must be a whole number > 0, got '$MINUTES'" >&2
    exit 2
}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'bench/soak.sh: %s\n' "$*" >&2
    exit 1
}
command -v python3 >/dev/null || die "python3 not found (apt-get install python3)"
command -v curl >/dev/null || die "curl not found (apt-get install curl)"

PIDS=()
TMP=""
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    [[ -n $TMP && -d $TMP ]] && rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$REPO_ROOT"
if [[ -n ${RACK_GATEWAY_BIN:-} ]]; then
    BIN=$RACK_GATEWAY_BIN
else
    log "cargo build --release"
    cargo build --release >&2
    BIN=$REPO_ROOT/target/release/rack-gateway
fi
[[ -x $BIN ]] || die "no executable at $BIN"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/rack-gateway-soak.XXXXXX")

read -r RACK_PORT GATEWAY_PORT < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
rand_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
export SOAK_RACK_PASSWORD
SOAK_RACK_PASSWORD=$(rand_hex 24)
TOKEN="rgw_soak_$(rand_hex 24)"
TOKEN_SHA256=$(printf '%s' "$TOKEN" | sha256sum | cut -d' ' -f1)

log "mock rack on 127.0.0.1:$RACK_PORT"
"$BIN" mock-rack --listen "127.0.0.1:$RACK_PORT" --password-env SOAK_RACK_PASSWORD >"$TMP/mock.log" 2>&1 &
PIDS+=($!)

CONF=$TMP/config
mkdir -p "$CONF/roles"
cp roles/*.yaml "$CONF/roles/"
cat >"$CONF/gateway.yaml" <<EOF
listen: 127.0.0.1:$GATEWAY_PORT
discover_racks_from_env: false
racks:
  soak:
    url: http://127.0.0.1:$RACK_PORT
    password_env: SOAK_RACK_PASSWORD
rate_limits:
  ci: {rate: 1000000/s, burst: 1000000}
EOF
cat >"$CONF/ci.yaml" <<EOF
ci:
  soak:
    token_sha256: $TOKEN_SHA256
    expires: 2099-01-01
    grants:
      - role: admin
        scope: "*"
EOF
cp "$CONF/roles/viewer.yaml" "$TMP/viewer.yaml"

log "gateway on 127.0.0.1:$GATEWAY_PORT"
RACK_GATEWAY_LOG=warn "$BIN" serve --config "$CONF" --audit-file "$TMP/audit.jsonl" \
    >"$TMP/gateway.log" 2>&1 &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")
for ((i = 0; i < 150; i++)); do
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$GATEWAY_PORT/_gateway/healthz" && break
    kill -0 "$GATEWAY_PID" 2>/dev/null || { cat "$TMP/gateway.log" >&2; die "the gateway exited"; }
    sleep 0.1
done

rss() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$GATEWAY_PID/status"; }
fds() { find "/proc/$GATEWAY_PID/fd" -mindepth 1 -maxdepth 1 | wc -l; }
status_field() {
    curl -s --max-time 5 "http://127.0.0.1:$GATEWAY_PORT/_gateway/status" |
        python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', '?'))"
}

cat >"$TMP/driver.py" <<'PY'
"""The soak's clients: REST loops, websocket sessions and config edits,
for a fixed time; prints one JSON object of counts."""
import base64, http.client, json, os, socket, struct, sys, threading, time

port, token, minutes, conf, viewer = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
auth = "Basic " + base64.b64encode(f"convox:{token}".encode()).decode()
end = time.time() + minutes * 60
lock = threading.Lock()
n = dict(rest_ok=0, rest_failed=0, sessions=0, session_failed=0, frames_echoed=0, edits=0, bad_edits=0)
errors = []

def count(key, err=None):
    with lock:
        n[key] += 1
        if err is not None and len(errors) < 20:
            errors.append(f"{key}: {err}")

def rest():
    conn = None
    while time.time() < end:
        try:
            conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/racks/soak/apps?", headers={"Authorization": auth})
            r = conn.getresponse()
            r.read()
            count("rest_ok" if r.status == 200 else "rest_failed", None if r.status == 200 else r.status)
        except Exception as e:
            count("rest_failed", repr(e))
            conn = None

def frame(opcode, payload):
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n_ = len(payload)
    head += bytes([0x80 | n_]) if n_ < 126 else bytes([0x80 | 126]) + struct.pack(">H", n_)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

def read_frame(f):
    h = f.read(2)
    if len(h) < 2:
        return None
    ln = h[1] & 0x7F
    if ln == 126:
        ln = struct.unpack(">H", f.read(2))[0]
    elif ln == 127:
        ln = struct.unpack(">Q", f.read(8))[0]
    return h[0] & 0x0F, f.read(ln)

def open_ws(path, extra=""):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: {auth}\r\n{extra}\r\n").encode())
    f = s.makefile("rb")
    status = f.readline()
    while f.readline() not in (b"\r\n", b""):
        pass
    if b" 101 " not in status:
        s.close()
        raise RuntimeError(status.decode(errors="replace").strip())
    return s, f

def exec_sessions():
    while time.time() < end:
        try:
            s, f = open_ws("/racks/soak/apps/myapp/processes/web-abc12/exec", "Command: cat\r\n")
            until = min(end, time.time() + 30)
            while time.time() < until:
                s.sendall(frame(1, b"soak line\n"))
                op, payload = read_frame(f)
                if payload != b"soak line\n":
                    raise RuntimeError(f"echo {op} {payload!r}")
                with lock:
                    n["frames_echoed"] += 1
                time.sleep(1)
            s.sendall(frame(2, b""))
            while (fr := read_frame(f)) is not None and fr[0] != 8:
                pass
            s.close()
            count("sessions")
        except Exception as e:
            count("session_failed", repr(e))
            time.sleep(1)

def logs_sessions():
    while time.time() < end:
        try:
            s, _ = open_ws("/racks/soak/apps/myapp/logs")
            s.settimeout(1)
            until = min(end, time.time() + 60)
            while time.time() < until:
                try:
                    if not s.recv(65536):
                        raise RuntimeError("logs ended early")
                except (socket.timeout, TimeoutError):
                    pass
            s.settimeout(30)
            s.sendall(frame(8, struct.pack(">H", 1000)))
            s.close()
            count("sessions")
        except Exception as e:
            count("session_failed", repr(e))
            time.sleep(1)

def edits():
    i = 0
    users = os.path.join(conf, "users.yaml")
    while time.time() + 5 < end:
        time.sleep(5)
        i += 1
        if i % 4 == 0:
            with open(users, "w") as fh:
                fh.write("users:\n  broken: [\n")
            count("bad_edits")
            time.sleep(2)
            os.remove(users)
        else:
            with open(viewer) as src, open(os.path.join(conf, "roles", "viewer.yaml"), "w") as dst:
                dst.write(src.read() + f"# soak edit {i}\n")
            count("edits")

threads = [threading.Thread(target=rest) for _ in range(4)]
threads += [threading.Thread(target=exec_sessions) for _ in range(2)]
threads += [threading.Thread(target=logs_sessions), threading.Thread(target=edits)]
for t in threads:
    t.start()
for t in threads:
    t.join()
n["errors"] = errors
print(json.dumps(n))
PY

sleep 1
RSS_START=$(rss)
FDS_START=$(fds)
log "soak for $MINUTES minute(s)"
python3 "$TMP/driver.py" "$GATEWAY_PORT" "$TOKEN" "$MINUTES" "$CONF" "$TMP/viewer.yaml" >"$TMP/driver.json"
sleep 2
RSS_END=$(rss)
FDS_END=$(fds)
RELOADS_OK=$(status_field reloads_ok)
RELOADS_FAILED=$(status_field reloads_failed)
kill -TERM "$GATEWAY_PID"
wait "$GATEWAY_PID" || true
PIDS=("${PIDS[@]:0:1}")

# The rotated files (audit.jsonl.<UTC stamp>[.n], oldest first: -V orders .2 before .10)
# and then the active one: the whole chain of the run.
AUDIT_FILES=()
while IFS= read -r f; do AUDIT_FILES+=("$f"); done < <(ls "$TMP"/audit.jsonl.* 2>/dev/null | sort -V)
AUDIT_FILES+=("$TMP/audit.jsonl")

python3 - "$TMP/driver.json" "${AUDIT_FILES[@]}" <<PY
import json, sys
d = json.load(open(sys.argv[1]))
req = starts = ends = 0
for path in sys.argv[2:]:
    for line in open(path):
        r = json.loads(line)
        event = r.get("event")
        req += event == "request" and r.get("rack") == "soak"
        starts += event == "session-start"
        ends += event == "session-end"
served = d["rest_ok"] + d["rest_failed"]
print(f"soak: $MINUTES minute(s), binary $BIN")
print(f"requests served:          {d['rest_ok']} REST OK, {d['sessions']} websocket sessions ({d['frames_echoed']} echoed frames)")
print(f"failed requests:          {d['rest_failed']} REST, {d['session_failed']} sessions")
print(f"audit records vs requests: {req} request records for {served} REST requests; {starts} session-start / {ends} session-end for {d['sessions'] + d['session_failed']} sessions")
print(f"RSS:                      $RSS_START KiB at start, $RSS_END KiB at end")
print(f"open file descriptors:    $FDS_START at start, $FDS_END at end")
print(f"reloads:                  $RELOADS_OK applied, $RELOADS_FAILED refused ({d['edits']} edits, {d['bad_edits']} broken configs)")
for e in d["errors"]:
    print("  error:", e)
PY
echo "audit files:              ${#AUDIT_FILES[@]} (rotated at the default 100M)"
"$BIN" audit verify "${AUDIT_FILES[@]}"
