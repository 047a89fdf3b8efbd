#!/usr/bin/env bash
# Runs ON the GPU machine (a step of device-bench.sh, in its work folder with the synthetic
# model and drafter): `blockspec serve --device cuda` with the random DFlash drafter and two
# slots: three chat requests at once, then one streamed (its text must equal the non-streamed
# reply), and the speculative counters from /metrics. Prints one JSON line.
set -euo pipefail
bs=$1
port=8093
"$bs" serve -m model.gguf --device cuda -np 2 -c 4096 --port $port --draft drafter.gguf \
  >serve-dflash.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
python3 - "$port" <<'PY'
import json, sys, time, threading, urllib.request
port = int(sys.argv[1])
base = f"http://127.0.0.1:{port}"
for _ in range(600):
    try:
        if urllib.request.urlopen(base + "/health", timeout=1).status == 200:
            break
    except Exception:
        time.sleep(0.5)
else:
    sys.exit("server did not come up")
def chat(text, stream=False):
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": 64,
            "temperature": 0, "stream": stream}
    req = urllib.request.Request(base + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        if not stream:
            return json.load(r)
        parts, done = [], False
        for line in r:
            line = line.decode().strip()
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                d = json.loads(line[6:])
                for c in d.get("choices", []):
                    parts.append(c.get("delta", {}).get("content") or "")
        assert done, "stream without [DONE]"
        return "".join(parts)
prompts = ["Write a haiku about GPUs.", "def fibonacci(n):", "List three prime numbers."]
res = {}
def run(p):
    res[p] = chat(p)
threads = [threading.Thread(target=run, args=(p,)) for p in prompts]
t0 = time.time()
[t.start() for t in threads]
[t.join() for t in threads]
wall = time.time() - t0
streamed = chat(prompts[0], stream=True)
out = {
    "concurrent_requests": len(prompts),
    "wall_s": round(wall, 2),
    "texts_equal_stream_vs_plain": streamed == res[prompts[0]]["choices"][0]["message"]["content"],
    "timings": [res[p].get("timings") for p in prompts],
    "usage": [res[p].get("usage") for p in prompts],
}
metrics = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
out["metrics_spec_lines"] = [l for l in metrics.splitlines() if "spec_decode_num_drafts_total" in l]
print(json.dumps(out))
PY
