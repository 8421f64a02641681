#!/usr/bin/env python3
"""test_cli: drives the real `hearth` binary as a user would.

usage: test_cli.py HEARTH_BINARY GROUP
GROUP: errors (no model needed) | model (needs HEARTH_TEST_MODEL; exit 77 to skip when absent)

Every check prints what it ran; the first failure exits 1 with the command,
its exit status and its stderr.
"""
import json
import os
import subprocess
import sys
import tempfile

HEARTH = sys.argv[1]
GROUP = sys.argv[2]
MODEL = os.environ.get("HEARTH_TEST_MODEL", "")


def run(args, stdin=None, timeout=600):
    p = subprocess.run([HEARTH] + args, input=stdin, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def check(cond, what, res=None):
    if not cond:
        print("FAIL:", what)
        if res:
            print("  exit:", res[0])
            print("  stdout:", res[1][:2000])
            print("  stderr:", res[2][:2000])
        sys.exit(1)
    print("ok:", what)


def expect_error(args, needle, what):
    res = run(args)
    rc, out, err = res
    check(rc != 0, what + ": non-zero exit", res)
    lines = [l for l in err.strip().splitlines() if l]
    check(len(lines) >= 1 and needle in err, what + ": message mentions %r" % needle, res)
    check("Segmentation" not in err and "AddressSanitizer" not in err and "runtime error" not in err,
          what + ": no crash", res)


def errors():
    rc, out, err = run(["--help"])
    check(rc == 0 and "usage: hearth" in out, "--help prints usage", (rc, out, err))
    expect_error(["frobnicate"], "unknown command", "unknown command")
    expect_error(["run", "--bogus"], "unknown option", "unknown option")
    expect_error(["run", "-n", "abc", "-p", "x", "-m", "/nonexistent.gguf"], "-n expects an integer", "bad -n")
    expect_error(["run", "-m", "/nonexistent.gguf"], "no prompt", "missing prompt")
    expect_error(["run", "-m", "/nonexistent/model.gguf", "-p", "hi"], "/nonexistent/model.gguf", "missing model file")
    expect_error(["perplexity", "-m", "/nonexistent.gguf"], "-f", "perplexity without text")
    expect_error(["run", "-p", "x", "--kv-score", "max"], "--kv-score expects sum or mean", "bad --kv-score")
    expect_error(["run", "-p", "x", "--kv-decay", "0"], "--kv-decay expects a number", "--kv-decay 0")
    expect_error(["run", "-p", "x", "--kv-budget", "0.2", "--kv-score", "mean", "--kv-decay", "0.9"],
                 "does not apply to --kv-score mean", "--kv-decay with the mean ranking")
    expect_error(["bench", "-d", "512,,1024"], "expects depths like", "empty depth in -d")
    expect_error(["bench", "-d", ",".join(["64"] * 9)], "at most 8 depths", "too many depths")
    expect_error(["bench", "--parallel", "1,0"], "--parallel", "a zero sequence count")
    expect_error(["run", "-np", "0", "-p", "x"], "-np", "-np 0")
    expect_error(["batch", "-p", "x"], "-f FILE", "batch without a prompt file")
    expect_error(["profile", "-f", "x", "--sparsity", "1.5"], "--sparsity expects a number", "bad --sparsity")
    expect_error(["plan", "--gpu-budget", "-3M"], "expects a size", "negative --gpu-budget")
    with tempfile.TemporaryDirectory() as d:
        junk = os.path.join(d, "junk.gguf")
        with open(junk, "wb") as f:
            f.write(b"NOTAGGUFFILE" * 10)
        expect_error(["info", "-m", junk], "junk.gguf", "not a GGUF file")
        expect_error(["run", "-m", junk, "-p", "hi"], "junk.gguf", "run on a non-GGUF file")
        empty = os.path.join(d, "empty.gguf")
        open(empty, "wb").close()
        expect_error(["tokenize", "-m", empty, "-p", "hi"], "empty.gguf", "empty file")
        if MODEL and os.path.exists(MODEL):
            # a truncated copy of the real model: the error names the file and does not crash
            trunc = os.path.join(d, "trunc.gguf")
            with open(MODEL, "rb") as src, open(trunc, "wb") as dst:
                dst.write(src.read(5_000_000))
            expect_error(["run", "-m", trunc, "-p", "hi", "-n", "4"], "trunc.gguf", "truncated model")


def model():
    if not MODEL or not os.path.exists(MODEL):
        print("SKIP: the default model is not at HEARTH_TEST_MODEL=%r (run `hearth fetch`)" % MODEL)
        sys.exit(77)
    m = ["-m", MODEL]
    res = run(["info"] + m)
    check(res[0] == 0 and "tensors (272)" in res[1] and "token_embd.weight" in res[1]
          and "llama.block_count" in res[1], "info lists metadata and 272 tensors", res)

    res = run(["tokenize"] + m + ["-p", "Hello world"])
    check(res[0] == 0 and res[1].strip() == "19556 905", "tokenize 'Hello world'", res)
    res = run(["tokenize"] + m + ["-p", "<|im_start|>user"])
    check(res[0] == 0 and res[1].split()[0] == "1", "tokenize maps <|im_start|> to the special token 1", res)

    args = ["run"] + m + ["-p", "The capital of France is", "-n", "24", "--temp", "0", "-t", "2"]
    a = run(args)
    check(a[0] == 0 and len(a[1].strip()) > 0, "greedy run produces text", a)
    b = run(args)
    check(b[1] == a[1], "greedy run is repeatable", b)
    c = run(args + ["--single-process"])
    check(c[1] == a[1], "--single-process gives the same greedy text", c)
    check("Paris" in a[1], "the model knows the capital of France", a)

    s1 = run(["run"] + m + ["-p", "Once upon a time", "-n", "24", "-s", "7", "--temp", "1.0"])
    s2 = run(["run"] + m + ["-p", "Once upon a time", "-n", "24", "-s", "7", "--temp", "1.0"])
    s3 = run(["run"] + m + ["-p", "Once upon a time", "-n", "24", "-s", "8", "--temp", "1.0"])
    check(s1[0] == 0 and s1[1] == s2[1], "same seed, same sample", s2)
    check(s3[1] != s1[1], "another seed, another sample", s3)

    res = run(["run"] + m + ["--chat", "-p", "What is 2+2?", "-n", "32", "--temp", "0"])
    check(res[0] == 0 and "4" in res[1] and "<|im_end|>" not in res[1], "--chat answers and stops at <|im_end|>", res)

    res = subprocess.run([HEARTH, "chat"] + m + ["--temp", "0", "-n", "24"], input=b"Hi!\nWhat is 2+2?\n",
                         capture_output=True, timeout=600)
    out = res.stdout.decode("utf-8", "replace")
    check(res.returncode == 0 and len([l for l in out.splitlines() if l.strip()]) >= 2, "chat answers two turns",
          (res.returncode, out, res.stderr.decode()))

    res = run(["bench"] + m + ["-p", "32", "-n", "8", "-r", "1", "--json", "-t", "2"])
    check(res[0] == 0, "bench --json runs", res)
    j = json.loads(res[1].strip().splitlines()[-1])
    for key in ("pp_tokens_per_s", "tg_tokens_per_s", "peak_rss_bytes", "kv_bytes", "attn_ms_per_token",
                "weight_bytes_per_token", "effective_bandwidth_bytes_per_s", "read_bandwidth_bytes_per_s"):
        check(key in j and j[key] > 0, "bench --json has %s > 0" % key, res)
    # the floor: a token reads every weight once (dense), at tg's rate; the probe ran in a child process
    check(j["weight_bytes_per_token"] == j["weight_bytes"]
          and abs(j["effective_bandwidth_bytes_per_s"] - j["weight_bytes"] * j["tg_tokens_per_s"])
          <= 1e-3 * j["effective_bandwidth_bytes_per_s"] + 1
          and j["read_bandwidth_bytes_per_s"] > 1e8, "bench --json: the bandwidth floor's figures agree", res)

    # many sequences at once: one process and runtime, the KV cache of N sequences each
    res = run(["bench"] + m + ["--parallel", "1,3", "-p", "16", "-n", "4", "-r", "1", "--json", "-t", "2"])
    check(res[0] == 0, "bench --parallel runs", res)
    j = json.loads(res[1].strip().splitlines()[-1]) if res[0] == 0 else {}
    par = j.get("parallel", [])
    check([p["n"] for p in par] == [1, 3]
          and all(p[mode]["pp_tokens_per_s"] > 0 and p[mode]["tg_tokens_per_s"] > 0
                  for p in par for mode in ("single_process", "runtime"))
          and par[1]["single_process"]["kv_bytes"] == 3 * par[0]["single_process"]["kv_bytes"]
          and par[1]["runtime"]["kv_bytes"] == par[1]["single_process"]["kv_bytes"]
          and par[0]["runtime"]["tg_speedup_vs_1"] == 1.0, "bench --parallel: both modes, KV bytes x N", res)
    res = run(["batch"] + m + ["-f", "/nonexistent/prompts.txt"])
    check(res[0] != 0 and "prompts.txt" in res[2], "batch names a missing prompt file", res)
    with tempfile.TemporaryDirectory() as d:
        pf = os.path.join(d, "p.txt")
        with open(pf, "w") as f:
            f.write("The capital of France is\n\nOnce upon a time\n1, 2, 3,\n")
        one = run(["batch"] + m + ["-f", pf, "-n", "12", "--temp", "0", "-np", "1", "--single-process"])
        three = run(["batch"] + m + ["-f", pf, "-n", "12", "--temp", "0", "-np", "3"])
        check(one[0] == 0 and one[1].count("--- [") == 3 and "Paris" in one[1], "batch: one result per prompt", one)
        check(three[0] == 0 and sorted(three[1].split("--- [")) == sorted(one[1].split("--- [")),
              "batch -np 3 through the runtime gives each prompt's text alone", three)

    # a KV budget: the full cache of the same type runs beside it, both measured at every depth
    res = run(["bench"] + m + ["-c", "256", "-p", "0", "-n", "4", "-d", "16,200", "-r", "1", "--json", "-t", "2",
                               "--kv-budget", "0.25", "--kv-type", "f16", "--kv-decay", "0.95"])
    check(res[0] == 0, "bench with a KV budget runs", res)
    j = json.loads(res[1].strip().splitlines()[-1]) if res[0] == 0 else {}
    tg = j.get("tg", [])
    check(j.get("ref") == "full KV" and [t["depth"] for t in tg] == [16, 200]
          and all(t["tokens_per_s"] > 0 and t["ref_tokens_per_s"] > 0 and t["attn_ms_per_token"] > 0
                  and t["ref_attn_ms_per_token"] > 0 for t in tg)
          and 0 < j["kv_bytes"] and j["kv_budget"] == 64, "bench --kv-budget: both caches at both depths", res)

    with tempfile.TemporaryDirectory() as d:
        text = os.path.join(d, "text.txt")
        with open(text, "w") as f:
            f.write(("The quick brown fox jumps over the lazy dog. " * 40 +
                     "It was the best of times, it was the worst of times. ") * 2)
        res = run(["perplexity"] + m + ["-f", text, "-c", "128", "-t", "2"])
        last = res[1].strip().splitlines()[-1] if res[1].strip() else ""
        check(res[0] == 0 and last.startswith("PPL = "), "perplexity ends with PPL = <number>", res)
        ppl = float(last.split("=")[1])
        # a text that repeats itself is nearly certain to the model in the scored second halves
        check(1.0 <= ppl < 3.0, "perplexity of repetitive text is low (%.3f)" % ppl, res)
        res = run(["perplexity"] + m + ["-f", text, "-c", "100000"])
        check(res[0] != 0 and "chunk" in res[2], "perplexity on too short a text explains", res)


{"errors": errors, "model": model}[GROUP]()
print("all passed")
