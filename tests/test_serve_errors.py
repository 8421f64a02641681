"""test_serve_errors: bad input gets its status and an OpenAI-shaped error body, and the server keeps serving.

Malformed JSON, wrong types, huge bodies, deep nesting, invalid UTF-8, an
unknown model, missing messages, a prompt longer than the context, a wrong
or missing key, unknown paths and methods, a body that is not JSON, a client
that sends half a body, a full queue (503), a request past its timeout. After
each, a normal request still works. Run under ASan/UBSan too (build-san).
"""
import json
import os
import socket
import threading
import time

import openai
import pytest

from test_serve_util import Server, raw_http, require_model, sse_events

require_model()
KEY = "s3cret-key-for-tests"
CTX = 256
SANITIZED = os.environ.get("HEARTH_TEST_SANITIZED") == "1"
AUTH = {"Authorization": "Bearer " + KEY}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    keyfile = tmp_path_factory.mktemp("key") / "api-key"
    keyfile.write_text(KEY + "\n")
    s = Server("-np", "1", "-c", CTX, "--queue", "1", "--api-key-file", keyfile, "--single-process" if SANITIZED else "-v")
    yield s
    assert s.stop() == 0, s.errtext()


def error_of(status, data, want_status, want_type=None):
    assert status == want_status, (status, data)
    body = json.loads(data)
    err = body["error"]
    assert set(["code", "message", "type"]) <= set(err), body
    assert err["code"] == want_status and isinstance(err["message"], str) and err["message"]
    if want_type:
        assert err["type"] == want_type, body
    return err


def still_serving(srv):
    status, data = srv.post("/v1/completions", {"prompt": "Hi", "max_tokens": 2, "temperature": 0}, headers=AUTH)
    assert status == 200, (status, data)
    assert json.loads(data)["usage"]["completion_tokens"] == 2


CHAT = "/v1/chat/completions"
GOOD_MSGS = [{"role": "user", "content": "hi"}]

BAD_BODIES = [
    # (name, raw body, expected status, expected type)
    ("malformed", b'{"messages": [{"role": "user", "content": "hi"}', 400, "invalid_request_error"),
    ("not an object", b'[1, 2, 3]', 400, "invalid_request_error"),
    ("empty", b'', 400, "invalid_request_error"),
    ("trailing garbage", b'{"messages": []} xyz', 400, "invalid_request_error"),
    ("invalid utf-8", b'{"messages": [{"role": "user", "content": "\xff\xfe\xfd"}]}', 400, "invalid_request_error"),
    ("overlong utf-8", b'{"messages": [{"role": "user", "content": "\xc0\xaf"}]}', 400, "invalid_request_error"),
    ("nul escape", b'{"messages": [{"role": "user", "content": "a\\u0000b"}]}', 400, "invalid_request_error"),
    ("duplicate key", b'{"messages": [], "messages": []}', 400, "invalid_request_error"),
    ("deep nesting", b'{"x": ' + b'[' * 5000 + b']' * 5000 + b', "messages": []}', 400, "invalid_request_error"),
    ("nesting past the limit", b'{"x": ' + b'[' * 40 + b']' * 40 + b'}', 400, "invalid_request_error"),
]

BAD_FIELDS = [
    {},  # missing messages
    {"messages": None},
    {"messages": []},
    {"messages": "hi"},
    {"messages": [1]},
    {"messages": [{"content": "no role"}]},
    {"messages": [{"role": 5, "content": "x"}]},
    {"messages": [{"role": "user", "content": 5}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]},
    {"messages": [{"role": "us er", "content": "x"}]},
    {"messages": GOOD_MSGS, "temperature": "hot"},
    {"messages": GOOD_MSGS, "temperature": -1},
    {"messages": GOOD_MSGS, "temperature": 1000},
    {"messages": GOOD_MSGS, "top_p": 2},
    {"messages": GOOD_MSGS, "top_k": 1.5},
    {"messages": GOOD_MSGS, "top_k": -3},
    {"messages": GOOD_MSGS, "min_p": "0.1"},
    {"messages": GOOD_MSGS, "max_tokens": "10"},
    {"messages": GOOD_MSGS, "max_tokens": 0},
    {"messages": GOOD_MSGS, "max_tokens": 10 ** 30},
    {"messages": GOOD_MSGS, "seed": "abc"},
    {"messages": GOOD_MSGS, "stop": 5},
    {"messages": GOOD_MSGS, "stop": [1, 2]},
    {"messages": GOOD_MSGS, "stop": ["a"] * 17},
    {"messages": GOOD_MSGS, "stop": "x" * 300},
    {"messages": GOOD_MSGS, "stream": "yes"},
    {"messages": GOOD_MSGS, "stream_options": 3},
    {"messages": GOOD_MSGS, "logprobs": 3},
    {"messages": GOOD_MSGS, "top_logprobs": 3},
    {"messages": GOOD_MSGS, "logprobs": True, "top_logprobs": 99},
    {"messages": GOOD_MSGS, "n": 2},
    {"messages": GOOD_MSGS, "tools": [{"type": "function", "function": {"name": "f"}}]},
    {"messages": GOOD_MSGS, "response_format": {"type": "json_object"}},
    {"messages": GOOD_MSGS, "frequency_penalty": 0.5},
    {"messages": GOOD_MSGS, "repeat_penalty": 0},
    {"messages": GOOD_MSGS, "model": 12},
    {"messages": [{"role": "assistant", "content": "x"}] * 2 + [{"role": "user", "content": "y"}], "max_tokens": [1]},
]


