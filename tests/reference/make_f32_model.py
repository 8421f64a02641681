#!/usr/bin/env python3
"""make_f32_model: an all-float32 copy of a GGUF model, written with the PyPI `gguf` package.

    make_f32_model.py SRC.gguf DST.gguf [--scale-tensor NAME --scale F]

Every metadata key of SRC is copied with its value type (arrays keep their element
type; strings, array elements included, are copied as raw bytes, so tokens that
are not valid UTF-8 survive), in SRC's order; general.file_type is copied as is
(it describes SRC's quantization, and nothing hearth computes reads it). Every
tensor is dequantized with `gguf.quants.dequantize` and stored as GGML type F32,
in SRC's order, with SRC's shape.

Shapes: GGUF stores dims ne[0] first (ne[0] = the fastest-varying, i.e. n_in of a
matrix). GGUFReader gives them in that order (t.shape = [n_in, n_out]);
GGUFWriter.add_tensor_info takes the NumPy shape ([n_out, n_in], slowest first)
and writes it reversed. So the NumPy shape handed to the writer is
reversed(t.shape); check_copy() reads the result back and requires t.shape equal.

Used by tests/test_forward_ref.py to take the C pass's 8-bit activation rounding
out of the comparison with the NumPy oracle: with F32 weights hearth computes
float32 x float32 dot products. --scale-tensor multiplies one tensor by F in the
copy (to show that the strict comparison notices a 1% change).
"""

import argparse
import sys
import time

import numpy as np

import gguf

GT = gguf.GGUFValueType


def _field_value(f):
    """(value, vtype, sub_type) of a ReaderField, in the form GGUFWriter packs back.

    Strings become bytes (the writer writes bytes unchanged), so the copy is
    byte-exact. Raises ValueError for nested or empty arrays (GGUFWriter cannot
    write an empty array; SmolLM2 has neither).
    """
    main = f.types[0]
    if main == GT.ARRAY:
        if len(f.types) != 2:
            raise ValueError(f"{f.name}: nested array ({[t.name for t in f.types]}) not supported")
        sub = f.types[1]
        if not f.data:
            raise ValueError(f"{f.name}: empty array cannot be written by GGUFWriter")
        if sub == GT.STRING:
            val = [bytes(f.parts[i]) for i in f.data]
        else:
            val = np.concatenate([f.parts[i] for i in f.data]).tolist()
        return val, GT.ARRAY, sub
    if main == GT.STRING:
        return bytes(f.parts[-1]), GT.STRING, None
    return f.parts[-1].tolist()[0], main, None


def _meta_keys(reader):
    """Real metadata keys (GGUFReader adds GGUF.version / tensor_count / kv_count)."""
    return [k for k in reader.fields if not k.startswith("GGUF.")]


def dequantized(t):
    """Tensor t of a GGUFReader as float32 in NumPy order (reversed GGUF dims)."""
    a = gguf.quants.dequantize(t.data, t.tensor_type)
    shape = tuple(int(d) for d in reversed(list(t.shape)))
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32).reshape(shape))


def _reader(src):
    # GGUFReader parses every token string in Python: ~7 s for SmolLM2's 98k
    # tokenizer strings, so callers that already have one pass it instead.
    return src if isinstance(src, gguf.GGUFReader) else gguf.GGUFReader(src)


def write_f32_copy(src, dst, scale_tensor=None, scale=1.0, weights=None):
    """Write the F32 copy of src (a path or a GGUFReader) to dst.

    weights: optional {name: float32 array in NumPy order} already dequantized from
    src with dequantized() (the oracle's, to save dequantizing twice); tensors
    missing from it are dequantized here. Returns the bytes of tensor data written.
    """
    r = _reader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)
    if "general.alignment" in r.fields:
        w.data_alignment = int(r.fields["general.alignment"].contents())
    for k in _meta_keys(r):
        val, vtype, sub = _field_value(r.fields[k])
        if k == "general.architecture":
            continue  # GGUFWriter's constructor already added it, first, as in SRC
        w.add_key_value(k, val, vtype, sub)

    names = [t.name for t in r.tensors]
    if scale_tensor is not None and scale_tensor not in names:
        raise ValueError(f"--scale-tensor {scale_tensor}: no such tensor in {src}")
    total = 0
    # Tensor infos first (the header needs them), then the data one tensor at a
    # time, so that only one dequantized tensor is in memory.
    for t in r.tensors:
        shape = [int(d) for d in reversed(list(t.shape))]
        nbytes = int(np.prod(shape)) * 4
        w.add_tensor_info(t.name, shape, np.dtype(np.float32), nbytes)
        total += nbytes
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for t in r.tensors:
        a = weights[t.name] if weights is not None and t.name in weights else dequantized(t)
        if t.name == scale_tensor:
            a = a * np.float32(scale)
        w.write_tensor_data(a)
    w.close()
    return total


def check_copy(src, dst):
    """Read dst back with GGUFReader; returns a list of differences from src.

    src and dst: paths or GGUFReaders.
    Metadata: same keys in the same order, same types, byte-identical values.
    Tensors: same names and order, type F32, same GGUF shape (ne[0] first).
    Tensor values are compared by the caller (it has the dequantized weights).
    """
    fails = []
    a, b = _reader(src), _reader(dst)
    ka, kb = _meta_keys(a), _meta_keys(b)
    if ka != kb:
        fails.append(f"metadata keys differ: only in source {sorted(set(ka) - set(kb))}, "
                     f"only in copy {sorted(set(kb) - set(ka))}, order same: {sorted(ka) == sorted(kb)}")
    for k in ka:
        if k not in b.fields:
            continue
        fa, fb = a.fields[k], b.fields[k]
        if fa.types != fb.types:
            fails.append(f"{k}: type {[t.name for t in fa.types]} became {[t.name for t in fb.types]}")
            continue
        da = [fa.parts[i].tobytes() for i in fa.data]
        db = [fb.parts[i].tobytes() for i in fb.data]
        if da != db:
            fails.append(f"{k}: value differs")
    ta = [(t.name, [int(d) for d in t.shape]) for t in a.tensors]
    tb = [(t.name, [int(d) for d in t.shape]) for t in b.tensors]
    if ta != tb:
        diff = [(x, y) for x, y in zip(ta, tb) if x != y][:3]
        fails.append(f"tensor names/shapes differ ({len(ta)} vs {len(tb)} tensors; first: {diff})")
    not_f32 = [t.name for t in b.tensors if t.tensor_type != gguf.GGMLQuantizationType.F32]
    if not_f32:
        fails.append(f"{len(not_f32)} tensors of the copy are not F32, e.g. {not_f32[0]}")
    return fails


def main(argv=None):
    ap = argparse.ArgumentParser(description="Write an all-F32 copy of a GGUF model.")
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--scale-tensor", help="multiply this tensor by --scale in the copy")
    ap.add_argument("--scale", type=float, default=1.01)
    a = ap.parse_args(argv)
    t0 = time.time()
    n = write_f32_copy(a.src, a.dst, a.scale_tensor, a.scale)
    fails = check_copy(a.src, a.dst)
    print(f"wrote {a.dst}: {n / 1e6:.0f} MB of F32 tensor data in {time.time() - t0:.1f} s")
    for f in fails:
        print("  " + f, file=sys.stderr)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
