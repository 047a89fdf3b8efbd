#!/usr/bin/env python3
"""Bounded load test of `blockspec serve` on loopback (standard library only).

Starts the server, sends N requests from C client threads: a mix of streamed and non-streamed
chat and completion requests, a share cancelled mid-stream (the client closes the connection
after the first chunk) and a share malformed (bad JSON, wrong types, unknown endpoint). Checks:
no 5xx except 503 (queue full), no connection errors, the server still alive, and its resident
memory after the run against the baseline taken after a warm-up. Prints a JSON summary.

Usage: load-test.py --bin target/release/blockspec --model M.gguf [--requests 2000]
       [--concurrency 8] [--server-args "-np 2 --queue-size 4 --spec ngram -c 2048"]
"""
import argparse
import http.client
import json
import random
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

p = argparse.ArgumentParser()
p.add_argument("--bin", required=True)
p.add_argument("--model", required=True)
p.add_argument("--requests", type=int, default=2000)
p.add_argument("--concurrency", type=int, default=8)
p.add_argument("--max-tokens", type=int, default=6)
p.add_argument("--cancel-share", type=float, default=0.10)
p.add_argument("--malformed-share", type=float, default=0.05)
p.add_argument("--server-args", default="-np 2 --queue-size 8 --spec ngram -c 2048")
p.add_argument("--burst", type=int, default=32,
               help="then this many simultaneous requests, more than slots + queue: some get 503")
p.add_argument("--seed", type=int, default=1)
p.add_argument("--log", help="keep the server's log here (e.g. with BLOCKSPEC_LOG=blockspec=debug)")
p.add_argument("--rounds", type=int, default=1,
               help="repeat the mix this many times (requests each), resident memory after each")
a = p.parse_args()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


log = open(a.log, "w+") if a.log else tempfile.NamedTemporaryFile("w+", suffix=".log")
proc = subprocess.Popen([a.bin, "serve", "-m", a.model, "--port", "0",
                         *shlex.split(a.server_args)],
                        stdout=subprocess.DEVNULL, stderr=log)
base = None
t0 = time.time()
while base is None:
    text = open(log.name).read()
    if "listening on http://" in text:
        base = text.split("listening on ")[1].split()[0]
    if proc.poll() is not None:
        sys.exit("server exited: " + text)
    time.sleep(0.05)
host, port = urllib.parse.urlparse(base).hostname, urllib.parse.urlparse(base).port


