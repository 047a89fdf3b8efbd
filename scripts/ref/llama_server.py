"""A llama-server process on a free loopback port, for the reference scripts
(make_llama_fixtures.py, crosscheck_peer.py): start it, wait for /health, query it, stop it.

    with Server(binary, model, ["-t", "2", "-c", "4096", "--jinja"]) as srv:
        http(srv.base, "/tokenize", {"content": "hi"})
"""
from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

# never use a proxy: all traffic is to the loopback server
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(base: str, path: str, body: dict | None = None, timeout: float = 600.0):
    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(base + path, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return json.loads(r.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{path}: HTTP {e.code}: {e.read().decode('utf-8', 'replace')[:500]}") from None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The log is kept (its path printed) when the `with` block ends in an exception."""

    def __init__(self, binary: Path, model: Path, args: list[str], log_prefix: str = "llama-server-"):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.cmd = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port), *args]
        self.log = tempfile.NamedTemporaryFile(prefix=log_prefix, suffix=".log", delete=False)
        self.proc: subprocess.Popen | None = None

    def __enter__(self):
        print(f"  starting: {shlex.join(self.cmd)}  (log {self.log.name})", file=sys.stderr)
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + 600
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if http(self.base, "/health", timeout=5).get("status") == "ok":
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, RuntimeError, json.JSONDecodeError):
                pass
            time.sleep(0.5)
        self.__exit__(TimeoutError, None, None)
        raise TimeoutError("server did not become healthy")

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if exc[0] is None:
            os.unlink(self.log.name)
        return False
