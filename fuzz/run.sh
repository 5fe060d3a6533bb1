#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] - builds the libFuzzer targets (fuzz/build.sh) and runs each
# for SECONDS (default: $FUZZ_SECONDS, else 60), starting from its committed seed
# corpus fuzz/corpus/<target>/ (read only: what the run finds goes to a scratch
# directory) with its dictionary fuzz/dict/<target>.dict.
#
# Exits non-zero when any target crashes, leaks, hits a sanitizer report, times out
# on one input (-timeout) or exceeds the memory limit. The input that did it is kept
# in $FUZZ_BUILD_DIR/fuzz-artifacts/; reproduce with
#   build-fuzz/fuzz/<target> build-fuzz/fuzz-artifacts/<file>
#
# Environment: FUZZ_BUILD_DIR (default build-fuzz), FUZZ_TARGETS (default: all built),
# FUZZ_JOBS (targets run at once, default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-${FUZZ_SECONDS:-60}}
dir=${FUZZ_BUILD_DIR:-build-fuzz}
jobs=${FUZZ_JOBS:-1}

fuzz/build.sh "$dir" >/dev/null

targets=${FUZZ_TARGETS:-$(find "$dir/fuzz" -maxdepth 1 -type f -perm -u+x -name 'fuzz_*' \
                             -printf '%f\n' | sort | tr '\n' ' ')}
artifacts="$dir/fuzz-artifacts"
mkdir -p "$artifacts"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/cch-fuzz-run.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

run_one() {
    local t=$1 log="$scratch/$1.log"
    local args=(-max_total_time="$secs" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1
                -artifact_prefix="$artifacts/$t-")
    [ -f "fuzz/dict/$t.dict" ] && args+=(-dict="fuzz/dict/$t.dict")
    mkdir -p "$scratch/$t"
    if "$dir/fuzz/$t" "${args[@]}" "$scratch/$t" "fuzz/corpus/$t" >"$log" 2>&1; then
        local runs cov
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
        echo "fuzz: $t: ok, ${runs:-?} inputs in ${secs}s, $cov"
        return 0
    fi
    echo "fuzz: $t: FAILED (log below; the input is in $artifacts/)"
    grep -v '^#[0-9]' "$log" | tail -80
    return 1
}

failed=0
if [ "$jobs" -le 1 ]; then
    for t in $targets; do
        run_one "$t" || failed=$((failed + 1))
    done
else
    pids=()
    for t in $targets; do
        run_one "$t" > "$scratch/$t.out" 2>&1 &
        pids+=("$!:$t")
        while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
    done
    for p in "${pids[@]}"; do
        wait "${p%%:*}" || failed=$((failed + 1))
        cat "$scratch/${p#*:}.out"
    done
fi
n=$(echo $targets | wc -w)
echo "fuzz: $((n - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
