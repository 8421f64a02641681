#!/usr/bin/env bash
# corpus.sh: the real English texts hearth profiles and evaluates on, from
# Debian packages, so that a fresh machine has them offline.
#
#   calibration.txt  the `fortunes` collection (quotations, jokes, verse,
#                    definitions: varied everyday English), used by
#                    `hearth profile`;
#   evaluation.txt   the Jargon File (`jargon-text`, long expository prose),
#                    used by `hearth perplexity` to judge the sparse model.
#
# The two never overlap: the calibration must not see the evaluation text
# (tests/test_corpus.py checks it). Output folder: $1, default
# $HEARTH_DATA, default ~/.cache/hearth/text. Prints the folder.
set -euo pipefail
out=${1:-${HEARTH_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/hearth/text}}
mkdir -p "$out"

fortunes=/usr/share/games/fortunes
jargon=/usr/share/doc/jargon-text/jargon.txt.gz
for f in "$fortunes/fortunes" "$jargon"; do
    [ -e "$f" ] || { echo "corpus: $f is missing (apt-get install fortunes jargon-text)" >&2; exit 1; }
done

tmp=$(mktemp "$out/.evaluation.XXXXXX")
# the text rendering indents everything and draws tables with box
# characters: keep the prose, unindented
zcat "$jargon" | grep -v '[─│┌┐└┘├┤┬┴┼]' | sed -e 's/^ *//' | cat -s >"$tmp"
chmod 644 "$tmp"
mv "$tmp" "$out/evaluation.txt"

# fortune files: entries separated by lines holding only "%" (the .dat
# indexes and .u8 links are not text). Some fortunes quote the Jargon File:
# an entry sharing any run of 8 words with the evaluation text is dropped.
tmp=$(mktemp "$out/.calibration.XXXXXX")
python3 - "$fortunes" "$out/evaluation.txt" "$tmp" <<'PY'
import os, sys
src, evaluation, dst = sys.argv[1:4]
K = 8
def shingles(words):
    return {tuple(words[i:i + K]) for i in range(len(words) - K + 1)}
held_out = shingles(open(evaluation, encoding="utf-8", errors="replace").read().split())
kept = dropped = 0
with open(dst, "w", encoding="utf-8") as out:
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if name.endswith((".dat", ".u8")) or os.path.islink(path) or not os.path.isfile(path):
            continue
        text = open(path, encoding="utf-8", errors="replace").read()
        for entry in text.split("\n%\n"):
            if shingles(entry.split()) & held_out:
                dropped += 1
                continue
            kept += 1
            out.write(entry.strip("\n%") + "\n\n")
print(f"corpus: calibration keeps {kept} fortunes, drops {dropped} that quote the evaluation text", file=sys.stderr)
PY
chmod 644 "$tmp"
mv "$tmp" "$out/calibration.txt"
echo "$out"
