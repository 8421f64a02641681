"""test_serve: `hearth serve` driven by the official openai client (and raw HTTP where the client hides things).

Chat and completions, streamed and not; stop strings, max_tokens, seeds;
usage equal to the tokenizer's counts; greedy answers identical to
`hearth run --chat --temp 0`; logprobs; tokenize/detokenize; models, health,
metrics, props. One server (multi-process runtime, -np 2) for the module.
"""
import json
import math

import gguf
import jinja2
import openai
import pytest

from test_serve_util import MODEL, Server, hearth_run, hearth_tokenize, require_model, sse_events

require_model()
CTX = 1024
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def srv():
    s = Server("-np", "2", "-c", CTX, "--alias", "smol", "-v")
    yield s
    assert s.stop() == 0, s.errtext()


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.base + "/v1", api_key="unused", max_retries=0, timeout=300)


def chat_template():
    r = gguf.GGUFReader(MODEL)
    f = r.fields["tokenizer.chat_template"]
    return bytes(f.parts[f.data[0]]).decode()


def test_health_was_503_while_loading(srv):
    assert srv.health_seen[0] == 503, srv.health_seen
    assert srv.health_seen[-1] == 200


def test_models(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["smol"]


def test_chat_greedy_matches_hearth_run(client):
    expected = hearth_run("--chat", "-p", QUESTION, "-n", 40, "--temp", 0, "-c", CTX)
    r = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": QUESTION}],
                                       max_tokens=40, temperature=0)
    assert r.choices[0].message.content == expected
    assert r.choices[0].message.role == "assistant"
    # streamed: the same text, chunk by chunk, one id
    chunks = list(client.chat.completions.create(model="smol", messages=[{"role": "user", "content": QUESTION}],
                                                 max_tokens=40, temperature=0, stream=True))
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert len(chunks) > 5  # really streamed token by token


def test_completion_stream_and_not(client, srv):
    prompt = "The three primary colors are"
    expected = hearth_run("-p", prompt, "-n", 24, "--temp", 0, "-c", CTX)
    r = client.completions.create(model="smol", prompt=prompt, max_tokens=24, temperature=0)
    assert r.choices[0].text == expected
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 24
    stream = list(client.completions.create(model="smol", prompt=prompt, max_tokens=24, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in stream if c.choices) == expected
    # the raw SSE: data: {json} chunks sharing one id, then data: [DONE]
    status, body = srv.post("/v1/completions", {"prompt": prompt, "max_tokens": 5, "temperature": 0, "stream": True})
    assert status == 200
    events = sse_events(body)
    assert events[-1] == "[DONE]"
    ids = {json.loads(e)["id"] for e in events[:-1]}
    assert len(ids) == 1


def test_max_tokens_and_usage(client):
    for n in (1, 7):
        r = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Tell me a story."}],
                                           max_tokens=n, temperature=0)
        assert r.choices[0].finish_reason == "length"
        assert r.usage.completion_tokens == n
        assert r.usage.total_tokens == r.usage.prompt_tokens + n


