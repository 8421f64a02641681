#!/usr/bin/env python3
"""hearth's tokenizer and chat templates against independent references.

  test_tokenizer_hf.py TOKENIZE_DUMP STRINGS_FILE [MODEL]
      Builds a reference tokenizer with HF `tokenizers` from the GGUF's own
      vocabulary, merges and token types (read with the `gguf` package), in
      SmolLM2's configuration (BPE; pre-tokenizer Sequence[Digits(individual),
      ByteLevel(no prefix space, regex)]; control tokens as special tokens),
      and compares its ids with tokenize_dump's on the strings of STRINGS_FILE
      plus strings generated with a fixed, printed seed. The GPT-2, Llama-3
      and Qwen2 pre-tokenizers are checked the same way on the same
      vocabulary (HF Split with their regexes, then ByteLevel).
  test_tokenizer_hf.py --chat TOKENIZE_DUMP [MODEL]
      Renders conversations with Jinja2 from the real templates (SmolLM2's
      from the GGUF, Llama-2's and Llama-3's embedded below) and compares
      with chat_format() through tokenize_dump --chat.

Exit 0 pass, 1 fail, 77 skip (model, python package missing).
"""
import json
import os
import random
import subprocess
import sys
import tempfile

DEFAULT_MODEL = os.path.expanduser("~/.cache/hearth/models/SmolLM2-135M-Instruct.Q4_1.gguf")
SEED = 1234


def skip(why):
    print("SKIP: " + why)
    sys.exit(77)


def gguf_field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    if len(f.types) > 1:  # array
        if f.types[1] == 8:  # strings
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i][0].item() for i in f.data]
    if f.types[0] == 8:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]][0].item()


# ----------------------------------------------------------------- tokenizer

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")


def read_vocab(model):
    from gguf import GGUFReader
    r = GGUFReader(model)
    if gguf_field(r, "tokenizer.ggml.model") != "gpt2":
        skip("reference covers byte-level BPE models only")
    tokens = gguf_field(r, "tokenizer.ggml.tokens")
    types = gguf_field(r, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in gguf_field(r, "tokenizer.ggml.merges")]
    return tokens, types, merges


