#!/usr/bin/env python3
"""llama_numpy: an independent NumPy reference of the llama forward pass.

This is hearth's correctness oracle for the C dense pass. It shares no code with
hearth: GGUF is read by the PyPI `gguf` package, every weight is dequantized to
float32 by `gguf.quants.dequantize`, and the math below is the llama architecture
written out plainly, one layer in one function, names after the paper:

    x = token_embd[tokens]                                   [n, d_model]
    per layer l:
        xb  = rmsnorm(x) * attn_norm
        q   = xb @ Wq^T, k = xb @ Wk^T, v = xb @ Wv^T        [n, heads * head_dim]
        q,k = rope(q, pos), rope(k, pos)    (adjacent pairs: llama.cpp "normal" mode)
        att = softmax(q k^T / sqrt(head_dim) + causal mask)  per head; query head h
              reads KV head h // (n_head / n_head_kv) (grouped-query attention)
        x  += (att v) @ Wo^T
        xb  = rmsnorm(x) * ffn_norm
        x  += (silu(xb @ Wgate^T) * (xb @ Wup^T)) @ Wdown^T
    logits = (rmsnorm(x) * output_norm) @ Wout^T   (Wout = token_embd when tied)

Activations are float32; RMSNorm and softmax accumulate in float64 (the C side
accumulates in float32 or int32, so this side is the more exact of the two).
Keys and values of past positions stay in a KV cache, so decoding one token costs
one row of work per layer, and greedy generation of tens of tokens takes seconds.

Command line:
    llama_numpy.py MODEL --tokens 1,2,3 [--n-gen 32] [--logits-out FILE.npy]
prints the greedy continuation ids (one line, space-separated) on stdout and saves
float32 logits [n_prompt + n_gen, n_vocab]: rows 0..n_prompt-1 are the logits after
each prompt position (one batched prefill); row n_prompt-1+k chose generated token
k; the last row is the logits after feeding the last generated token (it would
choose token n_gen), so that there is one row per prompt token and per generated
token. Library use: `Llama(path)`, `.forward(tokens, pos0)`, `.generate(...)`.
"""

import argparse
import os
import sys
import time

# One BLAS thread: the products here are small (one token: [1, 576] x [576, 1536]),
# and OpenBLAS's spinning worker threads, on a machine whose few cores are busy,
# made a decode step ~20x slower than one thread does. Set before numpy loads.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

import gguf  # noqa: E402


def _field(reader, key, default=None):
    """Scalar or string value of a GGUF metadata key, or default when absent."""
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def rmsnorm(x, w, eps):
    """x [n, d] float32, w [d]: x / sqrt(mean(x^2) + eps) * w, sums in float64."""
    x64 = x.astype(np.float64)
    ms = np.mean(x64 * x64, axis=-1, keepdims=True)
    return (x64 / np.sqrt(ms + eps)).astype(np.float32) * w


def rope(x, pos, n_rot, base):
    """Rotate adjacent pairs (x[2i], x[2i+1]) of each head by pos * base^(-2i/n_rot).

    x [n, n_heads, head_dim] float32, pos [n] int; only the first n_rot dims of a
    head rotate (n_rot == head_dim for llama). This is llama.cpp's "normal" RoPE
    mode; HF llama checkpoints permute Wq/Wk when converted to GGUF so that this
    equals HF's rotate_half form on the original weights.
    """
    i = np.arange(n_rot // 2, dtype=np.float64)
    inv_freq = base ** (-2.0 * i / n_rot)                    # [n_rot/2]
    theta = pos.astype(np.float64)[:, None] * inv_freq[None]  # [n, n_rot/2]
    cos = np.cos(theta).astype(np.float32)[:, None, :]       # [n, 1, n_rot/2]
    sin = np.sin(theta).astype(np.float32)[:, None, :]
    out = x.copy()
    x0 = x[..., 0:n_rot:2]
    x1 = x[..., 1:n_rot:2]
    out[..., 0:n_rot:2] = x0 * cos - x1 * sin
    out[..., 1:n_rot:2] = x0 * sin + x1 * cos
    return out


def softmax(s):
    """Softmax over the last axis in float64; -inf entries get weight 0."""
    s = s.astype(np.float64)
    s = s - np.max(s, axis=-1, keepdims=True)
    e = np.exp(s)
    return e / np.sum(e, axis=-1, keepdims=True)


def silu(x):
    return x / (1.0 + np.exp(-x))


def q8_roundtrip(x):
    """x [n, d] rounded as llama.cpp's CPU path quantizes activations (Q8_0/Q8_1).

    Blocks of 32 along d: scale = max|x| / 127, q = round(x / scale) (half away
    from zero, as roundf), x' = q * fp16(scale). Only used with act_quant="q8", to
    tell the C pass's expected rounding apart from real errors.
    """
    n, d = x.shape
    b = x.reshape(n, d // 32, 32).astype(np.float32)
    scale = np.max(np.abs(b), axis=-1, keepdims=True) / np.float32(127.0)
    inv = np.divide(np.float32(1.0), scale, out=np.zeros_like(scale), where=scale > 0)
    v = b * inv
    q = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))
    return (q * scale.astype(np.float16).astype(np.float32)).reshape(n, d)


