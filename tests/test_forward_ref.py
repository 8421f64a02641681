#!/usr/bin/env python3
"""forward_ref: hearth's dense C forward pass against the independent NumPy oracle.

    test_forward_ref.py [--model GGUF] [--n-gen N] [--tmpdir DIR] FORWARD_DUMP
    test_forward_ref.py [--model GGUF] --oracle-only

The C side is `forward_dump -m MODEL -n N -o LOGITS.f32 -t 2 ID...`: float32 logits
[n_prompt + N, n_vocab] (row n_prompt-1+k chose generated token k) and the greedy
ids on stdout. The oracle is tests/reference/llama_numpy.py, which shares no code
with hearth (GGUF read and dequantized by the PyPI `gguf` package); it runs once
per prompt, in float32, and its answer serves both parts below.

Before comparing, the oracle checks itself: gguf's dequantization equals a decode
written here from the block layouts; batched prefill equals one-token-at-a-time
decoding; its greedy answer to "The capital of France is" starts with " Paris".
Then, for each prompt (short, ~100 tokens, chat template, code), two parts:

1. strict (the model math): an F32 copy of the model, written into a temporary
   directory by tests/reference/make_f32_model.py (same metadata, every tensor
   dequantized by gguf and stored as F32) and read back: GGUFReader must see the
   same keys, types, values, names, GGUF shapes, and weights bit-identical to the
   oracle's; forward_dump loads it (it validates every shape) and computes float32
   x float32 dot products, with no activation rounding. So both sides compute with
   the same weights in float32 and differ only by summation order. Required:
   greedy continuations identical for all N tokens and logits within STRICT_TOL.
   A divergence is tolerated (reported as NOTE) only where the oracle's top-2
   margin is below STRICT_TIE relative.
2. quantized (the real path end to end): the original model, where hearth rounds
   activations to 8 bits; logits within REL_TOL, and a divergence is tolerated
   where the oracle's top-2 margin is below REL_TOL (then rows are compared up to
   that point only).
Relative error is max|c - ref| / max|ref| over a prompt's compared rows.

The model is --model, else $HEARTH_TEST_MODEL, else the default model's cache path.
--scale-tensor NAME [--scale F] multiplies one tensor of the F32 copy by F (1.01)
to show that the strict part fails on a 1% change of one weight matrix.
Exit 0 pass, 1 fail, 77 skip (model file or the gguf package absent).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

# one BLAS thread (see tests/reference/llama_numpy.py); set before numpy loads
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

DEFAULT_MODEL = os.path.expanduser("~/.cache/hearth/models/SmolLM2-135M-Instruct.Q4_1.gguf")
SKIP = 77

# Relative logits tolerance: max|c - ref| / max|ref| over a prompt's compared rows.
# The C pass quantizes activations to 8 bits (blocks of 32, scale max|x|/127, as
# llama.cpp's CPU path does) before integer dot products with the Q4_1/Q8_0
# weights. On this small model that rounding alone is not a 1e-3 effect: the
# oracle's own diagnostic mode (Llama(act_quant="q8"), the same rounding applied in
# NumPy) moves the logits by 2.6% to 6.8% of max|ref| on these four prompts
# (rms of the difference 1.9% to 3.7% of the rms logit). The C pass measured
# 2.8% to 5.4% against the float32 oracle (MEASURED), the same size as 8-bit
# rounding, as it should be; it does not track the NumPy q8 mode more closely
# (also ~3-4%), because rounding decisions differ in detail (fp16 scales, sum
# order, Q8_1 sums) and such differences do not stay small over 30 layers.
# 0.10 leaves ~1.5x margin over the worst 8-bit rounding effect seen. What the
# bound still catches (measured by perturbing the oracle, chat prompt): RoPE in
# neox (halves) mode 0.88, rope base 1e4 instead of 1e5 0.26; a missing residual,
# wrong head grouping or transposed weight are larger still. What it cannot catch:
# changes below the 8-bit noise, e.g. RMS eps 1e-6 for 1e-5 (0.0008) or one
# weight scaled by 2% (0.009); the strict F32 part below catches those.
REL_TOL = 0.10
# What the real C program gave when the bound was set (SmolLM2-135M-Instruct Q4_1,
# 32 generated tokens, forward_dump from tests/forward_dump.c):
MEASURED = "capital 0.028, chat 0.054, long 0.040, code 0.033"

# Strict part: the F32 copy, float32 weights and activations on both sides, so the
# two differ only in summation order (C: its own float32 dot products, blocked and
# vectorised; NumPy: OpenBLAS sgemm; the oracle also sums RMSNorm and softmax in
# float64). Measured (32 generated tokens, all 4 prompts' rows): 1.1e-6 to 2.5e-6
# relative, i.e. max abs diff 5e-5..1e-4 on logits of magnitude ~40: a few float32
# ulps (2^-24 = 6e-8) grown over 30 layers, as expected for reordered sums.
# STRICT_TOL = 3e-5 is ~12x the worst seen. What it catches (measured with
# --scale-tensor, 8 generated tokens): ffn_down of layer 10 scaled by 1.01 -> 6.5e-3
# (200x over), the last layer's attn_norm by 1.001 -> 4.2e-4 (14x over); it just
# misses blk.0.attn_k scaled by 1.0001 (2.0e-5). It also fails if the C pass rounds
# anything to 16 bits or less (an F16 KV cache, fp16 scales: ~1e-3), which is the
# point: then this part must be rethought, not the bound raised.
STRICT_TOL = 3e-5
STRICT_MEASURED = "capital 1.2e-06, chat 2.5e-06, long 1.6e-06, code 1.1e-06"
# A greedy divergence in the strict part is accepted only at a top-2 margin below
# 1e-4 of max|ref| (3x STRICT_TOL, 40x the measured error). The closest greedy
# choice among the 4 x 32 is 6.1e-4 relative (code prompt; the others 1.2e-3 and
# up), so in practice all 32 tokens of every prompt must match.
STRICT_TIE = 1e-4

# Prompts tokenized with the model's own vocabulary (gpt2 byte-level BPE, smollm
# pre-tokenizer) through the HF `tokenizers` library built from the GGUF's tokens and
# merges; each decodes back to exactly the text shown.
PROMPTS = {
    # "The capital of France is"
    "capital": [504, 3575, 282, 4649, 314],
    # "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by
    #  Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the tallest mountain in the
    #  world?<|im_end|>\n<|im_start|>assistant\n"  (the model's ChatML template)
    "chat": [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28,
             7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 31469,
             6740, 281, 260, 905, 47, 2, 198, 1, 520, 9531, 198],
    # "Once upon a time, in a small village at the edge of a great forest, there lived
    #  an old baker named Tom. Every morning he woke before the sun, lit the fire in his
    #  oven, and kneaded the dough for the bread that the whole village would eat. The
    #  children loved his sweet rolls, and the farmers bought his heavy brown loaves for
    #  the long days in the fields. One winter morning, when the snow lay deep on the
    #  roads, Tom opened his door and found a small gray cat shivering on the step."
    "long": [6403, 1980, 253, 655, 28, 281, 253, 1165, 6560, 418, 260, 5595, 282, 253,
             1109, 3150, 28, 665, 4161, 354, 1573, 38993, 3365, 8581, 30, 5081, 5738, 384,
             40652, 1092, 260, 2388, 28, 1150, 260, 2892, 281, 650, 14571, 28, 284, 7745,
             10218, 260, 14517, 327, 260, 6956, 338, 260, 2444, 6560, 736, 3134, 30, 378,
             1122, 5732, 650, 6243, 20587, 28, 284, 260, 5283, 10897, 650, 4591, 6354,
             3092, 2080, 327, 260, 986, 2009, 281, 260, 3705, 30, 1963, 4339, 5738, 28,
             645, 260, 5806, 2060, 2276, 335, 260, 8364, 28, 8581, 6572, 650, 6644, 284,
             983, 253, 1165, 11013, 2644, 443, 38985, 335, 260, 1833, 30],
    # 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'
    "code": [1604, 3987, 46477, 24, 94, 727, 472, 1620, 14362, 260, 304, 29, 373, 24681,
             46477, 1230, 7996, 198],
}
PARIS = 7042  # " Paris"


def dequant_from_spec(raw, type_name):
    """Decode Q4_1 / Q8_0 rows from the block layouts (REFERENCES.md), not gguf's code.

    raw [rows, row bytes] uint8 -> [rows, n] float32.
    Q4_1: 20-byte blocks of 32: f16 d, f16 m, 16 bytes; low nibbles are elements
    0..15, high nibbles 16..31; x = q*d + m.  Q8_0: 34 bytes: f16 d, 32 x int8; x = q*d.
    """
    rows = raw.shape[0]
    if type_name == "Q4_1":
        b = raw.reshape(rows, -1, 20)
        d = b[..., 0:2].copy().view(np.float16).astype(np.float32)
        m = b[..., 2:4].copy().view(np.float16).astype(np.float32)
        qs = b[..., 4:]
        q = np.concatenate([qs & 15, qs >> 4], axis=-1).astype(np.float32)
        return (q * d + m).reshape(rows, -1)
    if type_name == "Q8_0":
        b = raw.reshape(rows, -1, 34)
        d = b[..., 0:2].copy().view(np.float16).astype(np.float32)
        q = b[..., 2:].copy().view(np.int8).astype(np.float32)
        return (q * d).reshape(rows, -1)
    raise ValueError(type_name)


def check_oracle(r, model):
    """The oracle's own checks (r: the model's GGUFReader); returns a list of failure strings."""
    fails = []
    checked = 0
    for t in r.tensors:
        if t.name not in ("token_embd.weight", "blk.0.attn_q.weight", "blk.7.ffn_down.weight",
                          "blk.29.attn_v.weight"):
            continue
        if t.tensor_type.name not in ("Q4_1", "Q8_0"):
            continue
        mine = dequant_from_spec(np.asarray(t.data), t.tensor_type.name)
        d = np.max(np.abs(mine - model.w[t.name]))
        print(f"  oracle: {t.name} ({t.tensor_type.name}) spec decode vs gguf: max diff {d:.3g}")
        if d != 0.0:
            fails.append(f"{t.name}: gguf dequantization differs from the block layout by {d}")
        checked += 1
    if checked == 0:
        print("  oracle: no Q4_1/Q8_0 tensors among the checked names; dequant check skipped")

    # KV cache and causal mask: a batched prefill must equal token-by-token decoding.
    toks = PROMPTS["code"]
    batched = model.forward(toks, 0)
    single = np.concatenate([model.forward([t], i) for i, t in enumerate(toks)], axis=0)
    rel = np.max(np.abs(batched - single)) / np.max(np.abs(batched))
    print(f"  oracle: batched prefill vs one token at a time: rel diff {rel:.3g}")
    if rel > 1e-4:
        fails.append(f"oracle batched vs incremental logits differ: rel {rel:.3g} > 1e-4")

    ids, _ = model.generate(PROMPTS["capital"], 3)
    print(f"  oracle: 'The capital of France is' -> {ids}")
    if ids[0] != PARIS:
        fails.append(f"oracle does not answer ' Paris' ({PARIS}) to the capital prompt: {ids}")
    return fails


def run_c(forward_dump, path, prompt, n_gen, n_vocab, tmpdir, env=None):
    """Run forward_dump (with env's variables added); returns (ids, logits [rows, n_vocab], seconds)."""
    out = os.path.join(tmpdir, "logits.f32")
    cmd = [forward_dump, "-m", path, "-n", str(n_gen), "-o", out, "-t", "2"] + [str(t) for t in prompt]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, **(env or {})))
    dt = time.time() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    if not lines:
        raise RuntimeError("forward_dump printed no ids on stdout")
    ids = [int(s) for s in lines[-1].split()]
    raw = np.fromfile(out, dtype="<f4")
    if raw.size % n_vocab != 0:
        raise RuntimeError(f"{out}: {raw.size} floats is not a multiple of n_vocab {n_vocab}")
    return ids, raw.reshape(-1, n_vocab), dt


