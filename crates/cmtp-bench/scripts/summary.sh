#!/usr/bin/env bash
# Prints the Markdown tables of docs/performance.md from perf-suite.sh's JSON files:
# medians over the runs (the run with the median rate is shown whole).
#   crates/cmtp-bench/scripts/summary.sh OUTDIR
set -euo pipefail
OUT=${1:?usage: summary.sh OUTDIR}
cd "$OUT"
have() { compgen -G "$1" >/dev/null; }
# first-run files of the mail matrix, by size then connections
order() { for s in 1k 10k 100k 1M 10M; do ls mail-$s-*-1.json 2>/dev/null | sort -t- -k3,3n; done; }
# median run by a numeric field: prints that run's JSON
median() { jq -s --arg f "$1" 'map(select(.[$f] != null)) | sort_by(.[$f]) | if length == 0 then empty else .[(length - 1) / 2 | floor] end' "${@:2}"; }

FS1=0; FSO1=0; FS4=0; TCP1=0; TCP8=0; SEQ=0
if have 'limits-*.json'; then
    echo "### Machine ceilings (limits, median of $(ls limits-*.json | wc -l) runs)"
    echo
    echo "| measurement | rate | p50 | p99 | load (1 min) |"
    echo "|---|---|---|---|---|"
    for mode in append overwrite; do
    for t in 1 4; do
        m=$(jq -s --argjson t $t --arg mode $mode '[.[] | {ops: (.fsync[] | select(.threads == $t and (.mode // "append") == $mode)), load: .load_avg}] | sort_by(.ops.ops_per_sec) | .[(length - 1) / 2 | floor]' limits-*.json)
        [[ $m == null ]] && continue
        jq -r --argjson t $t --arg mode $mode '"| \($mode) \(.ops.record_size) B + fdatasync, \($t) thread(s) | \(.ops.ops_per_sec | floor)/s (\(.ops.mb_per_sec * 10 | floor / 10) MB/s) | \(.ops.p50_ms * 1000 | floor / 1000) ms | \(.ops.p99_ms * 1000 | floor / 1000) ms | \(.load[0]) |"' <<<"$m"
        v=$(jq '.ops.ops_per_sec' <<<"$m")
        if [[ $t == 1 && $mode == append ]]; then FS1=$v; fi
        if [[ $t == 1 && $mode == overwrite ]]; then FSO1=$v; fi
    done
    done
    m=$(jq -s '[.[] | select(.seq != null) | .seq + {load: .load_avg}] | sort_by(.mb_per_sec) | .[(length - 1) / 2 | floor]' limits-*.json)
    if [[ $m != null ]]; then
        jq -r '"| sequential write \(.bytes / 1048576) MiB + one fdatasync | \(.mb_per_sec | floor) MB/s durable (\(.write_mb_per_sec | floor) MB/s into the page cache) | | | \(.load[0]) |"' <<<"$m"
        SEQ=$(jq '.mb_per_sec' <<<"$m")
    fi
    for s in 1 8; do
        m=$(jq -s --argjson s $s '[.[] | .load_avg as $l | .tcp[] | select(.streams == $s) | . + {load: $l}] | sort_by(.mb_per_sec) | .[(length - 1) / 2 | floor]' limits-*.json)
        [[ $m == null ]] && continue
        jq -r '"| loopback TCP, \(.streams) stream(s) | \(.mb_per_sec | floor) MB/s (\(.gbit_per_sec * 10 | floor / 10) Gbit/s) | | | \(.load[0]) |"' <<<"$m"
        v=$(jq '.mb_per_sec' <<<"$m"); if [[ $s == 1 ]]; then TCP1=$v; else TCP8=$v; fi
    done
    echo
fi

