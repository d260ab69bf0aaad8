#!/usr/bin/env bash
# Prints the "Relay (federation)" figures of docs/performance.md from relay.sh's JSON
# files: the median of the runs of each mode (by its main rate), and the relay's
# end-to-end rate as a ratio of the same run's local-delivery baseline.
#   crates/cmtp-bench/scripts/relay-summary.sh OUTDIR
set -euo pipefail
OUT=${1:?usage: relay-summary.sh OUTDIR}
cd "$OUT"
have() { compgen -G "$1" >/dev/null; }
# The median run by a jq path (runs without it, failed ones, are left out).
median() { jq -s "map(select($1 != null)) | sort_by($1) | if length == 0 then null else .[(length - 1) / 2 | floor] end" "${@:2}"; }
all() { jq -r --arg f "$1" 'if .[$f] == null then "failed" else .[$f] | floor | tostring end' "${@:2}" | paste -sd/ -; }
BASE=0
if have 'baseline-*.json'; then
    m=$(median .per_sec baseline-*.json)
    BASE=$(jq '.per_sec // 0' <<<"$m")
    jq -r --arg runs "$(all per_sec baseline-*.json)" '
      "baseline (mail straight to B, local durable delivery): \(.connections) x \(.size / 1024) KiB, \(.per_sec | floor) msgs/s (runs \($runs)), p50 \(.latency.p50_ms) ms, B CPU \(.server_side.cpu_us_per_op // 0 | floor) us/msg, load \(.load_avg[0])"' <<<"$m"
fi
for how in mail submit; do
    have "relay-$how-*.json" || continue
    m=$(median .e2e_per_sec relay-$how-*.json)
    [[ $m == null ]] && { echo "relay $how: every run failed"; continue; }
    jq -r --argjson base "$BASE" --arg runs "$(all e2e_per_sec relay-$how-*.json)" --arg sruns "$(all submit_per_sec relay-$how-*.json)" '
      "relay \(.submission): \(.connections) x \(.size / 1024) KiB, \(.ok) msgs: end to end \(.e2e_per_sec | floor)/s (runs \($runs))"
      + (if $base > 0 then ", \((.e2e_per_sec / $base * 100) | floor) % of the baseline" else "" end)
      + "; submitted at A \(.submit_per_sec | floor)/s (runs \($sruns)), p50 \(.submit_latency.p50_ms) ms; tail \(.tail_seconds * 100 | floor / 100) s"
      + "; CPU A \(.cpu_s.a // 0 | . * 100 | floor / 100) s, B \(.cpu_s.b // 0 | . * 100 | floor / 100) s, client \(.cpu_s.client * 100 | floor / 100) s"
      + "; deferred \(.a_metrics_delta.cmtpd_relay_deferred_total // 0); load \(.load_avg[0])"' <<<"$m"
done
if have 'relay-latency-*.json'; then
    m=$(median .relay.p50_ms relay-latency-*.json)
    jq -r --arg runs "$(jq -r '.relay.p50_ms // "failed"' relay-latency-*.json | paste -sd/ -)" '
      "latency A SUCCESS -> B SUCCESS (\(.messages) msgs, one in flight): p50 \(.relay.p50_ms) p90 \(.relay.p90_ms) p99 \(.relay.p99_ms) ms (p50 of runs \($runs)); poll p50 \(.poll.p50_ms) ms; submit p50 \(.submit.p50_ms) ms; load \(.load_avg[0])"' <<<"$m"
fi
if have 'relay-drain-*.json'; then
    m=$(median .drain_per_sec relay-drain-*.json)
    [[ $m == null ]] && { echo "drain: every run failed"; exit 0; }
    jq -r --arg runs "$(all drain_per_sec relay-drain-*.json)" --arg growth "$(jq -r '(.rss_growth // null) | if . == null then "failed" else (. / 1048576 * 10 | floor / 10 | tostring) end' relay-drain-*.json | paste -sd/ -)" '
      "drain \(.queued) msgs: \(.drain_per_sec | floor)/s (runs \($runs)) in \(.drain_seconds * 100 | floor / 100) s; queued at \(.queue_per_sec | floor)/s with B down; A RSS before queueing \(.rss_before_queue / 1048576 * 10 | floor / 10), start \(.rss_start / 1048576 * 10 | floor / 10), peak \(.rss_peak / 1048576 * 10 | floor / 10), end \(.rss_end / 1048576 * 10 | floor / 10) MiB; growth \(.rss_growth / 1048576 * 10 | floor / 10) MiB (runs \($growth)); load \(.load_avg[0])"' <<<"$m"
fi
