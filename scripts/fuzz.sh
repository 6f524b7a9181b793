#!/usr/bin/env bash
# Fuzzes every parser of outside data (Sources/CNMFuzzTargets) with libFuzzer, one target after the
# other, and prints what each run did. A crash or a timeout is saved as Fuzz/crashes/<target>/<kind>-<hash>
# and makes the script exit 1 once every target has run.
#
# usage: scripts/fuzz.sh [target...]      (default: every target)
#   FUZZ_SECONDS  seconds per target (default 60)
#   FUZZ_RSS_MB   memory limit per target, MiB (default 2048)
#
# The sanitized build goes to .build/fuzz; the corpus grows in .build/fuzz/corpus/<target>, seeded from
# ../shared/fixtures, this host's /proc and the committed Fuzz/seeds and Fuzz/regressions; the keywords
# of a target's format are in Fuzz/dictionaries/<target>.dict.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${FUZZ_SECONDS:-60}
rss_mb=${FUZZ_RSS_MB:-2048}
build=.build/fuzz

echo "fuzz: building cnm-fuzz (address sanitizer, libFuzzer)"
# SwiftPM passes each sanitizer as its own -sanitize= flag, of which the Swift driver keeps only the last:
# without the combined flag after them, Swift code gets no coverage instrumentation and libFuzzer runs
# blind. lld: gold links the sanitizer runtime with a warning per symbol.
swift_build=(swift build --build-path "$build" --sanitize=fuzzer --sanitize=address --product cnm-fuzz
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld)
CNM_FUZZ=1 nice "${swift_build[@]}"
fuzzer=$(CNM_FUZZ=1 "${swift_build[@]}" --show-bin-path)/cnm-fuzz

# The binary lists its targets when started without one.
mapfile -t known < <(env -u CNM_FUZZ_TARGET "$fuzzer" 2>&1 | sed -n 's/.*one of: //p' | tr ' ' '\n')
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${known[@]}"); fi
for target in "${targets[@]}"; do
    if ! printf '%s\n' "${known[@]}" | grep -qx -- "$target"; then
        echo "fuzz: no target $target (there are: ${known[*]})" >&2
        exit 2
    fi
done

if [ -d ../shared/fixtures ]; then
    python3 scripts/fuzz-corpus.py ../shared/fixtures "$build/corpus"
else
    echo "fuzz: no ../shared/fixtures beside the checkout; seeding from Fuzz/seeds only" >&2
fi

rows=()
failed=0
for target in "${targets[@]}"; do
    corpus=$root/$build/corpus/$target
    crashes=$root/Fuzz/crashes/$target
    logs=$root/$build/logs/$target
    mkdir -p "$corpus" "$crashes" "$logs"
    rm -f "$logs"/fuzz-*.log
    inputs=("$corpus")
    for extra in "$root/Fuzz/seeds/$target" "$root/Fuzz/regressions/$target"; do
        [ -d "$extra" ] && inputs+=("$extra")
    done
    options=()
    # A dictionary of the format's keywords, which mutation alone seldom spells.
    [ -f "$root/Fuzz/dictionaries/$target.dict" ] && options+=(-dict="$root/Fuzz/dictionaries/$target.dict")
    before=$(find "$crashes" -type f | wc -l)
    echo "fuzz: $target for ${seconds}s"
    start=$(date +%s)
    status=0
    # -jobs=1 runs the fuzzer as one child whose output goes to fuzz-0.log in the working directory;
    # SWIFT_BACKTRACE off leaves a trap to libFuzzer's handler, which saves the input.
    (cd "$logs" && CNM_FUZZ_TARGET=$target SWIFT_BACKTRACE=enable=no "$fuzzer" \
        -max_total_time="$seconds" -jobs=1 -rss_limit_mb="$rss_mb" -timeout=10 \
        -artifact_prefix="$crashes/" -print_final_stats=1 "${options[@]}" "${inputs[@]}" \
        >/dev/null 2>&1) || status=$?
    elapsed=$(($(date +%s) - start))
    log=$logs/fuzz-0.log
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" 2>/dev/null | tail -1)
    found=$(($(find "$crashes" -type f | wc -l) - before))
    if [ "$status" -ne 0 ] || [ "$found" -gt 0 ]; then
        failed=1
        echo "fuzz: $target failed (exit status $status); from $log:" >&2
        # The trap's message (a failed invariant, or a runtime failure and the line it is on).
        grep -E -A1 "Fatal error|Swift runtime failure|ERROR: libFuzzer|Test unit written" "$log" 2>/dev/null \
            | grep -v "^--" | head -8 >&2 || true
    fi
    rows+=("$(printf '%-20s %12s %8s %8s %8s' "$target" "${runs:-?}" "$elapsed" \
        "$(find "$corpus" -type f | wc -l)" "$found")")
done

printf '\n%-20s %12s %8s %8s %8s\n' target executions seconds corpus crashes
printf '%s\n' "${rows[@]}"
if [ "$failed" -ne 0 ]; then
    echo "fuzz: crashes or timeouts; reproducers are in Fuzz/crashes/<target>/ (replay one with" >&2
    echo "      CNM_FUZZ_TARGET=<target> $fuzzer <file>)" >&2
fi
exit "$failed"