if have 'mail-*.json'; then
    echo "### Durable MAIL accept rate (median of runs; ratios to this run's ceilings)"
    echo
    echo "| size | conns | msgs/s | MB/s | p50 ms | p99 ms | failures | server CPU µs/msg | ÷ append+fdatasync/s (1 thr) | ÷ overwrite+fdatasync/s (1 thr) | MB/s ÷ TCP 1 stream | load |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    for f in $(order); do
        base=${f%-1.json}
        m=$(median per_sec "$base"-*.json)
        [[ -z $m ]] && continue
        jq -r --argjson fs "$FS1" --argjson fso "$FSO1" --argjson tcp "$TCP1" '
          def r2: . * 100 | round / 100;
          "| \(.size / 1024 | if . >= 1024 then "\(. / 1024) MiB" else "\(.) KiB" end) | \(.connections) | \(.per_sec | round) | \(.mb_per_sec | r2) | \(.latency.p50_ms | r2) | \(.latency.p99_ms | r2) | \(.failures) | \(.server_side.cpu_us_per_op // 0 | round) | \(if $fs > 0 then (.per_sec / $fs | r2) else "?" end) | \(if $fso > 0 then (.per_sec / $fso | r2) else "?" end) | \(if $tcp > 0 then (.mb_per_sec / $tcp * 1000 | round / 1000) else "?" end) | \(.load_avg[0]) |"' <<<"$m"
    done
    echo
    echo "Server metrics that changed during the median 10 KiB × 32 run (after − before):"
    echo
    m=$(median per_sec mail-10k-32-*.json 2>/dev/null || true)
    [[ -n $m ]] && jq -r '.server_side.metrics_delta // {} | to_entries[] | select(.key | contains("_bucket") | not) | "    \(.key) \(.value)"' <<<"$m"
    echo
    echo "Records per fsync (group commit batch) in the median run of each configuration:"
    echo
    echo "| size | conns | records/fsync | mean fsync ms |"
    echo "|---|---|---|---|"
    for f in $(order); do
        m=$(median per_sec "${f%-1.json}"-*.json)
        [[ -z $m ]] && continue
        jq -r '(.server_side.metrics_delta // {}) as $d | ($d["cmtpd_store_fsync_seconds_count"] // 0) as $n |
          "| \(.size) | \(.connections) | \(if $n > 0 then ($d["cmtpd_store_records_total"] / $n * 10 | round / 10) else "?" end) | \(if $n > 0 then ($d["cmtpd_store_fsync_seconds_sum"] / $n * 1e4 | round / 10) else "?" end) |"' <<<"$m"
    done
    echo
fi

if have 'keyrequest-*.json'; then
    echo "### KEYREQUEST (pipelined in windows of 64 per connection)"
    echo
    echo "| key | conns | req/s | p50 ms (window) | p99 ms | failures | server CPU µs/req | load |"
    echo "|---|---|---|---|---|---|---|---|"
    for k in "" user-; do
    for c in 1 8; do
        have "keyrequest-$k$c-*.json" || continue
        median per_sec keyrequest-$k$c-*.json | jq -r --arg who "${k:+user bench}" 'def r2: . * 100 | round / 100;
          "| \(if $who == "" then "server key" else $who end) | \(.connections) | \(.per_sec | round) | \(.latency.p50_ms | r2) | \(.latency.p99_ms | r2) | \(.failures) | \(.server_side.cpu_us_per_op // 0 | r2) | \(.load_avg[0]) |"'
    done
    done
    echo
fi

if have 'idle-*.json'; then
    echo "### Idle connections (each run in turn on one server: the first starts fresh)"
    echo
    echo "| run | opened | RSS before | RSS with them | per connection | after close | load |"
    echo "|---|---|---|---|---|---|---|"
    for f in $(ls idle-*.json | sort -t- -k2,2n); do
        jq -r --arg f "$f" 'def mib: . / 1048576 * 10 | round / 10 | "\(.) MiB";
          "| \($f | ltrimstr("idle-") | rtrimstr(".json")) | \(.opened) of \(.requested) | \(.rss_before | mib) | \(.rss_idle | mib) | \(.per_connection / 1024 * 10 | round / 10) KiB | \(.rss_after_close | mib) | \(.load_avg[0]) |"' "$f"
    done
    echo
fi

if have 'big-*.json'; then
    echo "### One 1 GiB message"
    echo
    echo "| reply | MB/s | ÷ sequential write | RSS before | peak | growth | after | last byte → reply | server CPU | load |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    median rss_growth big-*.json | jq -r --argjson seq "$SEQ" 'def mib: . / 1048576 * 10 | round / 10 | "\(.) MiB";
      "| \(.reply) | \(.mb_per_sec | round) | \(if $seq > 0 then (.mb_per_sec / $seq * 100 | round / 100) else "?" end) | \(.rss_before | mib) | \(.rss_peak | mib) | \(.rss_growth | mib) | \(.rss_after | mib) | \(.tail_ms | round) ms | \(.server_cpu_s // 0 | . * 100 | round / 100) s | \(.load_avg[0]) |"'
    echo
fi