def test_usage_equals_tokenizer_counts(client, srv):
    # chat: the template rendered by Jinja2 from the GGUF (independent of hearth's renderer), tokenized by hearth tokenize
    msgs = [{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Name a color."}]
    rendered = jinja2.Template(chat_template()).render(messages=msgs, add_generation_prompt=True)
    r = client.chat.completions.create(model="smol", messages=msgs, max_tokens=12, temperature=0, logprobs=True)
    assert r.usage.prompt_tokens == len(hearth_tokenize(rendered))
    # completion tokens: the ids the server generated (logprobs) decode to the text
    ids = [t.model_extra["id"] if t.model_extra and "id" in t.model_extra else None for t in r.choices[0].logprobs.content]
    assert len(ids) == r.usage.completion_tokens
    status, out = srv.post_json("/detokenize", {"tokens": ids})
    assert status == 200 and out["content"] == r.choices[0].message.content
    # completions: the prompt's ids are hearth tokenize's (this model adds no BOS)
    prompt = "Paris is the capital of"
    r = client.completions.create(model="smol", prompt=prompt, max_tokens=3, temperature=0)
    assert r.usage.prompt_tokens == len(hearth_tokenize(prompt))
    # a prompt given as ids is taken as is
    ids = hearth_tokenize(prompt)
    r2 = client.completions.create(model="smol", prompt=ids, max_tokens=3, temperature=0)
    assert r2.usage.prompt_tokens == len(ids) and r2.choices[0].text == r.choices[0].text


def test_stop_strings(client):
    msgs = [{"role": "user", "content": "List five fruits, one per line."}]
    full = client.chat.completions.create(model="smol", messages=msgs, max_tokens=60, temperature=0)
    text = full.choices[0].message.content
    words = [w for w in text.split() if len(w) >= 4]
    assert len(words) >= 3, text
    stop = words[2]
    cut = text[:text.index(stop)]
    r = client.chat.completions.create(model="smol", messages=msgs, max_tokens=60, temperature=0, stop=stop)
    assert r.choices[0].message.content == cut
    assert r.choices[0].finish_reason == "stop"
    # a list, the earliest match wins; streamed the same (the held-back prefix of a stop never leaks)
    r = client.chat.completions.create(model="smol", messages=msgs, max_tokens=60, temperature=0,
                                       stop=["zzzz-never", stop, words[-1]])
    assert r.choices[0].message.content == cut
    chunks = list(client.chat.completions.create(model="smol", messages=msgs, max_tokens=60, temperature=0,
                                                 stop=[stop], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == cut
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_seed_determinism(client):
    msgs = [{"role": "user", "content": "Write a sentence about the sea."}]

    def ask(seed):
        return client.chat.completions.create(model="smol", messages=msgs, max_tokens=24, temperature=1.0, top_p=1,
                                              seed=seed).choices[0].message.content

    a, b = ask(1234), ask(1234)
    assert a == b
    others = {ask(s) for s in (1, 2, 3)}
    assert len(others | {a}) > 1  # the seed matters


def test_repeat_penalty_changes_the_answer(client):
    msgs = [{"role": "user", "content": "Say 'la' twenty times."}]
    plain = client.chat.completions.create(model="smol", messages=msgs, max_tokens=30, temperature=0)
    pen = client.chat.completions.create(model="smol", messages=msgs, max_tokens=30, temperature=0,
                                         extra_body={"repeat_penalty": 1.5})
    assert plain.choices[0].message.content != pen.choices[0].message.content


def test_logprobs(client):
    r = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": QUESTION}], max_tokens=8,
                                       temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        tops = [x.logprob for x in t.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert t.logprob == pytest.approx(tops[0])  # greedy: the chosen token is the most likely
        assert t.logprob <= 0 and sum(math.exp(x) for x in tops) <= 1 + 1e-4
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token
    # legacy completions: logprobs = N
    r = client.completions.create(model="smol", prompt="Hello", max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 4 and len(lp.token_logprobs) == 4 and all(len(t) <= 2 for t in lp.top_logprobs)
    assert "".join(lp.tokens) == r.choices[0].text


def test_tokenize_detokenize(srv):
    text = "Hello <|im_start|>world, 12345!"
    status, out = srv.post_json("/tokenize", {"content": text})
    assert status == 200 and out["tokens"] == hearth_tokenize(text)
    status, pieces = srv.post_json("/tokenize", {"content": text, "with_pieces": True})
    assert [p["id"] for p in pieces["tokens"]] == out["tokens"]
    assert "".join(p["piece"] for p in pieces["tokens"]) == text
    status, back = srv.post_json("/detokenize", {"tokens": out["tokens"]})
    assert status == 200 and back["content"] == text


def test_metrics_and_props(srv, client):
    client.completions.create(model="smol", prompt="One", max_tokens=2, temperature=0)
    m = srv.metrics()
    for name in ["hearth_tokens_generated_total", "hearth_prompt_tokens_total", "hearth_tokens_per_second",
                 "hearth_requests_queued", "hearth_requests_running", "hearth_kv_cache_tokens",
                 "hearth_kv_cache_usage_ratio", "hearth_worker_restarts_total", 'hearth_requests_total{code="200"}']:
        assert name in m, name
    assert m["hearth_slots"] == 2 and m["hearth_tokens_generated_total"] >= 2
    status, body = srv.get("/props")
    props = json.loads(body)
    assert status == 200 and props["n_ctx"] == CTX and props["runtime"] == "multi-process"
    assert props["kv_cache"]["policy"] == "dense" and "sparsity" in props


def test_prefix_reuse(client):
    msgs = [{"role": "user", "content": "Describe a cat in detail, please, with many words."}]
    client.chat.completions.create(model="smol", messages=msgs, max_tokens=4, temperature=0)
    r = client.chat.completions.create(model="smol", messages=msgs, max_tokens=4, temperature=0)
    assert r.usage.prompt_tokens_details.cached_tokens > 0


def test_page(srv):
    status, body = srv.get("/")
    assert status == 200 and b"<html" in body.lower() and b"/v1/chat/completions" in body
