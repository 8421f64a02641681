#!/usr/bin/env python3
"""test_hotcold: the sparse hot/cold pipeline end to end, through the CLI.

usage: test_hotcold.py HEARTH_BINARY CORPUS_SCRIPT

1. `hearth profile` on a small slice of the calibration text, then
   `hearth plan` at a GPU budget that leaves cold neurons in every layer;
   the plan's table respects the budget and the SVG is well-formed.
2. Exactness: with the same sidecar, the multi-process runtime (1 and 2 CPU
   workers, predictors on the cold shards) gives the same greedy tokens and
   the same perplexity as the single-process engine.
3. The sparse FFN really is sparse (it reads less than the dense FFN) and
   stays close to the dense model.
4. Bad input: each mistake gets its own clear error.
Needs HEARTH_TEST_MODEL (exit 77 to skip when absent).
"""
import json
import os
import re
import sys
import tempfile
import xml.dom.minidom

from cli_util import Cli, check, corpus_texts, ppl

HEARTH, CORPUS = sys.argv[1], sys.argv[2]
CLI = Cli(HEARTH)
run, ok, expect_error = CLI.run, CLI.ok, CLI.expect_error
MODEL = os.environ.get("HEARTH_TEST_MODEL", "")


def main():
    if not MODEL or not os.path.exists(MODEL):
        print("skip: HEARTH_TEST_MODEL is not set")
        return 77
    with tempfile.TemporaryDirectory() as tmp:
        texts = corpus_texts(CORPUS, tmp)
        if texts is None:
            return 77
        calib, evaluation = texts
        sc = os.path.join(tmp, "m.hearth.gguf")
        m = ["-m", MODEL, "-t", "2"]

        # 1. profile + plan
        res = ok(["profile"] + m + ["-f", calib, "-o", sc, "--tokens", "384", "-c", "128", "--sparsity", "0.5"],
                 "profile 384 tokens")
        rows = [l for l in res[1].splitlines() if re.match(r"^\s+\d+\s", l)]
        check(len(rows) == 30, "profile prints one row per layer")
        check(os.path.exists(sc) and os.path.exists(sc[:-5] + ".svg"), "sidecar and SVG written")
        svg = xml.dom.minidom.parse(sc[:-5] + ".svg")
        check(len([e for e in svg.getElementsByTagName("path") if e.getAttribute("class") == "layer"]) == 30,
              "the SVG draws 30 layers")
        expect_error(["run"] + m + ["-p", "Hi", "-n", "2", "--sidecar", sc], "run hearth plan",
                     "an unplanned sidecar is refused")
        # predictors forced on: the runtime's predictor path is what this test is about
        res = ok(["plan"] + m + ["--sidecar", sc, "--gpu-budget", "80M", "-c", "256", "--epochs", "4",
                                 "--predictors", "on"], "plan at 80M")
        table = [l.split() for l in res[1].splitlines() if re.match(r"^\s+\d+\s+\d+\s", l)]
        check(len(table) == 30, "plan prints one row per layer", res)
        hot = [int(r[1]) for r in table]
        check(all(h % 32 == 0 and h < 1536 for h in hot) and sum(hot) > 0,
              f"hot counts are whole groups and leave cold neurons: {hot}", res)
        m_fixed = re.search(r"fixed ([0-9.]+) MiB.*hot neurons ([0-9.]+) MiB", res[1])
        check(m_fixed and float(m_fixed.group(1)) + float(m_fixed.group(2)) <= 80.0 + 1e-9,
              "fixed + hot bytes within the budget", res)
        recall = [float(r[6]) for r in table]
        check(min(recall) > 0.5, f"held-out recall per layer reported: min {min(recall):.3f}", res)

        # 2. exactness across processes
        prompts = ["The three primary colors are", "def fibonacci(n):", "Once upon a time"]
        for prompt in prompts:
            outs = []
            for mode in (["--single-process"], ["--cpu-workers", "1"], ["--cpu-workers", "2"]):
                res = ok(["run"] + m + ["-p", prompt, "-n", "24", "--temp", "0", "-c", "256", "--sidecar", sc] + mode,
                         f"run {prompt!r} {' '.join(mode)}")
                outs.append(res[1])
            check(outs[0] == outs[1] == outs[2] and outs[0].strip(),
                  f"same greedy text in one and two CPU workers as in one process: {outs[0]!r}")
        pp = ["perplexity"] + m + ["-f", evaluation, "-c", "128", "--chunks", "2"]
        single = ok(pp + ["--single-process", "--sidecar", sc], "perplexity, sparse, one process")
        multi = ok(pp + ["--cpu-workers", "2", "--sidecar", sc], "perplexity, sparse, runtime")
        check(ppl(single) == ppl(multi), f"same perplexity: {ppl(single)} and {ppl(multi)}")

        # 3. sparse, and close to dense
        dense = ok(pp + ["--single-process"], "perplexity, dense")
        read = re.search(r"read ([0-9.]+)% of the dense", single[2])
        check(read is not None and float(read.group(1)) < 100.0, "the sparse FFN reads less than the dense one",
              single)
        check(ppl(single) < 1.6 * ppl(dense), f"sparse perplexity {ppl(single)} near dense {ppl(dense)}")

        res = ok(["bench"] + m + ["-p", "8", "-n", "4", "-r", "1", "--json", "--sidecar", sc, "--cpu-workers", "1"],
                 "bench --sidecar: sparse beside dense")
        b = json.loads(res[1])
        check(0 < b["ffn_bytes_per_token"] < b["dense_ffn_bytes_per_token"] and b["ref_tg_tokens_per_s"] > 0
              and b["tg_tokens_per_s"] > 0, f"bench reports both modes: {b}")

        # 4. errors
        expect_error(["profile"] + m, "needs the calibration text", "profile without -f")
        expect_error(["plan"] + m + ["--sidecar", sc], "--gpu-budget", "plan without a budget")
        expect_error(["plan"] + m + ["--sidecar", sc, "--gpu-budget", "1M"], "budget", "a budget below the fixed bytes")
        expect_error(["plan"] + m + ["--sidecar", sc, "--gpu-budget", "12Q"], "expects a size", "a malformed size")
        expect_error(["plan"] + m + ["--sidecar", sc, "--gpu-budget", "80M", "--predictors", "maybe"],
                     "--predictors expects auto, on or off", "a bad --predictors")
        expect_error(["run"] + m + ["-p", "Hi", "--sidecar", MODEL], "is not a hearth sidecar", "a model as sidecar")
        expect_error(["run"] + m + ["-p", "Hi", "--sidecar", os.path.join(tmp, "none.gguf")], "none.gguf",
                     "a missing sidecar")
    return 0


if __name__ == "__main__":
    sys.exit(main())