class Llama:
    """A llama-architecture GGUF model, dequantized to float32, with a KV cache."""

    def __init__(self, path, n_ctx=2048, act_quant=None, reader=None):
        """act_quant: None (the oracle: float32 activations) or "q8" (round the input
        of every product with a quantized weight to 8 bits, as llama.cpp's CPU path
        and hearth's C pass do; a diagnostic, not the reference). reader: a
        gguf.GGUFReader of path, when the caller has one (opening one parses every
        tokenizer string in Python, seconds for a 49k vocabulary)."""
        if act_quant not in (None, "q8"):
            raise ValueError(f"act_quant {act_quant!r}: want None or 'q8'")
        self.act_quant = act_quant
        r = reader if reader is not None else gguf.GGUFReader(path)
        arch = _field(r, "general.architecture")
        if arch != "llama":
            raise ValueError(f"{path}: general.architecture is {arch!r}, need 'llama'")
        p = "llama."
        self.n_layer = int(_field(r, p + "block_count"))
        self.d_model = int(_field(r, p + "embedding_length"))
        self.n_ff = int(_field(r, p + "feed_forward_length"))
        self.n_head = int(_field(r, p + "attention.head_count"))
        self.n_head_kv = int(_field(r, p + "attention.head_count_kv", self.n_head))
        self.eps = float(_field(r, p + "attention.layer_norm_rms_epsilon"))
        self.rope_base = float(_field(r, p + "rope.freq_base", 10000.0))
        self.head_dim = self.d_model // self.n_head
        self.n_rot = int(_field(r, p + "rope.dimension_count", self.head_dim))
        if self.n_head % self.n_head_kv != 0:
            raise ValueError(f"{path}: head_count {self.n_head} not a multiple of head_count_kv {self.n_head_kv}")

        self.w = {}
        self.quantized = set()  # names of weights stored in a block-quantized type
        for t in r.tensors:
            # GGUF dims are [n_in, n_out] (dims[0] fastest); the reader gives
            # quantized data as [n_out, row bytes] and dequantize() returns
            # [n_out, n_in]: a row per output, so y = x @ W.T.
            a = gguf.quants.dequantize(t.data, t.tensor_type)
            shape = tuple(int(d) for d in reversed(list(t.shape)))
            self.w[t.name] = np.ascontiguousarray(a.reshape(shape), dtype=np.float32)
            if t.tensor_type.name not in ("F32", "F16", "BF16"):
                self.quantized.add(t.name)
        self.tied = "output.weight" not in self.w
        self.out_name = "token_embd.weight" if self.tied else "output.weight"
        self.w_out = self.w[self.out_name]
        self.n_vocab = self.w_out.shape[0]
        self.eos = _field(r, "tokenizer.ggml.eos_token_id")

        self.n_ctx = n_ctx
        kv_dim = self.n_head_kv * self.head_dim
        self.k_cache = np.zeros((self.n_layer, n_ctx, kv_dim), dtype=np.float32)
        self.v_cache = np.zeros((self.n_layer, n_ctx, kv_dim), dtype=np.float32)

    def layer_weight(self, l, name):
        return self.w[f"blk.{l}.{name}.weight"]

    def matmul(self, x, name):
        """x [n, n_in] @ W^T for the weight called name ([n_out, n_in]) -> [n, n_out]."""
        if self.act_quant == "q8" and name in self.quantized:
            x = q8_roundtrip(x)
        return x @ self.w[name].T

    def attention(self, l, xb, pos0):
        """One layer's attention over n new rows at positions pos0..pos0+n-1.

        xb [n, d_model] (already normalised); writes K, V of the new rows into the
        cache, then each new row attends to every cached position <= its own.
        Returns [n, d_model] (after the output projection).
        """
        n = xb.shape[0]
        hd, nh, nkv = self.head_dim, self.n_head, self.n_head_kv
        pos = np.arange(pos0, pos0 + n)
        q = self.matmul(xb, f"blk.{l}.attn_q.weight").reshape(n, nh, hd)
        k = self.matmul(xb, f"blk.{l}.attn_k.weight").reshape(n, nkv, hd)
        v = self.matmul(xb, f"blk.{l}.attn_v.weight").reshape(n, nkv, hd)
        q = rope(q, pos, self.n_rot, self.rope_base)
        k = rope(k, pos, self.n_rot, self.rope_base)
        self.k_cache[l, pos0:pos0 + n] = k.reshape(n, nkv * hd)
        self.v_cache[l, pos0:pos0 + n] = v.reshape(n, nkv * hd)

        n_past = pos0 + n
        K = self.k_cache[l, :n_past].reshape(n_past, nkv, hd)
        V = self.v_cache[l, :n_past].reshape(n_past, nkv, hd)
        # causal mask: new row i (position pos0+i) sees cached positions j <= pos0+i
        mask = np.where(np.arange(n_past)[None, :] <= pos[:, None], 0.0, -np.inf)  # [n, n_past]
        group = nh // nkv
        out = np.empty((n, nh, hd), dtype=np.float32)
        scale = 1.0 / np.sqrt(hd)
        for h in range(nh):
            g = h // group
            s = (q[:, h, :] @ K[:, g, :].T) * scale          # [n, n_past]
            att = softmax(s + mask).astype(np.float32)
            out[:, h, :] = att @ V[:, g, :]                  # [n, hd]
        return self.matmul(out.reshape(n, nh * hd), f"blk.{l}.attn_output.weight")

    def ffn(self, l, xb):
        """SwiGLU: down(silu(gate(xb)) * up(xb)); xb [n, d_model] -> [n, d_model]."""
        g = self.matmul(xb, f"blk.{l}.ffn_gate.weight")        # [n, n_ff]
        u = self.matmul(xb, f"blk.{l}.ffn_up.weight")
        return self.matmul(silu(g) * u, f"blk.{l}.ffn_down.weight")

    def forward(self, tokens, pos0):
        """Logits [n, n_vocab] for tokens at positions pos0.. (KV cache filled to pos0)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        n = tokens.shape[0]
        if pos0 + n > self.n_ctx:
            raise ValueError(f"context full: {pos0} + {n} > n_ctx {self.n_ctx}")
        if np.any(tokens < 0) or np.any(tokens >= self.n_vocab):
            raise ValueError(f"token id out of range [0, {self.n_vocab})")
        x = self.w["token_embd.weight"][tokens].copy()          # [n, d_model]
        for l in range(self.n_layer):
            xb = rmsnorm(x, self.layer_weight(l, "attn_norm"), self.eps)
            x = x + self.attention(l, xb, pos0)
            xb = rmsnorm(x, self.layer_weight(l, "ffn_norm"), self.eps)
            x = x + self.ffn(l, xb)
        x = rmsnorm(x, self.w["output_norm.weight"], self.eps)
        return self.matmul(x, self.out_name)

    def generate(self, prompt, n_gen):
        """Greedy: returns (generated ids [n_gen], logits [n_prompt + n_gen, n_vocab]).

        Ties in argmax go to the lowest id (np.argmax). Generation does not stop at
        EOS, so that the oracle and the C program compare the same number of rows.
        """
        rows = [self.forward(prompt, 0)]
        out = []
        pos = len(prompt)
        for _ in range(n_gen):
            t = int(np.argmax(rows[-1][-1]))
            out.append(t)
            rows.append(self.forward([t], pos))
            pos += 1
        return out, np.concatenate(rows, axis=0).astype(np.float32)


def main(argv=None):
    ap = argparse.ArgumentParser(description="NumPy reference of the llama forward pass (greedy).")
    ap.add_argument("model", help="GGUF file (llama architecture)")
    ap.add_argument("--tokens", required=True, help="prompt token ids, comma-separated")
    ap.add_argument("--n-gen", type=int, default=32, help="tokens to generate greedily")
    ap.add_argument("--logits-out", help="save float32 logits [n_prompt + n_gen, n_vocab] here (.npy)")
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--act-quant", choices=["q8"], help="diagnostic: round activations to 8 bits before "
                    "products with quantized weights, as llama.cpp's CPU path does")
    a = ap.parse_args(argv)
    try:
        prompt = [int(s) for s in a.tokens.replace(" ", "").split(",") if s != ""]
    except ValueError:
        print(f"llama_numpy: --tokens: not a comma-separated list of ids: {a.tokens!r}", file=sys.stderr)
        return 2
    if not prompt:
        print("llama_numpy: --tokens: empty prompt", file=sys.stderr)
        return 2
    t0 = time.time()
    try:
        m = Llama(a.model, n_ctx=max(a.n_ctx, len(prompt) + a.n_gen + 1), act_quant=a.act_quant)
        t1 = time.time()
        ids, logits = m.generate(prompt, a.n_gen)
    except (OSError, ValueError, KeyError) as e:
        print(f"llama_numpy: {a.model}: {e}", file=sys.stderr)
        return 1
    t2 = time.time()
    print(" ".join(str(t) for t in ids))
    print(f"llama_numpy: load {t1 - t0:.1f} s, {len(prompt)} prompt + {a.n_gen} generated in {t2 - t1:.1f} s",
          file=sys.stderr)
    if a.logits_out:
        np.save(a.logits_out, logits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