@pytest.mark.parametrize("name,raw,status,etype", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_bodies(srv, name, raw, status, etype):
    st, data = srv.post(CHAT, None, raw=raw, headers=AUTH)
    error_of(st, data, status, etype)


@pytest.mark.parametrize("body", BAD_FIELDS, ids=[str(i) for i in range(len(BAD_FIELDS))])
def test_bad_fields(srv, body):
    st, data = srv.post(CHAT, body, headers=AUTH)
    err = error_of(st, data, 400, "invalid_request_error")
    assert len(err["message"]) < 300


def test_bad_completion_and_token_fields(srv):
    for path, body in [("/v1/completions", {}), ("/v1/completions", {"prompt": 5}),
                       ("/v1/completions", {"prompt": ["a", "b"]}), ("/v1/completions", {"prompt": [1, -2]}),
                       ("/v1/completions", {"prompt": [10 ** 9]}), ("/v1/completions", {"prompt": [], "max_tokens": 1}),
                       ("/tokenize", {}), ("/tokenize", {"content": 3}), ("/tokenize", {"content": "x", "add_special": 1}),
                       ("/detokenize", {}), ("/detokenize", {"tokens": "abc"}), ("/detokenize", {"tokens": ["abc"]}),
                       ("/detokenize", {"tokens": [-1]}),
                       ("/detokenize", {"tokens": [1 << 40]}), ("/detokenize", {"tokens": [99999999]})]:
        st, data = srv.post(path, body, headers=AUTH)
        error_of(st, data, 400, "invalid_request_error")
    still_serving(srv)


def test_huge_bodies(srv):
    big = b'{"prompt": "' + b"a" * (2 << 20) + b'"}'
    st, data = srv.post("/v1/completions", None, raw=big, headers=AUTH)
    error_of(st, data, 413)
    # the same without Content-Length (chunked): refused while it arrives, the body never kept
    req = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Authorization: Bearer " + KEY.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"a" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    out = raw_http(srv.port, req + body, read_until=b"}}")
    assert b" 413 " in out.split(b"\r\n")[0], out[:200]
    # announced far too large: refused before a byte of it is read
    req = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: 100000000000\r\n\r\n")
    out = raw_http(srv.port, req, read_until=b"}}")
    assert b" 413 " in out.split(b"\r\n")[0], out[:200]
    # chunked and endless: refused after the drain bound
    req = req.replace(b"Content-Length: 100000000000", b"Transfer-Encoding: chunked")
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    s.sendall(req)
    got = b""
    try:
        for _ in range(400):
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except OSError:
        pass
    try:
        got = s.recv(65536)
    except OSError:
        pass
    s.close()
    assert got == b"" or b" 413 " in got.split(b"\r\n")[0], got[:200]
    still_serving(srv)


