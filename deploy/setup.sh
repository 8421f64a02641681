#!/usr/bin/env bash
# setup.sh: everything hearth needs on a Debian 12 machine, then the build.
#
#   1. Debian packages (compilers, CMake, ZeroMQ, hwloc, protobuf-c, GLPK,
#      Python), installed only when missing (sudo when not root);
#   2. a Python virtual environment in .venv with the test oracles' packages
#      (numpy, gguf, tokenizers, jinja2);
#   3. two builds: build-san (clang, ASan + UBSan, libFuzzer targets; no
#      CUDA: the sanitizers do not see device code) and build (the default
#      compiler, warnings as errors, the CUDA backend when nvcc is found),
#      whose ctest also runs the sanitizer build's tests;
#   4. the default model, fetched once into $HEARTH_MODELS (~/.cache/hearth/models);
#   5. the calibration and evaluation texts for `hearth profile` and
#      `hearth perplexity` (deploy/corpus.sh, from the Debian packages
#      fortunes and jargon-text) in $HEARTH_DATA (~/.cache/hearth/text).
#
# Safe to run again: each step does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

say() { printf 'setup: %s\n' "$*" >&2; }

packages=(build-essential cmake pkg-config clang libclang-rt-dev python3 python3-pip python3-venv
          libzmq3-dev libhwloc-dev libprotobuf-c-dev protobuf-c-compiler libglpk-dev
          libmicrohttpd-dev libjansson-dev chromium chromium-driver systemd
          fortunes jargon-text)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    say "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

venv="$root/.venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import numpy, gguf, tokenizers, jinja2, openai, selenium, pytest, aiohttp' 2>/dev/null; then
    say "creating the Python environment for the test oracles in .venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check numpy gguf tokenizers jinja2 \
        openai selenium pytest aiohttp >&2
fi

jobs=$(nproc 2>/dev/null || echo 2)
say "building build-san (clang, ASan+UBSan, fuzzers)"
CC=clang cmake -S . -B build-san -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHEARTH_SANITIZE=ON -DHEARTH_FUZZ=ON -DHEARTH_CUDA=OFF \
    -DHEARTH_PYTHON="$venv/bin/python" >/dev/null
cmake --build build-san -j "$jobs" >&2
say "building build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DHEARTH_SAN_DIR="$root/build-san" \
    -DHEARTH_PYTHON="$venv/bin/python" >/dev/null
cmake --build build -j "$jobs" >&2

say "fetching the default model"
./build/hearth fetch >/dev/null
say "making the calibration and evaluation texts"
./deploy/corpus.sh >/dev/null
say "ready: ./build/hearth run -p \"Hello\""
