#!/usr/bin/env python3
"""serve_load: a bounded load on an OpenAI-compatible server (hearth serve or llama-server), loopback only.

  serve_load.py --url http://127.0.0.1:8080 [--clients 32] [--duration 60] [--max-tokens 64] [--pid PID]

N clients (asyncio + aiohttp), each in a loop: a streamed /v1/chat/completions
request with one of a few short conversations (greedy, max_tokens tokens),
until the duration is over. Reports completed requests/s, aggregate
generated tokens/s (usage, or content chunks where a server sends no usage),
p50/p99 time to first token (first content chunk), the statuses (503s from a
queue bound are counted apart from errors), and with --pid the resident
memory of that process and its descendants at start, middle and end. With
--check-hearth, afterwards /metrics must show no request running or queued
(no leaked slot). Prints one JSON line at the end (--label names it).

Not a ctest test: a benchmark (tests/bench). Figures of a run are in docs/serve.md.
"""
import argparse
import asyncio
import json
import os
import statistics
import sys
import time

import aiohttp

PROMPTS = ["What is the capital of France?", "Name three animals that live in the sea.", "Write a haiku about rain.",
           "Give me a tip for sleeping well.", "Why is the sky blue?", "Explain what a CPU does in one paragraph.",
           "List four fruits.", "What is 12 times 12?"]


def rss_tree(pid):
    """Resident bytes of pid and all its descendants (the hearth workers are children of the coordinator)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            for t in os.listdir("/proc/%d/task" % p):
                with open("/proc/%d/task/%s/children" % (p, t)) as f:
                    todo += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return total


async def one_request(session, args, i, stats):
    body = {"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": args.max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    if args.model:
        body["model"] = args.model
    t0 = time.perf_counter()
    ttft = None
    chunks = 0
    usage = None
    try:
        async with session.post(args.url + "/v1/chat/completions", json=body) as r:
            if r.status != 200:
                await r.read()
                stats["status"][r.status] = stats["status"].get(r.status, 0) + 1
                return
            buf = b""
            async for data in r.content.iter_any():
                buf += data
                while b"\n\n" in buf:
                    ev, buf = buf.split(b"\n\n", 1)
                    ev = ev.strip()
                    if not ev.startswith(b"data: "):
                        continue
                    payload = ev[6:]
                    if payload == b"[DONE]":
                        continue
                    j = json.loads(payload)
                    if "error" in j:
                        stats["stream_errors"] += 1
                        continue
                    if j.get("usage"):
                        usage = j["usage"]
                    for c in j.get("choices") or []:
                        if (c.get("delta") or {}).get("content"):
                            chunks += 1
                            if ttft is None:
                                ttft = time.perf_counter() - t0
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        stats["errors"].append(repr(e))
        return
    stats["status"][200] = stats["status"].get(200, 0) + 1
    stats["done"] += 1
    stats["tokens"] += usage["completion_tokens"] if usage else chunks
    if ttft is not None:
        stats["ttft"].append(ttft)


async def client(session, args, k, deadline, stats):
    i = k
    while time.perf_counter() < deadline:
        await one_request(session, args, i, stats)
        i += args.clients


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--model", default=None)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--pid", type=int, default=0, help="server process: report its (and its children's) RSS")
    ap.add_argument("--check-hearth", action="store_true", help="afterwards /metrics shows nothing running or queued")
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    host = args.url.split("//")[1].split(":")[0].split("/")[0]
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        sys.exit("serve_load: loopback only (got %s)" % host)
    headers = {"Authorization": "Bearer " + args.api_key} if args.api_key else {}
    stats = {"done": 0, "tokens": 0, "ttft": [], "status": {}, "errors": [], "stream_errors": 0}
    rss = []
    timeout = aiohttp.ClientTimeout(total=600)
    conn = aiohttp.TCPConnector(limit=args.clients + 4)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=conn) as session:
        if args.pid:
            rss.append(rss_tree(args.pid))
        t0 = time.perf_counter()
        deadline = t0 + args.duration
        tasks = [asyncio.create_task(client(session, args, k, deadline, stats)) for k in range(args.clients)]
        if args.pid:
            await asyncio.sleep(args.duration / 2)
            rss.append(rss_tree(args.pid))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
        if args.pid:
            rss.append(rss_tree(args.pid))
        leaked = None
        if args.check_hearth:
            await asyncio.sleep(0.5)
            async with session.get(args.url + "/metrics") as r:
                text = await r.text()
            m = {l.split()[0]: float(l.split()[1]) for l in text.splitlines() if l and not l.startswith("#")}
            leaked = {"running": m["hearth_requests_running"], "queued": m["hearth_requests_queued"]}
    ttft = sorted(stats["ttft"])

    def pct(p):
        return ttft[min(len(ttft) - 1, int(p / 100 * len(ttft)))] if ttft else float("nan")

    out = {
        "label": args.label, "clients": args.clients, "duration_s": round(elapsed, 2), "max_tokens": args.max_tokens,
        "requests_done": stats["done"], "requests_per_s": round(stats["done"] / elapsed, 3),
        "tokens_per_s": round(stats["tokens"] / elapsed, 2),
        "ttft_p50_ms": round(pct(50) * 1e3, 1), "ttft_p99_ms": round(pct(99) * 1e3, 1),
        "ttft_mean_ms": round(statistics.mean(ttft) * 1e3, 1) if ttft else None,
        "status": stats["status"], "errors": len(stats["errors"]) + stats["stream_errors"],
        "error_examples": stats["errors"][:3], "rss_bytes": rss, "leaked_slots": leaked,
    }
    print(json.dumps(out))
    bad = out["errors"] or any(s not in (200, 503) for s in stats["status"]) or (leaked and any(leaked.values()))
    sys.exit(1 if bad else 0)


asyncio.run(main())
