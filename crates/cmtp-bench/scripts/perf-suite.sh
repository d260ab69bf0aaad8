#!/usr/bin/env bash
# Runs the whole docs/performance.md suite against a fresh cmtpd on loopback and writes
# one JSON file per run into OUTDIR, then prints the medians as Markdown (summary.sh).
#
#   cargo build --release -p cmtpd -p cmtp-bench
#   crates/cmtp-bench/scripts/perf-suite.sh /tmp/cmtp-perf [SECONDS] [RUNS]
#
# Every figure is bounded: SECONDS per mail/keyrequest run (default 5), RUNS runs each
# (default 3). The server gets a fresh data directory per message size (so one size's
# stored mail never slows the next) and the benchmark limits of bench-cmtpd.toml.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
CMTPD=${CMTPD:-$ROOT/target/release/cmtpd}
BENCH=${BENCH:-$ROOT/target/release/cmtp-bench}
OUT=${1:-/tmp/cmtp-perf-$(date +%s)}
SECS=${2:-5}
RUNS=${3:-3}
SIZES=${SIZES:-"1k 10k 100k 1M"}
CONNS=${CONNS:-"1 8 32"}
PARTS=${PARTS:-"limits mail keyrequest idle big"}
mkdir -p "$OUT"
SERVER_PID=""

stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
    if [[ -n "${DATA:-}" ]]; then rm -rf "$DATA"; DATA=""; fi
}
trap stop_server EXIT

start_server() {
    DATA=$(mktemp -d /tmp/bench-data-XXXXXX)
    local cfg="$OUT/cmtpd.toml"
    sed "s#@DATA@#$DATA#" "$(dirname "$0")/bench-cmtpd.toml" > "$cfg"
    rm -f "$OUT/ready"
    # The server raises its own RLIMIT_NOFILE; raise the shell's soft limit too.
    ulimit -n "$(ulimit -Hn)"
    "$CMTPD" --config "$cfg" serve --ready-file "$OUT/ready" >"$OUT/cmtpd.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        if [[ -s "$OUT/ready" ]] && grep -q '^metrics ' "$OUT/ready"; then break; fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then cat "$OUT/cmtpd.log"; exit 1; fi
        sleep 0.1   # polling a condition with a deadline (30 s), not synchronisation
    done
    ADDR=$(awk '$1=="cmtp"{print $2; exit}' "$OUT/ready")
    METRICS=$(awk '$1=="metrics"{print $2; exit}' "$OUT/ready")
    [[ -n "$ADDR" && -n "$METRICS" ]] || { echo "server not ready"; cat "$OUT/cmtpd.log"; exit 1; }
    echo "cmtpd pid $SERVER_PID on $ADDR (metrics $METRICS), data $DATA" >&2
}

run() { # name, args...
    local name=$1; shift
    echo "$(date -u +%T) $name (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    "$BENCH" --json "$@" > "$OUT/$name.json" || echo "{\"error\": \"run failed\"}" > "$OUT/$name.json"
}

for part in $PARTS; do
    case $part in
    limits)
        d=$(mktemp -d /tmp/bench-data-XXXXXX)
        for r in $(seq 1 "$RUNS"); do run "limits-$r" limits --dir "$d"; done
        rm -rf "$d" ;;
    mail)
        for size in $SIZES; do
            start_server
            for c in $CONNS; do
                for r in $(seq 1 "$RUNS"); do
                    run "mail-$size-$c-$r" mail --server "$ADDR" --server-pid "$SERVER_PID" \
                        --metrics "$METRICS" -c "$c" --size "$size" --seconds "$SECS"
                done
            done
            stop_server
        done ;;
    keyrequest)
        start_server
        # A user for the user-key figure (admin commands work while the server runs).
        printf 'bench-password-1\n' | "$CMTPD" --config "$OUT/cmtpd.toml" user add bench --password-stdin --allow-weak-password >&2
        for c in 1 8; do
            for r in $(seq 1 "$RUNS"); do
                run "keyrequest-$c-$r" keyrequest --server "$ADDR" --server-pid "$SERVER_PID" \
                    --metrics "$METRICS" -c "$c" --window 64 --seconds "$SECS"
                run "keyrequest-user-$c-$r" keyrequest --server "$ADDR" --server-pid "$SERVER_PID" \
                    --metrics "$METRICS" -c "$c" --window 64 --seconds "$SECS" --user bench
            done
        done
        stop_server ;;
    idle)
        start_server
        for r in $(seq 1 "$RUNS"); do
            run "idle-$r" idle --server "$ADDR" --server-pid "$SERVER_PID" -c 10000
        done
        stop_server ;;
    big)
        start_server
        for r in $(seq 1 "$RUNS"); do
            run "big-$r" big --server "$ADDR" --server-pid "$SERVER_PID" --size 1G
        done
        stop_server ;;
    esac
done
"$(dirname "$0")/summary.sh" "$OUT"