def test_context_overflow(srv):
    long_text = "The quick brown fox jumps over the lazy dog. " * 60
    st, data = srv.post(CHAT, {"messages": [{"role": "user", "content": long_text}]}, headers=AUTH)
    err = error_of(st, data, 400, "exceed_context_size_error")
    assert err["n_ctx"] == CTX and err["n_prompt_tokens"] > CTX
    client = openai.OpenAI(base_url=srv.base + "/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="SmolLM2-135M-Instruct.Q4_1", prompt=long_text, max_tokens=4)
    still_serving(srv)


def test_unknown_model(srv):
    st, data = srv.post(CHAT, {"model": "gpt-17", "messages": GOOD_MSGS}, headers=AUTH)
    error_of(st, data, 404, "not_found_error")
    # the file's name and no model at all are fine
    st, data = srv.post(CHAT, {"model": "SmolLM2-135M-Instruct.Q4_1", "messages": GOOD_MSGS, "max_tokens": 1},
                        headers=AUTH)
    assert st == 200, data


def test_keys(srv):
    for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer " + KEY + "x"},
                    {"Authorization": "Bearer " + KEY[:-1]}, {"Authorization": KEY}, {"Authorization": "Basic " + KEY}]:
        for method, path in [("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/props"), ("POST", CHAT),
                             ("POST", "/v1/completions"), ("POST", "/tokenize"), ("POST", "/detokenize")]:
            st, data = srv.request(method, path, body={"messages": GOOD_MSGS} if method == "POST" else None,
                                   headers=headers)
            error_of(st, data, 401, "authentication_error")
    assert srv.get("/health")[0] == 200  # no key needed
    client = openai.OpenAI(base_url=srv.base + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    good = openai.OpenAI(base_url=srv.base + "/v1", api_key=KEY, max_retries=0)
    assert good.models.list().data


def test_paths_methods_types(srv):
    error_of(*srv.get("/v1/nothing", AUTH), 404)
    error_of(*srv.get("/../../etc/passwd", AUTH), 404)
    error_of(*srv.get(CHAT, AUTH), 405)
    error_of(*srv.request("DELETE", "/v1/models", headers=AUTH), 405)
    st, data = srv.post(CHAT, None, raw=json.dumps({"messages": GOOD_MSGS}).encode(),
                        headers=dict(AUTH, **{"Content-Type": "text/plain"}))
    error_of(st, data, 415)
    st, data = srv.post(CHAT, None, raw=b"messages=hi",
                        headers=dict(AUTH, **{"Content-Type": "application/x-www-form-urlencoded"}))
    error_of(st, data, 415)


def test_broken_clients(srv):
    # half a body, then the client leaves; garbage instead of HTTP; a header line that never ends
    for raw in [b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
                b"Authorization: Bearer " + KEY.encode() + b"\r\n\r\n{\"prompt\":",
                b"\x00\x01\x02garbage\r\n\r\n", b"GET /health HTTP/1.1\r\nX-" + b"a" * 100000]:
        s = socket.create_connection(("127.0.0.1", srv.port))
        try:
            s.sendall(raw)
        except OSError:
            pass
        s.close()
    still_serving(srv)


def stream_request(srv, max_tokens, results, key):
    body = {"prompt": "Once upon a time", "max_tokens": max_tokens, "temperature": 0, "stream": True}
    results[key] = srv.post("/v1/completions", body, headers=AUTH)


def test_queue_full_is_503(srv):
    # -np 1 --queue 1: one running, one waiting, the third refused
    results = {}
    threads = [threading.Thread(target=stream_request, args=(srv, 60, results, i)) for i in range(2)]
    threads[0].start()
    t0 = time.time()
    while srv.metrics(AUTH)["hearth_requests_running"] < 1:
        assert time.time() - t0 < 60
        time.sleep(0.01)
    threads[1].start()
    while srv.metrics(AUTH)["hearth_requests_queued"] < 1:
        assert time.time() - t0 < 60
        time.sleep(0.01)
    st, data = srv.post("/v1/completions", {"prompt": "x", "max_tokens": 1}, headers=AUTH)
    error_of(st, data, 503, "unavailable_error")
    for t in threads:
        t.join(300)
    assert [results[i][0] for i in range(2)] == [200, 200]
    for i in range(2):
        assert sse_events(results[i][1])[-1] == "[DONE]"
    assert srv.metrics(AUTH)["hearth_requests_rejected_total"] >= 1
    still_serving(srv)


def test_timeout():
    s = Server("-np", "1", "-c", 512, "--timeout", 1, "--single-process")
    try:
        st, data = s.post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 400, "temperature": 0})
        assert st != 200, "the answer came within the 1 s timeout: make it longer on this machine (%s)" % data[:200]
        error_of(st, data, 504, "timeout_error")
        st, data = s.post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 400, "temperature": 0,
                                              "stream": True})
        assert st == 200
        events = sse_events(data)
        assert "error" in json.loads(events[-1]), events[-3:]
        assert s.metrics()["hearth_requests_timed_out_total"] == 2
        st, data = s.post("/v1/completions", {"prompt": "Hi", "max_tokens": 1})
        assert st == 200
    finally:
        assert s.stop() == 0, s.errtext()
