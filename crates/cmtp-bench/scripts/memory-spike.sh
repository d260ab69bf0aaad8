#!/usr/bin/env bash
# docs/performance.md "Memory after a spike": a fresh cmtpd per run (bench-cmtpd.toml,
# fresh data directory), then one `cmtp-bench spike`; one JSON file per run in OUTDIR.
#
#   crates/cmtp-bench/scripts/memory-spike.sh OUTDIR NAME [spike options...]
#   e.g. memory-spike.sh /tmp/spike glibc-stalled --pattern stalled -c 4000 --announce 1M --send 100k
#
# CMTPD and BENCH choose the binaries (default: target/release). Every run is bounded by
# the spike's own connection count, timeouts and settle deadline.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
CMTPD=${CMTPD:-$ROOT/target/release/cmtpd}
BENCH=${BENCH:-$ROOT/target/release/cmtp-bench}
OUT=$1; NAME=$2; shift 2
mkdir -p "$OUT"
DATA=$(mktemp -d /tmp/bench-data-XXXXXX)
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$DATA"
}
trap cleanup EXIT
cfg="$OUT/$NAME.toml"
sed "s#@DATA@#$DATA#" "$(dirname "$0")/bench-cmtpd.toml" > "$cfg"
rm -f "$OUT/$NAME.ready"
ulimit -n "$(ulimit -Hn)"
"$CMTPD" --config "$cfg" serve --ready-file "$OUT/$NAME.ready" >"$OUT/$NAME.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
    if [[ -s "$OUT/$NAME.ready" ]] && grep -q '^metrics ' "$OUT/$NAME.ready"; then break; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then cat "$OUT/$NAME.log"; exit 1; fi
    sleep 0.1   # polling a condition with a deadline (30 s), not synchronisation
done
ADDR=$(awk '$1=="cmtp"{print $2; exit}' "$OUT/$NAME.ready")
METRICS=$(awk '$1=="metrics"{print $2; exit}' "$OUT/$NAME.ready")
echo "$(date -u +%T) $NAME: cmtpd pid $SERVER_PID on $ADDR (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
"$BENCH" --json spike --server "$ADDR" --server-pid "$SERVER_PID" --metrics "$METRICS" "$@" > "$OUT/$NAME.json"
python3 - "$OUT/$NAME.json" <<'PY' >&2 || cat "$OUT/$NAME.json" >&2
import json,sys
r=json.load(open(sys.argv[1])); M=lambda b: f"{b/2**20:.1f}"
print(f"  opened {r['opened']} start {M(r['rss_start'])} peak {M(r['rss_peak'])} hwm {M(r['hwm_peak'])} loaded {M(r['rss_loaded'])} after {M(r['rss_after'])} MiB settled={r['settled']} in {r['settle_seconds']:.1f}s errors={r['errors'][:2]}")
PY
