#!/usr/bin/env bash
# Builds every fuzz target, then runs each for SECONDS (default 600), one after the other, at the
# lowest CPU priority. Needs `cargo install cargo-fuzz --locked`. The stable toolchain is enough:
# RUSTC_BOOTSTRAP=1 lets it take the -Z flags cargo-fuzz passes (sanitizer, coverage).
#
#   fuzz/run.sh [SECONDS]            # FUZZ_SANITIZER=none if AddressSanitizer is unavailable
#
# Each run's log (with libFuzzer's final stats) goes to fuzz/logs/TARGET.log; a crash leaves its
# input in fuzz/artifacts/TARGET/ and stops the script with a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-600}
sanitizer=${FUZZ_SANITIZER:-address}
targets=(${FUZZ_TARGETS:-notification_json notify_invocation line_protocol config_toml})
export RUSTC_BOOTSTRAP=1

# -a: debug assertions on, so integer overflow panics instead of wrapping silently.
flags=(--release --debug-assertions -s "$sanitizer")

# Build everything first, then run the built binaries: editing the sources while the fuzzers run
# does not trigger a rebuild in the middle of the runs.
nice -n 19 cargo fuzz build "${flags[@]}"
bin=fuzz/target/x86_64-unknown-linux-gnu/release
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0}

mkdir -p fuzz/logs
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    echo "== $t: $secs s ($(date -u +%FT%TZ))"
    # The first corpus directory collects new inputs; fuzz/seeds/$t (committed) is read only.
    nice -n 19 "$bin/$t" -artifact_prefix="fuzz/artifacts/$t/" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 "fuzz/corpus/$t" "fuzz/seeds/$t" 2>&1 | tee "fuzz/logs/$t.log"
    echo "== $t: corpus $(find "fuzz/corpus/$t" -type f | wc -l) files"
done
