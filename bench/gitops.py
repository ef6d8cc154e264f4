#!/usr/bin/env python3
"""bench/gitops.py: how long from `git push` + webhook to the new policy
deciding requests, in git mode, against a baseline measured in the same run.

A benchmark, not a test: it never fails on slow numbers. Everything runs on
127.0.0.1 in a temporary directory: a mock rack (`rack-gateway mock-rack`),
a bare repository served by `git daemon`, and `rack-gateway serve --git`.
Each round commits a new CI identity, pushes it, then times

  webhook -> live   POST /_gateway/webhook (signed), then GET /apps with the
                    new identity's token until it answers 200: fetch, read the
                    tree, parse, validate, run the policy tests, swap;
  git fetch         baseline: the stock git CLI fetching the same new commit
                    over the same git:// transport into a scratch clone.

Usage: bench/gitops.py [rounds]   (default 10; builds --release unless
RACK_GATEWAY_BIN is set). Prints a Markdown report on stdout.
"""

import hashlib
import hmac
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "bench-webhook-secret-0123456789"
RACK_PASSWORD = "bench-rack-password-0123456789"
GIT_ENV = dict(
    os.environ,
    GIT_CONFIG_NOSYSTEM="1",
    GIT_CONFIG_GLOBAL="/dev/null",
    GIT_AUTHOR_NAME="bench",
    GIT_AUTHOR_EMAIL="bench@example.com",
    GIT_COMMITTER_NAME="bench",
    GIT_COMMITTER_EMAIL="bench@example.com",
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.025)
    sys.exit(f"nothing listens on {port}")


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def http(method, url, token=None, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if token:
        import base64
        req.add_header("Authorization", "Basic " + base64.b64encode(f"convox:{token}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def ci_yaml(n):
    out = "ci:\n"
    for i in range(n + 1):
        digest = hashlib.sha256(f"bench-token-{i:04}-0123456789abcdef".encode()).hexdigest()
        out += (f"  bench-{i}:\n    token_sha256: {digest}\n    expires: 2099-01-01\n"
                f"    grants:\n      - role: viewer\n        scope: \"*\"\n")
    return out


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    binary = os.environ.get("RACK_GATEWAY_BIN")
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True,
                       stdout=sys.stderr)
        binary = os.path.join(ROOT, "target/release/rack-gateway")
    tmp = tempfile.mkdtemp(prefix="gitops-bench-")
    procs = []
    try:
        rack_port, daemon_port, gw_port = free_port(), free_port(), free_port()
        procs.append(subprocess.Popen(
            [binary, "mock-rack", "--listen", f"127.0.0.1:{rack_port}", "--password-env", "P"],
            env=dict(os.environ, P=RACK_PASSWORD), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        srv, work = os.path.join(tmp, "srv"), os.path.join(tmp, "work")
        os.makedirs(srv)
        git(tmp, "init", "-q", "--bare", "-b", "main", os.path.join(srv, "policy.git"))
        git(tmp, "init", "-q", "-b", "main", work)
        shutil.copytree(os.path.join(ROOT, "roles"), os.path.join(work, "roles"))
        with open(os.path.join(work, "gateway.yaml"), "w") as f:
            f.write(f"discover_racks_from_env: false\nracks:\n  bench:\n"
                    f"    url: http://127.0.0.1:{rack_port}\n    password_env: P\n"
                    # The poll below fails authentication until the change
                    # is live: keep the failed-login limit out of the timing.
                    "rate_limits: {auth_failures: 1000000/s}\n")
        with open(os.path.join(work, "ci.yaml"), "w") as f:
            f.write(ci_yaml(0))
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", "initial")
        git(work, "push", "-q", os.path.join(srv, "policy.git"), "HEAD:main")
        procs.append(subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={srv}",
             "--listen=127.0.0.1", f"--port={daemon_port}", srv],
            env=GIT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(daemon_port)
        url = f"git://127.0.0.1:{daemon_port}/policy.git"
        settings = os.path.join(tmp, "git.yaml")
        with open(settings, "w") as f:
            f.write(f"listen: 127.0.0.1:{gw_port}\nrepository:\n  url: {url}\n  branch: main\n"
                    f"  cache_dir: {tmp}/cache\n  poll_interval: 1h\n"
                    f"  webhook_secret: {{env: HOOK}}\n")
        procs.append(subprocess.Popen(
            [binary, "serve", "--git", settings],
            env=dict(os.environ, P=RACK_PASSWORD, HOOK=SECRET, RACK_GATEWAY_LOG="warn"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(gw_port)
        base = f"http://127.0.0.1:{gw_port}"
        scratch = os.path.join(tmp, "scratch.git")
        git(tmp, "clone", "-q", "--bare", url, scratch)

        live, fetch = [], []
        for i in range(1, rounds + 1):
            with open(os.path.join(work, "ci.yaml"), "w") as f:
                f.write(ci_yaml(i))
            git(work, "commit", "-q", "-am", f"add bench-{i}")
            git(work, "push", "-q", os.path.join(srv, "policy.git"), "HEAD:main")
            token = f"bench-token-{i:04}-0123456789abcdef"

            t0 = time.perf_counter()
            git(scratch, "fetch", "-q", url, "+refs/heads/main:refs/heads/main")
            fetch.append(time.perf_counter() - t0)

            body = json.dumps({"ref": "refs/heads/main"}).encode()
            sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            t0 = time.perf_counter()
            status, text = http("POST", base + "/_gateway/webhook", body=body,
                                headers={"X-Hub-Signature-256": sig})
            if status != 202:
                sys.exit(f"webhook answered {status}: {text!r}")
            while http("GET", base + "/apps", token=token)[0] != 200:
                if time.perf_counter() - t0 > 30:
                    sys.exit("the new identity never went live")
                time.sleep(0.002)
            live.append(time.perf_counter() - t0)

        ms = lambda xs: statistics.median(xs) * 1000
        print(f"Command: `bench/gitops.py {rounds}` ({rounds} rounds, git:// on loopback, "
              "the shipped roles plus one CI identity per round)\n")
        print("| measure | median ms | max ms |")
        print("|---|---:|---:|")
        print(f"| webhook -> new identity answered 200 | {ms(live):.1f} | {max(live) * 1000:.1f} |")
        print(f"| baseline: `git fetch` of the same commit (git CLI) | {ms(fetch):.1f} | {max(fetch) * 1000:.1f} |")
        print(f"\n- webhook-to-live / git fetch: {ms(live) / ms(fetch):.2f}x")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
