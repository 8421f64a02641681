#!/usr/bin/env python3
"""corpus_disjoint: deploy/corpus.sh makes two disjoint real texts.

    test_corpus.py [PATH/TO/corpus.sh]

Runs corpus.sh into a temporary folder and checks:
  - it succeeds, prints the folder and leaves no temporaries there;
  - calibration.txt and evaluation.txt exist, are strict UTF-8 text (no NUL,
    no replacement characters from a bad decode) of at least 1 MB each;
  - they share no run of 8 consecutive whitespace-separated words (the
    script's filter works at 8 words: the whole calibration file is checked,
    runs across two fortunes included);
  - the filter is doing real work: the raw fortune entries DO share some
    8-word runs with the evaluation text, and each of them is absent from the
    calibration text. (Without that, removing the filter from corpus.sh
    would go unnoticed.)
Exit 77 (skipped) when the fortunes or jargon-text packages are missing.
"""
import os
import subprocess
import sys
import tempfile

FORTUNES = "/usr/share/games/fortunes"
JARGON = "/usr/share/doc/jargon-text/jargon.txt.gz"
K = 8
MIN_BYTES = 1 << 20


def shingles(words):
    """every run of K consecutive words, as one string"""
    return {" ".join(words[i:i + K]) for i in range(len(words) - K + 1)}


def fortune_entries():
    """the fortune entries as corpus.sh reads them"""
    for name in sorted(os.listdir(FORTUNES)):
        path = os.path.join(FORTUNES, name)
        if name.endswith((".dat", ".u8")) or os.path.islink(path) or not os.path.isfile(path):
            continue
        text = open(path, encoding="utf-8", errors="replace").read()
        yield from text.split("\n%\n")


def read_text(path, failures):
    raw = open(path, "rb").read()
    if len(raw) < MIN_BYTES:
        failures.append(f"{path}: {len(raw)} bytes, expected at least {MIN_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        failures.append(f"{path}: not UTF-8 at byte {e.start}: {raw[max(0, e.start - 20):e.start + 20]!r}")
        return raw.decode("utf-8", errors="replace")
    if "\0" in text:
        failures.append(f"{path}: holds a NUL byte at character {text.index(chr(0))}")
    if "\ufffd" in text:
        failures.append(f"{path}: holds U+FFFD (a replaced undecodable byte) at character {text.index(chr(0xfffd))}")
    words = text.split()
    if len(words) < MIN_BYTES // 20:
        failures.append(f"{path}: only {len(words)} words")
    return text


def main():
    script = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "deploy",
                                                                  "corpus.sh")
    for need in (os.path.join(FORTUNES, "fortunes"), JARGON):
        if not os.path.exists(need):
            print(f"corpus_disjoint: skipped, {need} is missing (apt-get install fortunes jargon-text)")
            return 77
    failures = []
    with tempfile.TemporaryDirectory(prefix="hearth-corpus-") as tmp:
        out = os.path.join(tmp, "text")
        r = subprocess.run(["bash", script, out], capture_output=True, text=True, timeout=240)
        sys.stderr.write(r.stderr)
        if r.returncode != 0:
            print(f"FAIL: {script} {out} exited with {r.returncode}")
            return 1
        if r.stdout.strip() != out:
            failures.append(f"corpus.sh printed {r.stdout.strip()!r}, expected the folder {out!r}")
        cal_path = os.path.join(out, "calibration.txt")
        eva_path = os.path.join(out, "evaluation.txt")
        for p in (cal_path, eva_path):
            if not os.path.isfile(p):
                print(f"FAIL: {p} was not made")
                return 1
        extra = sorted(set(os.listdir(out)) - {"calibration.txt", "evaluation.txt"})
        if extra:
            failures.append(f"corpus.sh left other files in {out}: {extra}")
        cal = read_text(cal_path, failures)
        eva = read_text(eva_path, failures)

    held_out = shingles(eva.split())
    cal_shingles = shingles(cal.split())
    shared = cal_shingles & held_out
    print(f"calibration: {len(cal.encode())} bytes, {len(cal_shingles)} distinct {K}-word runs; "
          f"evaluation: {len(eva.encode())} bytes, {len(held_out)}")
    if shared:
        examples = sorted(shared)[:5]
        failures.append(f"calibration and evaluation share {len(shared)} runs of {K} words, e.g. {examples}")

    # the filter must have had something to remove, and have removed it
    quoting = 0
    raw_shared = set()
    for entry in fortune_entries():
        s = shingles(entry.split()) & held_out
        if s:
            quoting += 1
            raw_shared |= s
    print(f"raw fortunes: {quoting} entries share {len(raw_shared)} runs of {K} words with the evaluation text")
    if quoting == 0:
        failures.append("no raw fortune shares a run of 8 words with the evaluation text: this test could not "
                        "tell a working filter from none")
    leaked = raw_shared & cal_shingles
    if leaked:
        failures.append(f"{len(leaked)} of the quoting runs reached the calibration text, e.g. {sorted(leaked)[:3]}")

    for f in failures:
        print("FAIL:", f)
    if failures:
        return 1
    print("corpus_disjoint: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
