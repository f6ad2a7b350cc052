#!/usr/bin/env bash
# Builds the fuzz targets and runs each for SECONDS (default 60) with bounded memory and a bounded
# time per input. Fails if any target crashed, timed out or ran out of memory, printing the
# reproducer's path and the command that replays it. Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(policy_text schema_text entities_json authzen_body)
fi
# A time per input well above any legitimate one (the issue's worst write took 74 s; a bounded one
# takes well under 1 s), and the memory a node could spare for one request.
timeout_s="${FUZZ_TIMEOUT:-10}"
rss_mb="${FUZZ_RSS_MB:-2048}"

# Without sanitizers: the engine is safe Rust, and ASan's redzones would make stack frames far
# larger than in the node, so stack overflows would be found where a node has none. cargo-fuzz's
# one codegen unit is kept: with more, its coverage passes keep ThinLTO from inlining across units
# (cargo-fuzz's own note), and sixteen were no cheaper to build here (17 vs 16 CPU minutes).
flags=(-O -s none --fuzz-dir .)
python3 seeds.py
cargo +nightly fuzz build "${flags[@]}"
bin_dir="target/x86_64-unknown-linux-gnu/release"

failed=()
for t in "${targets[@]}"; do
    # New inputs go to a scratch corpus; the committed seeds are read only.
    mkdir -p "target/corpus/$t" "artifacts/$t"
    echo "== fuzz $t for ${seconds}s"
    start=$(date +%s)
    if "$bin_dir/$t" "target/corpus/$t" "corpus/$t" \
        -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout="$timeout_s" \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"target/$t.log" 2>&1; then
        echo "-- $t: no failure in $(($(date +%s) - start))s ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "target/$t.log" | grep -o '[0-9]*$') runs)"
    else
        echo "!! $t FAILED after $(($(date +%s) - start))s; the fuzzer's report:" >&2
        grep -E "ERROR: libFuzzer|overflowed its stack|panicked at|SUMMARY|Test unit written" "target/$t.log" | head -n 8 >&2 || true
        tail -n 5 "target/$t.log" >&2
        for a in $(grep -o "Test unit written to [^ ]*" "target/$t.log" | awk '{print $5}'); do
            echo "!! reproducer: fuzz/$a" >&2
            echo "!!   replay: (cd fuzz && $bin_dir/$t $a)  or  cargo +nightly fuzz run ${flags[*]} $t $a" >&2
        done
        if ! grep -q "Test unit written to" "target/$t.log"; then
            # A stack overflow on the input thread kills the process before libFuzzer can save the
            # input: name the seed or saved input that does it by replaying each alone.
            echo "!! $t died without saving its input (a stack overflow on the 2 MiB input thread?)" >&2
            for f in corpus/"$t"/* target/corpus/"$t"/*; do
                [ -f "$f" ] || continue
                if ! "$bin_dir/$t" "$f" >/dev/null 2>&1; then
                    echo "!! reproducer: fuzz/$f" >&2
                    echo "!!   replay: (cd fuzz && $bin_dir/$t $f)" >&2
                fi
            done
        fi
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "!! fuzz targets that failed: ${failed[*]} (full logs: fuzz/target/<target>.log)" >&2
    exit 1
fi
echo "== fuzz: ${targets[*]}: no failures"