def request(method, path, body=None, stream_cancel=False, timeout=300):
    """(status, error) for one request; reads the whole body unless cancelling."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        if stream_cancel and r.status == 200:
            r.fp.readline()  # the first event, then hang up
            conn.sock.close()
            return r.status, None
        r.read()
        return r.status, None
    except Exception as e:  # a dropped connection or a timeout is a failure
        return None, repr(e)
    finally:
        conn.close()


while True:
    st, _ = request("GET", "/health")
    if st == 200:
        break
    if proc.poll() is not None:
        sys.exit("server exited: " + open(log.name).read())
    time.sleep(0.1)
load_s = time.time() - t0

WORDS = ["sort", "parse", "merge", "reverse", "count", "filter", "sum", "split", "join", "map"]
MALFORMED = [
    ("POST", "/v1/chat/completions", "{not json"),
    ("POST", "/v1/chat/completions", json.dumps({"messages": "hi"})),
    ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}],
                                                 "temperature": "hot"})),
    ("POST", "/v1/completions", json.dumps({"prompt": 5})),
    # Out of range (a limit beyond the context is capped, as llama-server does, not refused).
    ("POST", "/v1/completions", json.dumps({"prompt": "x", "max_tokens": 2 ** 63})),
    ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "wizard", "content": "x"}]})),
    ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "x"}],
                                                 "tool_choice": "required"})),
    ("POST", "/v1/nothing", "{}"),
    ("POST", "/detokenize", json.dumps({"tokens": [-1]})),
]


def make_request(rng, i):
    if rng.random() < a.malformed_share:
        m, path, body = rng.choice(MALFORMED)
        return "malformed", m, path, body, False
    word = rng.choice(WORDS)
    stream = rng.random() < 0.5
    cancel = stream and rng.random() < a.cancel_share / 0.5
    temp = rng.choice([0, 0.7])
    if rng.random() < 0.5:
        body = {"messages": [{"role": "user", "content": f"Write a Python function to {word} a list ({i})."}],
                "max_tokens": a.max_tokens, "temperature": temp, "stream": stream}
        path = "/v1/chat/completions"
    else:
        body = {"prompt": f"def {word}_items_{i}(items):", "max_tokens": a.max_tokens,
                "temperature": temp, "stream": stream}
        path = "/v1/completions"
    if cancel:
        body["max_tokens"] = 200
    kind = "cancelled" if cancel else ("stream" if stream else "plain")
    return kind, "POST", path, json.dumps(body), cancel


# Warm-up (graphs, KV and compute buffers of every slot), then the memory baseline.
for i in range(8):
    request("POST", "/v1/completions", json.dumps({"prompt": f"def warm_{i}():", "max_tokens": a.max_tokens}))
rss_base = rss_kib(proc.pid)

results = []
lock = threading.Lock()
latencies = []
rss_rounds = []
rss_peak = rss_base
t_start = time.time()
for rnd in range(a.rounds):
    rng = random.Random(a.seed + rnd)
    jobs = [make_request(rng, i) for i in range(a.requests)]
    next_job = [0]

    def worker():
        while True:
            with lock:
                if next_job[0] >= len(jobs):
                    return
                j = jobs[next_job[0]]
                next_job[0] += 1
            kind, m, path, body, cancel = j
            t = time.time()
            st, err = request(m, path, body, stream_cancel=cancel)
            dt = time.time() - t
            with lock:
                results.append((kind, st, err))
                if kind in ("plain", "stream") and st == 200:
                    latencies.append(dt)

    threads = [threading.Thread(target=worker) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        rss_peak = max(rss_peak, rss_kib(proc.pid))
        time.sleep(0.5)
    time.sleep(1)
    if proc.poll() is None:
        rss_rounds.append(round(rss_kib(proc.pid) / 1024, 1))
wall = time.time() - t_start
time.sleep(2)  # let cancelled generations wind down
burst = []
if proc.poll() is None and a.burst:
    def burst_one(i):
        st, err = request("POST", "/v1/completions", json.dumps(
            {"prompt": f"def burst_{i}():", "max_tokens": a.max_tokens}))
        with lock:
            burst.append(st if st is not None else err)
    bt = [threading.Thread(target=burst_one, args=(i,)) for i in range(a.burst)]
    for t in bt:
        t.start()
    for t in bt:
        t.join()
    time.sleep(1)
alive = proc.poll() is None
rss_after = rss_kib(proc.pid) if alive else 0
health = request("GET", "/health")[0] if alive else None
metrics = ""
if alive:
    conn = http.client.HTTPConnection(host, port)
    conn.request("GET", "/metrics")
    metrics = conn.getresponse().read().decode()
    conn.close()
proc.kill()
proc.wait()

by = {}
for kind, st, err in results:
    key = f"{kind}:{st if st is not None else 'conn-error'}"
    by[key] = by.get(key, 0) + 1
unexpected_5xx = sum(1 for _, st, _ in results if st is not None and st >= 500 and st != 503)
burst_by = {}
for st in burst:
    burst_by[str(st)] = burst_by.get(str(st), 0) + 1
burst_ok = all(st in (200, 503) for st in burst)
conn_errors = [err for _, st, err in results if st is None]
malformed_ok = all(400 <= (st or 0) < 500 for kind, st, _ in results if kind == "malformed")
latencies.sort()
pct = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 3) if latencies else None
metric = lambda name: next((float(l.split()[-1]) for l in metrics.splitlines()
                            if l.startswith(f"llamacpp:{name} ")), None)
summary = {
    "requests": len(results), "rounds": a.rounds, "concurrency": a.concurrency, "server_args": a.server_args,
    "max_tokens": a.max_tokens, "load_s": round(load_s, 2), "wall_s": round(wall, 1),
    "requests_per_s": round(len(results) / wall, 2), "by_kind_status": dict(sorted(by.items())),
    "unexpected_5xx": unexpected_5xx, "connection_errors": len(conn_errors),
    "connection_error_examples": conn_errors[:3], "malformed_all_4xx": malformed_ok,
    "burst": a.burst, "burst_status": burst_by,
    "server_alive": alive, "health_after": health,
    "latency_s_completed_p50": pct(0.5), "latency_s_completed_p95": pct(0.95),
    "rss_mib_baseline": round(rss_base / 1024, 1), "rss_mib_peak": round(rss_peak / 1024, 1),
    "rss_mib_after": round(rss_after / 1024, 1), "rss_mib_after_each_round": rss_rounds,
    "tokens_predicted_total": metric("tokens_predicted_total"),
    "spec_decode_num_draft_tokens_total": metric("spec_decode_num_draft_tokens_total"),
    "spec_decode_num_accepted_tokens_total": metric("spec_decode_num_accepted_tokens_total"),
}
print(json.dumps(summary, indent=1))
ok = alive and health == 200 and unexpected_5xx == 0 and not conn_errors and malformed_ok and burst_ok
sys.exit(0 if ok else 1)