def compare(name, prompt, n_gen, ref_ids, ref_logits, c_ids, c_logits, tol, tie):
    """Compare one prompt; returns (list of failures, measured relative error).

    tol: bound on the relative logits error; tie: a greedy divergence is accepted
    (and rows compared up to it) only where the oracle's top-2 margin is below
    tie relative to max|ref|; any other divergence fails."""
    fails = []
    n_p = len(prompt)
    want_rows = n_p + n_gen
    if c_logits.shape[0] != want_rows:
        fails.append(f"{name}: forward_dump wrote {c_logits.shape[0]} rows, want n_prompt + n_gen = {want_rows}")
    if len(c_ids) != n_gen:
        fails.append(f"{name}: forward_dump printed {len(c_ids)} ids, want {n_gen}")
    # The C program's own consistency: token k is the argmax of row n_p-1+k.
    for k, t in enumerate(c_ids[:max(0, c_logits.shape[0] - n_p + 1)]):
        if int(np.argmax(c_logits[n_p - 1 + k])) != t:
            fails.append(f"{name}: forward_dump token {k} = {t} is not the argmax of its row {n_p - 1 + k}")
            break

    # Rows to compare: all of them, unless the tokens diverge.
    n_rows = min(c_logits.shape[0], ref_logits.shape[0])
    n_same = 0
    while n_same < min(len(c_ids), len(ref_ids)) and c_ids[n_same] == ref_ids[n_same]:
        n_same += 1
    if n_same < n_gen:
        k = n_same
        row = ref_logits[n_p - 1 + k]
        top2 = np.sort(row)[-2:]
        margin = float(top2[1] - top2[0])
        scale = float(np.max(np.abs(ref_logits[: n_p + k])))
        c_tok = c_ids[k] if k < len(c_ids) else None
        msg = (f"{name}: greedy tokens diverge at generated token {k}: C {c_tok}, oracle {ref_ids[k]}; "
               f"oracle's top-2 margin {margin:.4g} = {margin / scale:.3g} relative")
        if margin / scale < tie:
            print(f"  NOTE {msg}: a near tie (< {tie:g}); comparing logits up to that row")
        else:
            fails.append(msg)
        # Row n_p-1+k still follows the same tokens on both sides; later rows do not.
        n_rows = min(n_rows, n_p + k)
    a = c_logits[:n_rows].astype(np.float64)
    b = ref_logits[:n_rows].astype(np.float64)
    diff = np.abs(a - b)
    rel = float(np.max(diff) / np.max(np.abs(b)))
    row_rel = np.max(diff, axis=1) / np.max(np.abs(b), axis=1)
    worst = int(np.argmax(row_rel))
    # The closest call among the greedy choices compared (row n_p-1+k chose token k;
    # the last row chose nothing), relative to max|ref|, to show how far from a tie.
    last = min(n_rows, n_p - 1 + n_gen)
    chose = np.sort(ref_logits[n_p - 1:last].astype(np.float64), axis=1)[:, -2:] if last >= n_p else None
    min_margin = float(np.min(chose[:, 1] - chose[:, 0]) / np.max(np.abs(b))) if chose is not None else float("nan")
    print(f"  {name}: {n_p} prompt + {n_gen} gen, {n_same} tokens equal, {n_rows} rows compared: "
          f"max abs diff {np.max(diff):.4g}, max|ref| {np.max(np.abs(b)):.4g}, rel {rel:.4g} "
          f"(worst row {worst}: {row_rel[worst]:.4g}; mean abs diff {np.mean(diff):.3g}; "
          f"closest greedy choice: top-2 margin {min_margin:.3g} relative)")
    if not np.all(np.isfinite(c_logits[:n_rows])):
        fails.append(f"{name}: forward_dump logits contain NaN or inf")
    if not rel <= tol:
        fails.append(f"{name}: logits relative error {rel:.4g} > tolerance {tol:g}")
    return fails, rel


