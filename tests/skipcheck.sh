#!/usr/bin/env bash
# skipcheck: fails when a ctest run skipped a test it may not skip.
#
#   tests/skipcheck.sh BUILD=LOG [BUILD=LOG...]
#
# Each LOG is the console log of the suite of build folder BUILD (ctest's
# stdout, or what `ctest -O FILE` wrote); the sanitizer build's suite, run by the `sanitizers` test, writes
# its own to build-san/Testing/Temporary/console.log. A skipped test is a line
# "N/M Test #K: NAME ....***Skipped". On a machine set up by deploy/setup.sh
# a skip means setup failed (a missing package, a missing model, the wrong
# Python), not that the test passed, so every skip fails except:
#   - cuda_*: needs a GPU, which CI machines do not have;
#   - the names in ALLOWED below, each skipped in one build for the reason
#     given there and in the test itself.
# Prints the skipped tests of each log and the ones not allowed; exit 1 when
# there is one, 2 when a log is missing (a suite that did not run).
set -uo pipefail

# "BUILD:test-name" -> reason
declare -A ALLOWED=(
    ["build-san:sidecar_hostile"]="RLIMIT_AS and AddressSanitizer's shadow memory do not mix (tests/test_sidecar.c, test_hostile)"
)

[ $# -gt 0 ] || { echo "usage: $0 BUILD=CTEST_LOG [BUILD=CTEST_LOG...]" >&2; exit 2; }
bad=()
for arg in "$@"; do
    build=${arg%%=*} log=${arg#*=}
    if [ "$build" = "$arg" ] || [ -z "$build" ]; then
        echo "skipcheck: '$arg' is not BUILD=LOG" >&2
        exit 2
    fi
    if [ ! -s "$log" ]; then
        echo "skipcheck: $log: missing or empty (the suite did not run?)" >&2
        exit 2
    fi
    mapfile -t skipped < <(sed -n 's/^ *[0-9]*\/[0-9]* Test *#[0-9]*: \([^ ]*\) .*\*\*\*Skipped.*/\1/p' "$log")
    echo "skipcheck: $build: ${#skipped[@]} skipped${skipped:+: ${skipped[*]}}"
    for t in "${skipped[@]}"; do
        case "$t" in cuda_*) continue ;; esac
        reason=${ALLOWED["$build:$t"]:-}
        if [ -n "$reason" ]; then
            echo "skipcheck:   $t allowed in $build: $reason"
        else
            bad+=("$build:$t")
        fi
    done
done
if [ ${#bad[@]} -gt 0 ]; then
    echo "skipcheck: FAILED: skipped outside the GPU tests (a setup step is missing): ${bad[*]}" >&2
    exit 1
fi
exit 0
