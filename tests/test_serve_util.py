"""test_serve_util: starting and talking to a real `hearth serve` for the serve tests.

Not a test module (it holds no tests); the test_serve*.py files import it.
Environment: HEARTH_BIN (the hearth binary), HEARTH_TEST_MODEL (the model).
Without the model every serve test module exits 77 (skip), as the other
model tests do.
"""
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

HEARTH = os.environ.get("HEARTH_BIN", "")
MODEL = os.environ.get("HEARTH_TEST_MODEL", "")
THREADS = os.environ.get("HEARTH_TEST_THREADS", "2")


def require_model():
    if not HEARTH or not os.path.exists(HEARTH):
        pytest.exit("HEARTH_BIN=%r is not the hearth binary" % HEARTH, returncode=2)
    if not MODEL or not os.path.exists(MODEL):
        pytest.exit("SKIP: no model at HEARTH_TEST_MODEL=%r" % MODEL, returncode=77)


def runtime_root():
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(xdg, "hearth") if xdg else "/tmp/hearth-%d" % os.getuid()


class Server:
    """A `hearth serve` on a free port; its stderr is kept for failure messages."""

    def __init__(self, *args, env=None, wait=True):
        cmd = [HEARTH, "serve", "-m", MODEL, "--port", "0", "-t", THREADS] + [str(a) for a in args]
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=full_env)
        self.err = b""
        self.port = None
        self.session = None
        self.health_seen = []
        self._lock = threading.Lock()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        t0 = time.time()
        while self.port is None:
            if self.p.poll() is not None:
                raise AssertionError("hearth serve exited with %d: %s" % (self.p.returncode, self.errtext()))
            if time.time() - t0 > 60:
                raise AssertionError("hearth serve printed no port: " + self.errtext())
            time.sleep(0.005)
        self.base = "http://127.0.0.1:%d" % self.port
        if wait:
            self.wait_ready()

    def _read(self):
        for chunk in iter(lambda: self.p.stderr.read1(4096), b""):
            with self._lock:
                self.err += chunk
                text = self.err.decode("utf-8", "replace")
            if self.port is None and "hearth serve: port " in text:
                self.port = int(text.split("hearth serve: port ")[1].split()[0])
            if self.session is None and "] info: session " in text:
                self.session = text.split("] info: session ")[1].split(":")[0]

    def errtext(self):
        with self._lock:
            return self.err.decode("utf-8", "replace")[-4000:]

    def wait_ready(self, timeout=180):
        t0 = time.time()
        while True:
            status, _ = self.get("/health")
            self.health_seen.append(status)
            if status == 200:
                return
            if self.p.poll() is not None:
                raise AssertionError("hearth serve exited with %d: %s" % (self.p.returncode, self.errtext()))
            if time.time() - t0 > timeout:
                raise AssertionError("hearth serve not ready in %d s: %s" % (timeout, self.errtext()))
            time.sleep(0.05)

    def request(self, method, path, body=None, headers=None, raw=None, timeout=300):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json"} if data is not None else {}
        h.update(headers or {})
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get(self, path, headers=None):
        try:
            return self.request("GET", path, headers=headers, timeout=30)
        except (urllib.error.URLError, ConnectionError):
            return 0, b""

    def post(self, path, body, headers=None, raw=None, timeout=300):
        return self.request("POST", path, body=body, headers=headers, raw=raw, timeout=timeout)

    def post_json(self, path, body, headers=None):
        status, data = self.post(path, body, headers)
        return status, json.loads(data) if data else None

    def metrics(self, headers=None):
        status, data = self.get("/metrics", headers)
        assert status == 200, (status, data)
        out = {}
        for line in data.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def pid_of(self, role):
        assert self.session, "no session id in the log (start the server with -v): " + self.errtext()
        with open(os.path.join(runtime_root(), self.session, role + ".pid")) as f:
            return int(f.read().split()[0])

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                raise AssertionError("hearth serve did not stop on SIGTERM: " + self.errtext())
        self._t.join(5)
        return self.p.returncode


def hearth_run(*args, timeout=300):
    r = subprocess.run([HEARTH, "run", "-m", MODEL, "-t", THREADS] + [str(a) for a in args], capture_output=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode("utf-8")
    assert out.endswith("\n")
    return out[:-1]  # run adds one newline after the text


def hearth_tokenize(text):
    r = subprocess.run([HEARTH, "tokenize", "-m", MODEL, "-p", text], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    return [int(x) for x in r.stdout.split()]


def sse_events(resp_bytes):
    """The data: payloads of an SSE body, in order."""
    events = []
    for block in resp_bytes.decode("utf-8").split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        events.append(block[len("data: "):])
    return events


def raw_http(port, request_bytes, read_until=None, timeout=30):
    """Sends raw bytes, reads the answer (until read_until appears or the peer closes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(request_bytes)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if read_until and read_until in data:
                break
    finally:
        s.close()
    return data