def make_f32(r, model, path, dst, scale_tensor, scale):
    """Write the F32 copy of the model to dst and read it back; returns failures.

    The weights come from the oracle (model.w: gguf.quants.dequantize of every
    tensor), so the copy's tensors must be bit-identical to what the oracle
    computes with (times scale for scale_tensor): then one oracle run per prompt
    is the reference for both the original and the copy.
    """
    import gguf
    from make_f32_model import check_copy, write_f32_copy

    t0 = time.time()
    nbytes = write_f32_copy(r, dst, scale_tensor, scale, weights=model.w)
    t1 = time.time()
    rd = gguf.GGUFReader(dst)
    fails = check_copy(r, rd)
    n_diff = 0
    for t in rd.tensors:
        want = model.w[t.name]
        if t.name == scale_tensor:
            want = want * np.float32(scale)
        got = np.asarray(t.data)
        if got.size != want.size or not np.array_equal(got.reshape(want.shape).view(np.uint32),
                                                       want.view(np.uint32)):
            n_diff += 1
            if n_diff == 1:
                fails.append(f"F32 copy: tensor {t.name} is not bit-identical to the oracle's weights")
    print(f"F32 copy {dst}: {nbytes / 1e6:.0f} MB written in {t1 - t0:.1f} s, read back in "
          f"{time.time() - t1:.1f} s: {len(rd.fields) - 3} keys, {len(rd.tensors)} F32 tensors, "
          f"{len(rd.tensors) - n_diff} bit-identical to the oracle's weights"
          + (f" (tensor {scale_tensor} scaled by {scale:g} on purpose)" if scale_tensor else ""))
    return fails


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("forward_dump", nargs="?")
    ap.add_argument("--model", default=os.environ.get("HEARTH_TEST_MODEL") or DEFAULT_MODEL)
    ap.add_argument("--n-gen", type=int, default=32)
    ap.add_argument("--oracle-only", action="store_true", help="run only the oracle's self-checks")
    ap.add_argument("--tmpdir", help="where the temporary F32 copy (~540 MB) goes (default $TMPDIR)")
    ap.add_argument("--scale-tensor", help="test the test: scale this tensor of the F32 copy by --scale")
    ap.add_argument("--scale", type=float, default=1.01)
    a = ap.parse_args()
    if not a.oracle_only and not a.forward_dump:
        ap.error("FORWARD_DUMP is required unless --oracle-only")
    if not os.path.exists(a.model):
        print(f"SKIP: model {a.model} not found")
        return SKIP
    try:
        import gguf
    except ImportError as e:
        print(f"SKIP: the gguf Python package is not installed ({e})")
        return SKIP
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
    from llama_numpy import Llama

    t0 = time.time()
    r = gguf.GGUFReader(a.model)  # one reader for all uses: opening one costs ~7 s here
    model = Llama(a.model, n_ctx=512, reader=r)
    print(f"oracle loaded {a.model} in {time.time() - t0:.1f} s")
    fails = check_oracle(r, model)
    if a.oracle_only:
        print("FAIL" if fails else "PASS")
        for f in fails:
            print("  " + f)
        return 1 if fails else 0

    if a.tmpdir:
        os.makedirs(a.tmpdir, exist_ok=True)
    worst_q, worst_s, strict = 0.0, 0.0, {}
    with tempfile.TemporaryDirectory(prefix="hearth-forward-ref-", dir=a.tmpdir) as tmpdir:
        f32_path = os.path.join(tmpdir, "model-f32.gguf")
        try:
            fails += make_f32(r, model, a.model, f32_path, a.scale_tensor, a.scale)
        except (OSError, ValueError) as e:
            fails.append(f"writing the F32 copy: {e}")
            f32_path = None
        for name, prompt in PROMPTS.items():
            t0 = time.time()
            ref_ids, ref_logits = model.generate(prompt, a.n_gen)
            t_ref = time.time() - t0
            print(f"  {name}: oracle {t_ref:.1f} s")
            print(f"    oracle   ids: {' '.join(map(str, ref_ids))}")
            for part, path in (("strict F32", f32_path), ("Q4_1", a.model)):
                if path is None:
                    continue
                try:
                    c_ids, c_logits, t_c = run_c(a.forward_dump, path, prompt, a.n_gen, model.n_vocab, tmpdir)
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                    fails.append(f"{name} ({part}): {e}")
                    continue
                print(f"    [{part}] forward_dump {t_c:.1f} s, ids: {' '.join(map(str, c_ids))}")
                if path is f32_path:
                    f, rel = compare(f"{name} [strict F32]", prompt, a.n_gen, ref_ids, ref_logits,
                                     c_ids, c_logits, STRICT_TOL, STRICT_TIE)
                    worst_s = max(worst_s, rel)
                    strict[name] = rel
                else:
                    f, rel = compare(f"{name} [Q4_1]", prompt, a.n_gen, ref_ids, ref_logits,
                                     c_ids, c_logits, REL_TOL, REL_TOL)
                    worst_q = max(worst_q, rel)
                    # the AVX2 kernels where the CPU has AVX-512 VNNI (quant_vnni.c): the same bits
                    try:
                        a_ids, a_logits, _ = run_c(a.forward_dump, path, prompt, a.n_gen, model.n_vocab, tmpdir,
                                                   {"HEARTH_NO_VNNI": "1"})
                        if a_ids != c_ids or not np.array_equal(a_logits, c_logits):
                            f.append(f"{name} [Q4_1]: HEARTH_NO_VNNI=1 changes the logits")
                    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
                        f.append(f"{name} (Q4_1, HEARTH_NO_VNNI=1): {e}")
                fails += f
    print(f"strict F32: worst relative logits error {worst_s:.3g} (tolerance {STRICT_TOL:g}; per prompt "
          + ", ".join(f"{k} {v:.3g}" for k, v in strict.items()) + f"; when set: {STRICT_MEASURED})")
    print(f"Q4_1:       worst relative logits error {worst_q:.4g} (tolerance {REL_TOL}; when set: {MEASURED})")
    if fails:
        print("FAIL")
        for f in fails:
            print("  " + f)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
