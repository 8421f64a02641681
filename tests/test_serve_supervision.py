"""test_serve_supervision: kill -9 of a worker during a streamed answer; the stream completes with the same text.

The server runs the multi-process runtime with two CPU workers (part of
every layer's neurons cold, so each worker computes something). For the GPU
worker and a CPU worker: a greedy streamed answer is started, the worker is
killed with SIGKILL after a few chunks, and the streamed text must equal the
answer the same request got before the kill; /metrics counts the restarts,
and the server keeps serving.
"""
import json
import os
import signal
import socket
import time

import pytest

from test_serve_util import Server, require_model

require_model()
BODY = {"prompt": "Write a long story about a dragon who learns to cook. Once upon a time", "max_tokens": 120,
        "temperature": 0, "stream": True}


@pytest.fixture(scope="module")
def srv():
    s = Server("-np", "2", "-c", 512, "-b", 32, "--cpu-workers", 2, "--hot-fraction", 0.3, "-v")
    yield s
    assert s.stop() == 0, s.errtext()


def stream_text(srv, kill_role=None, after_chunks=8):
    data = json.dumps(BODY).encode()
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=300)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
    raw = b""
    killed = None
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        raw += chunk
        if kill_role and killed is None and raw.count(b"data: ") >= after_chunks:
            killed = srv.pid_of(kill_role)
            os.kill(killed, signal.SIGKILL)
    s.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    # undo the chunked transfer encoding
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        n = int(size_line.split(b";")[0], 16)
        if n == 0:
            break
        out += rest[:n]
        body = rest[n + 2:]
    events = [e[len("data: "):] for e in out.decode().split("\n\n") if e.strip()]
    assert events[-1] == "[DONE]", events[-3:]
    text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1] if json.loads(e).get("choices"))
    return text, killed


@pytest.mark.parametrize("role", ["gpu0", "cpu0", "cpu1"])
def test_kill_worker_mid_stream(srv, role):
    expected, _ = stream_text(srv)
    assert len(expected) > 100
    restarts = srv.metrics()["hearth_worker_restarts_total"]
    text, pid = stream_text(srv, kill_role=role)
    assert pid
    assert text == expected
    t0 = time.time()
    while srv.metrics()["hearth_worker_restarts_total"] < restarts + 1:
        assert time.time() - t0 < 5, srv.metrics()
        time.sleep(0.1)
    assert srv.pid_of(role) != pid
    assert "restart" in srv.errtext() or ("started %s" % role) in srv.errtext()