def reference_tokenizer(vocab_data, pre):
    """HF tokenizers in the configuration the HF tokenizer.json of each family
    uses, over the GGUF's vocabulary: smollm (SmolLM2, the file's own), and
    gpt2 / llama-bpe / qwen2 applied to the same vocabulary to check those
    pre-tokenizers too."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    tokens, types, merges = vocab_data
    vocab = {t: i for i, t in enumerate(tokens)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=(pre == "llama-bpe")))
    bl_regex = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bl_plain = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre == "smollm":
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), bl_regex])
    elif pre == "gpt2":
        tk.pre_tokenizer = bl_regex
    else:
        pattern = LLAMA3_PATTERN if pre == "llama-bpe" else QWEN2_PATTERN
        tk.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False), bl_plain])
    tk.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3]
    tk.add_special_tokens(specials)
    return tk


def generated_strings(n, seed):
    rng = random.Random(seed)
    pools = [
        ["the", "The", "quick", "fox", "hello", "World", "don't", "it's", "I'm", "we'll", "token", "a", "I"],
        ["0", "1", "42", "123", "2024", "3.14", "1,000", "-7", "9999999"],
        [" ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n", "\t ", "\u00a0", "\u3000"],
        [".", ",", "!", "?", "...", "!!", "--", "(", ")", "{", "}", "[]", ";", ":", "'", "\"", "#", "$", "%", "&&"],
        ["😀", "👍🏽", "👨‍👩‍👧", "❤️", "🇫🇷", "🔥"],
        ["你好", "世界", "日本", "한국", "テスト"],
        ["مرحبا", "سلام", "Привет", "мир", "Ёлка", "Ωμέγα"],
        ["café", "cafe\u0301", "naïve", "nai\u0308ve", "Ångström", "über"],
        ["def", "return", "x = 1", "if (a) {", "}", "=>", "->", "//", "/*", "*/", "#include", "0x1F"],
        ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<file_sep>", "<|im_start", "|>"],
    ]
    out = []
    for _ in range(n):
        k = rng.randint(1, 12)
        parts = []
        for _ in range(k):
            pool = rng.choice(pools)
            parts.append(rng.choice(pool))
            if rng.random() < 0.4:
                parts.append(rng.choice([" ", "", "", "\n", "  "]))
        out.append("".join(parts))
    return out


def read_strings(path):
    out = []
    with open(path, encoding="ascii") as f:
        for line in f:
            line = line.rstrip("\n")
            if line and not line.startswith("#"):
                out.append(json.loads(line))
    return out


def compare(dump, model, vocab_data, pre, strings, n_fixed):
    tk = reference_tokenizer(vocab_data, pre)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="ascii") as f:
        for s in strings:
            f.write(json.dumps(s) + "\n")
        tmp = f.name
    try:
        p = subprocess.run([dump, model, tmp, pre], capture_output=True, timeout=120)
    finally:
        os.unlink(tmp)
    sys.stderr.write(p.stderr.decode("utf-8", "replace"))
    lines = p.stdout.decode().split("\n")[:-1]
    if len(lines) != len(strings):
        print("FAIL [%s]: tokenize_dump printed %d lines for %d strings (rc %d)"
              % (pre, len(lines), len(strings), p.returncode))
        return 1
    bad = 0
    for i, (s, line) in enumerate(zip(strings, lines)):
        got = [int(x) for x in line.split()]
        want = tk.encode(s, add_special_tokens=False).ids
        if got != want:
            bad += 1
            if bad <= 10:
                where = "file line" if i < n_fixed else "generated"
                print("MISMATCH [%s] (%s #%d) %s" % (pre, where, i, json.dumps(s)))
                print("  expected %s" % want)
                print("       got %s" % got)
                print("  expected pieces %s" % [tk.id_to_token(t) for t in want])
                print("       got pieces %s" % [tk.id_to_token(t) for t in got if 0 <= t < tk.get_vocab_size()])
    print("[%s] %d strings (%d from the file, %d generated), %d mismatches; round trip rc %d"
          % (pre, len(strings), n_fixed, len(strings) - n_fixed, bad, p.returncode))
    return 1 if bad or p.returncode != 0 else 0


def test_tokenizer(dump, strings_file, model):
    if not os.path.exists(model):
        skip("model %s not found" % model)
    try:
        import gguf  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError as e:
        skip("python package missing: %s" % e)
    from gguf import GGUFReader
    if gguf_field(GGUFReader(model), "tokenizer.ggml.pre") != "smollm":
        skip("the reference is set up for SmolLM2's tokenizer (pre=smollm)")
    strings = read_strings(strings_file)
    n_fixed = len(strings)
    print("seed %d for the generated strings" % SEED)
    strings += generated_strings(200, SEED)
    rc = 0
    vocab_data = read_vocab(model)
    # smollm is the model's own pre-tokenizer; the others run on its vocabulary
    for pre in ("smollm", "gpt2", "llama-bpe", "qwen2"):
        rc |= compare(dump, model, vocab_data, pre, strings, n_fixed)
    return rc


# ------------------------------------------------------------ chat templates

# meta-llama/Llama-2-7b-chat-hf tokenizer_config.json chat_template
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")

# meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json chat_template
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

CONVERSATIONS = [
    [("user", "Hello!")],
    [("system", "You are terse."), ("user", "What is 2+2?")],
    [("user", "hi"), ("assistant", "Hello! How can I help?"), ("user", "Tell me a joke.")],
    [("system", "Be kind."), ("user", "  padded question \n"), ("assistant", "\tanswer with spaces  "),
     ("user", "and again\n\n")],
    [("user", "unicode: café 日本 😀 \u3000")],
    [("user", "")],
    [("system", ""), ("user", "empty system")],
    [],
]


def render(template, msgs, add_gen, bos, eos):
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=[{"role": r, "content": c} for r, c in msgs], add_generation_prompt=add_gen,
        bos_token=bos, eos_token=eos)


def test_chat(dump, model):
    try:
        import jinja2  # noqa: F401
    except ImportError:
        skip("jinja2 not installed")
    templates = [("llama2", LLAMA2_TEMPLATE, "<s>", "</s>"), ("llama3", LLAMA3_TEMPLATE, "<|begin_of_text|>", "")]
    if os.path.exists(model):
        try:
            from gguf import GGUFReader
            t = gguf_field(GGUFReader(model), "tokenizer.chat_template")
            if t:
                templates.insert(0, ("smollm2", t, "<|im_start|>", "<|im_end|>"))
        except ImportError:
            print("note: gguf package missing; SmolLM2 template not checked")
    else:
        print("note: %s not found; SmolLM2 template not checked" % model)
    bad = checked = 0
    with tempfile.TemporaryDirectory() as d:
        for name, tmpl, bos, eos in templates:
            tpath = os.path.join(d, name + ".jinja")
            with open(tpath, "w", encoding="utf-8") as f:
                f.write(tmpl)
            for ci, conv in enumerate(CONVERSATIONS):
                for add_gen in (False, True):
                    try:
                        want = render(tmpl, conv, add_gen, bos, eos)
                    except Exception as e:  # the template refuses this conversation
                        want = None
                        why = str(e)
                    mpath = os.path.join(d, "msgs.txt")
                    with open(mpath, "w", encoding="ascii") as f:
                        for r, c in conv:
                            f.write(json.dumps(r) + "\n" + json.dumps(c) + "\n")
                    p = subprocess.run([dump, "--chat", tpath, mpath, "1" if add_gen else "0"],
                                       capture_output=True, timeout=30)
                    got = p.stdout.decode("utf-8") if p.returncode == 0 else None
                    checked += 1
                    if got != want:
                        bad += 1
                        print("MISMATCH %s conversation %d add_generation_prompt=%s" % (name, ci, add_gen))
                        print("  expected %s" % (json.dumps(want) if want is not None else "an error: " + why))
                        print("       got %s" % (json.dumps(got) if got is not None else
                                                 "an error: " + p.stderr.decode("utf-8", "replace").strip()))
    print("%d chat renderings checked, %d mismatches" % (checked, bad))
    return 1 if bad else 0


def main():
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "--chat":
        return test_chat(args[1], args[2] if len(args) > 2 else DEFAULT_MODEL)
    if len(args) < 2:
        print(__doc__)
        return 2
    return test_tokenizer(args[0], args[1], args[2] if len(args) > 2 else DEFAULT_MODEL)


if __name__ == "__main__":
    sys.exit(main())
