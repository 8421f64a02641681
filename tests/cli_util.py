"""cli_util: the hearth binary driven from the pipeline tests (test_hotcold.py,
test_insparse_pipeline.py): run a command, check a condition (the first
failure prints the command's exit status and the ends of its output, and
exits 1), expect an error, read a perplexity, make the corpus texts."""
import os
import re
import subprocess
import sys


def check(cond, what, res=None):
    if not cond:
        print("FAIL:", what)
        if res:
            print("  exit:", res[0])
            print("  stdout:", res[1][-3000:])
            print("  stderr:", res[2][-3000:])
        sys.exit(1)
    print("ok:", what)


def ppl(res):
    m = re.search(r"^PPL = ([0-9.]+)$", res[1], re.M)
    check(m is not None, "perplexity printed", res)
    return float(m.group(1))


class Cli:
    def __init__(self, binary):
        self.binary = binary

    def run(self, args, timeout=900):
        p = subprocess.run([self.binary] + args, capture_output=True, timeout=timeout)
        return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")

    def ok(self, args, what):
        res = self.run(args)
        check(res[0] == 0, what, res)
        return res

    def expect_error(self, args, needle, what):
        res = self.run(args)
        check(res[0] != 0 and needle in res[2], what + f" (stderr has {needle!r})", res)


def corpus_texts(script, tmp):
    """The calibration and evaluation texts (deploy/corpus.sh) in tmp, or None (printed why) when they cannot be made."""
    p = subprocess.run([script, tmp], capture_output=True)
    if p.returncode != 0:
        print("skip: no corpus:", p.stderr.decode())
        return None
    return os.path.join(tmp, "calibration.txt"), os.path.join(tmp, "evaluation.txt")
