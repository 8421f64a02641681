#!/usr/bin/env python3
"""test_insparse_pipeline: input sparsity end to end, through the CLI.

usage: test_insparse_pipeline.py HEARTH_BINARY CORPUS_SCRIPT

1. `hearth profile --in-sparsity S --in-kernels always` on a small slice of
   the calibration text: the table of thresholds, densities and timings,
   and a sidecar with input sparsity and no plan, which runs as it is.
2. Exactness: with that sidecar the multi-process runtime (1 and 2 CPU
   workers: attention and the hot neurons' input-major copies in the GPU
   worker, the shards' in the CPU workers) gives the same greedy tokens and
   the same perplexity as the single-process engine; the masks change the
   model (its perplexity is not dense's) and stay near it.
3. With `hearth plan` on top: the plan's hot/cold FFN beside attention's
   masks, again the same in one process and through the runtime.
4. `--in-kernels auto` (the timed choice) and bench with such a sidecar.
5. Bad options get their own errors.
Needs HEARTH_TEST_MODEL (exit 77 to skip when absent).
"""
import json
import os
import re
import sys
import tempfile

from cli_util import Cli, check, corpus_texts, ppl

HEARTH, CORPUS = sys.argv[1], sys.argv[2]
CLI = Cli(HEARTH)
run, ok, expect_error = CLI.run, CLI.ok, CLI.expect_error
MODEL = os.environ.get("HEARTH_TEST_MODEL", "")


def same_runs(m, sc, what):
    for prompt in ["The three primary colors are", "def fibonacci(n):"]:
        outs = []
        for mode in (["--single-process"], ["--cpu-workers", "1"], ["--cpu-workers", "2"]):
            res = ok(["run"] + m + ["-p", prompt, "-n", "24", "--temp", "0", "-c", "256", "--sidecar", sc] + mode,
                     f"{what}: run {prompt!r} {' '.join(mode)}")
            outs.append(res[1])
        check(outs[0] == outs[1] == outs[2] and outs[0].strip(),
              f"{what}: the same greedy text in one and two CPU workers as in one process: {outs[0]!r}")


def main():
    if not MODEL or not os.path.exists(MODEL):
        print("skip: HEARTH_TEST_MODEL is not set")
        return 77
    with tempfile.TemporaryDirectory() as tmp:
        texts = corpus_texts(CORPUS, tmp)
        if texts is None:
            return 77
        calib, evaluation = texts
        sc = os.path.join(tmp, "in.hearth.gguf")
        m = ["-m", MODEL, "-t", "2"]
        prof = ["profile"] + m + ["-f", calib, "--tokens", "384", "-c", "128"]

        # 1. profile with input sparsity, every matrix input-major
        res = ok(prof + ["-o", sc, "--in-sparsity", "0.3", "--in-kernels", "always"], "profile --in-sparsity 0.3")
        rows = [l for l in res[1].splitlines() if re.match(r"^\s+\d+( +[0-9.]+\*){7}  qkv ", l)]
        check(len(rows) == 30, "one row per layer, every matrix input-major (*)", res)
        dens = [float(x) for l in rows for x in re.findall(r" ([0-9.]+)%", l)]
        check(len(dens) == 120 and all(55.0 < d < 85.0 for d in dens),
              f"the 120 inputs keep about 70% of their entries: {min(dens)}..{max(dens)}", res)
        share = re.search(r"about ([0-9.]+)% of the matrices' bytes read per token on the calibration text "
                          r"\(attention\s+([0-9.]+)%, FFN ([0-9.]+)%\); (\d+) of (\d+) matrices input-major", res[1])
        check(share and all(70.0 < float(share.group(k)) < 90.0 for k in (1, 2, 3))
              and share.group(4) == share.group(5) == "210", "the bytes read (attention, FFN) are below dense's", res)

        # 2. exactness across processes, and the masks' effect
        same_runs(m, sc, "input sparsity")
        pp = ["perplexity"] + m + ["-f", evaluation, "-c", "128", "--chunks", "2"]
        single = ok(pp + ["--single-process", "--sidecar", sc], "perplexity, input-sparse, one process")
        multi = ok(pp + ["--cpu-workers", "2", "--sidecar", sc], "perplexity, input-sparse, runtime")
        check(ppl(single) == ppl(multi), f"the same perplexity: {ppl(single)} and {ppl(multi)}")
        dense = ok(pp + ["--single-process"], "perplexity, dense")
        check(ppl(single) != ppl(dense) and ppl(single) < 1.5 * ppl(dense),
              f"the masks move the perplexity a little: {ppl(single)} against dense {ppl(dense)}")

        # 3. a plan on top: the hot/cold FFN, attention's inputs masked
        ok(["plan"] + m + ["--sidecar", sc, "--gpu-budget", "80M", "-c", "256", "--epochs", "2"], "plan at 80M")
        same_runs(m, sc, "plan and input sparsity")

        # 4. the timed choice; bench beside dense
        sc2 = os.path.join(tmp, "auto.hearth.gguf")
        res = ok(prof + ["-o", sc2, "--in-sparsity", "0.3"], "profile --in-sparsity 0.3 --in-kernels auto")
        t = re.search(r"decode time ([0-9.]+)% of dense's", res[1])
        check(t is not None, "the timed choice reports the matrices' decode time", res)
        res = ok(["bench"] + m + ["-p", "8", "-n", "4", "-r", "1", "--json", "--sidecar", sc2, "--single-process"],
                 "bench --sidecar: input sparsity beside dense")
        b = json.loads(res[1])
        check(b["tg_tokens_per_s"] > 0 and b["ref_tg_tokens_per_s"] > 0, f"bench reports both: {b}")

        # 5. errors
        expect_error(prof + ["-o", sc2, "--in-sparsity", "1.5"], "--in-sparsity", "an input sparsity of 1.5")
        expect_error(prof + ["-o", sc2, "--in-sparsity", "0.3", "--in-kernels", "maybe"],
                     "--in-kernels maybe: want auto or always", "a bad --in-kernels")
        expect_error(prof + ["-o", sc2, "--in-sparsity", "0.3", "--in-alloc", "random"],
                     "--in-alloc random: want uniform or greedy", "a bad --in-alloc")
    return 0


if __name__ == "__main__":
    sys.exit(main())
