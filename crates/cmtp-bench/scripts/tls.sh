#!/usr/bin/env bash
# TLS against plaintext in the same run (docs/performance.md "Transport encryption"):
# one fresh cmtpd (bench-cmtpd.toml, TLS offered as by default), then, alternating
# plain and --tls so that machine noise hits both alike, RUNS times each:
#   - mail: 32 connections, 10 KiB bodies, SECONDS seconds (durable MAIL throughput);
#   - idle: CONNS connections opened 64 at a time (connect, greeting, OHAI; with --tls
#     also TLSSTART, the handshake, greeting and OHAI again): setups per second;
#   - big: one 1 GiB message (when BIG=1).
# Writes one JSON file per run into OUTDIR and prints the medians.
#
#   cargo build --release -p cmtpd -p cmtp-bench
#   crates/cmtp-bench/scripts/tls.sh /tmp/cmtp-tls [SECONDS] [RUNS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
CMTPD=${CMTPD:-$ROOT/target/release/cmtpd}
BENCH=${BENCH:-$ROOT/target/release/cmtp-bench}
OUT=${1:-/tmp/cmtp-tls-$(date +%s)}
SECS=${2:-5}
RUNS=${3:-3}
CONNS=${CONNS:-2000}
BIG=${BIG:-0}
mkdir -p "$OUT"
DATA=$(mktemp -d /tmp/bench-data-XXXXXX)
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$DATA"
}
trap cleanup EXIT

sed "s#@DATA@#$DATA#" "$(dirname "$0")/bench-cmtpd.toml" > "$OUT/cmtpd.toml"
rm -f "$OUT/ready"
ulimit -n "$(ulimit -Hn)"
"$CMTPD" --config "$OUT/cmtpd.toml" serve --ready-file "$OUT/ready" >"$OUT/cmtpd.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
    if [[ -s "$OUT/ready" ]] && grep -q '^metrics ' "$OUT/ready"; then break; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then cat "$OUT/cmtpd.log"; exit 1; fi
    sleep 0.1   # polling a condition with a deadline (30 s), not synchronisation
done
ADDR=$(awk '$1=="cmtp"{print $2; exit}' "$OUT/ready")
METRICS=$(awk '$1=="metrics"{print $2; exit}' "$OUT/ready")
echo "cmtpd pid $SERVER_PID on $ADDR (metrics $METRICS)" >&2

run() { # name, args...
    local name=$1; shift
    echo "$(date -u +%T) $name (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    "$BENCH" --json "$@" > "$OUT/$name.json" || echo '{"error": "run failed"}' > "$OUT/$name.json"
}

for r in $(seq 1 "$RUNS"); do
    for mode in plain tls; do
        flag=""; [[ $mode == tls ]] && flag="--tls"
        run "mail-$mode-$r" mail -c 32 --size 10k --seconds "$SECS" --server "$ADDR" \
            --server-pid "$SERVER_PID" --metrics "$METRICS" $flag
        run "idle-$mode-$r" idle -c "$CONNS" --parallel 64 --server "$ADDR" \
            --server-pid "$SERVER_PID" $flag
        if [[ $BIG == 1 ]]; then
            run "big-$mode-$r" big --size 1G --server "$ADDR" --server-pid "$SERVER_PID" $flag
        fi
    done
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "| measurement | plaintext | TLS | TLS / plaintext |"
echo "|---|---|---|---|"
row() { # label, file glob stem, jq expression
    local p t
    p=$(for f in "$OUT"/"$2"-plain-*.json; do jq -r "$3" "$f"; done | median)
    t=$(for f in "$OUT"/"$2"-tls-*.json; do jq -r "$3" "$f"; done | median)
    echo "| $1 | $p | $t | $(awk -v a="$p" -v b="$t" 'BEGIN{printf "%.0f %%", 100*b/a}') |"
}
row "MAIL 10 KiB × 32, msgs/s" mail '.per_sec'
row "MAIL 10 KiB × 32, MB/s" mail '.mb_per_sec'
row "MAIL p50 latency, ms" mail '.latency.p50_ms'
row "server CPU per MAIL, µs" mail '.server_side.cpu_us_per_op'
row "connection setups/s ($CONNS, 64 in flight)" idle '.opened / .open_seconds'
row "idle RSS per connection, bytes" idle '.per_connection'
if [[ $BIG == 1 ]]; then
    row "1 GiB message, MB/s" big '.mb_per_sec'
fi
