#!/usr/bin/env bash
# docs/performance.md "Relay (federation)": server A (a.test) relays to server B (b.test),
# both durable, each with its own fresh data directory, on loopback. Builds the release
# binaries, then per mode starts fresh servers, runs `cmtp-bench relay` RUNS times and
# writes one JSON file per run into OUTDIR; prints the medians at the end.
#
#   crates/cmtp-bench/scripts/relay.sh OUTDIR [SECONDS] [RUNS]
#
# Modes (PARTS): baseline (`mail` straight to B: local durable delivery, the same-run
# reference), mail (relay, plain MAIL from a trusted network), submit (relay, SUBMIT
# signed per message), latency (one message in flight), drain (DRAIN messages queued
# while B is down, then B started and `cmtpd queue retry --all`; A's RSS sampled).
# Every run is bounded: SECONDS per rate run (default 5), DRAIN messages (100000), and
# `--complete-timeout` for the queue's tail. CONNS (32) and SIZE (10k) as the issue asks.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:?usage: relay.sh OUTDIR [SECONDS] [RUNS]}
SECS=${2:-5}
RUNS=${3:-3}
CONNS=${CONNS:-32}
SIZE=${SIZE:-10k}
DRAIN=${DRAIN:-100000}
LAT_MSGS=${LAT_MSGS:-300}
PARTS=${PARTS:-"baseline mail submit latency drain"}
if [[ -z "${NO_BUILD:-}" ]]; then
    (cd "$ROOT" && cargo build --release -p cmtpd -p cmtp-bench -p cmtp-cli)
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
CMTPD=${CMTPD:-$BIN/cmtpd}
BENCH=${BENCH:-$BIN/cmtp-bench}
CMTP=${CMTP:-$BIN/cmtp}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ulimit -n "$(ulimit -Hn)"
# B listens on a fixed port (A's static route), so it can be stopped and started again.
BPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
A_PID=""; B_PID=""; A_DATA=""; B_DATA=""

stop_one() { # pid
    if [[ -n "$1" ]]; then kill "$1" 2>/dev/null || true
        # Not our child when the drain's start command launched it: poll, with a deadline.
        for _ in $(seq 1 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
        wait "$1" 2>/dev/null || true
    fi
}
stop_all() {
    stop_one "$A_PID"; A_PID=""
    if [[ -f "$OUT/b.pid" ]]; then B_PID=$(cat "$OUT/b.pid"); rm -f "$OUT/b.pid"; fi
    stop_one "$B_PID"; B_PID=""
    rm -rf "$A_DATA" "$B_DATA"; A_DATA=""; B_DATA=""
}
trap stop_all EXIT

# Waits (30 s deadline) for a ready file with the metrics line; prints "ADDR METRICS".
ready() { # name pid
    for _ in $(seq 1 300); do
        if [[ -s "$OUT/$1.ready" ]] && grep -q '^metrics ' "$OUT/$1.ready"; then
            echo "$(awk '$1=="cmtp"{print $2; exit}' "$OUT/$1.ready") $(awk '$1=="metrics"{print $2; exit}' "$OUT/$1.ready")"
            return 0
        fi
        if ! kill -0 "$2" 2>/dev/null; then cat "$OUT/$1.log" >&2; return 1; fi
        sleep 0.1   # polling a condition with a deadline, not synchronisation
    done
    echo "$1 not ready" >&2; return 1
}

# B: the bench configuration, domain b.test, on BPORT (mailbox rate limits are already 0).
config_b() {
    sed -e "s#@DATA@#$B_DATA#" -e 's#^domains = .*#domains = ["b.test"]#' \
        -e "s#^listen = .*#listen = [\"127.0.0.1:$BPORT\"]#" "$HERE/bench-cmtpd.toml" > "$OUT/b.toml"
}
# A: the bench configuration, domain a.test, with a static route to B and our network
# trusted for plain MAIL; DNS a closed loopback port (never the machine's resolver).
config_a() {
    sed -e "s#@DATA@#$A_DATA#" -e 's#^domains = .*#domains = ["a.test"]#' "$HERE/bench-cmtpd.toml" > "$OUT/a.toml"
    cat >> "$OUT/a.toml" <<TOML

[federation]
routes = { "b.test" = "127.0.0.1:$BPORT" }
trusted_networks = ["127.0.0.0/8"]
dns = "127.0.0.1:1"
TOML
}

start_b() { # B's pid goes to $OUT/b.pid (the drain's start command runs this too)
    rm -f "$OUT/b.ready"
    "$CMTPD" --config "$OUT/b.toml" serve --ready-file "$OUT/b.ready" >>"$OUT/b.log" 2>&1 &
    echo $! > "$OUT/b.pid"
    local r; r=$(ready b "$(cat "$OUT/b.pid")") || return 1
    read -r B_ADDR B_METRICS <<<"$r"
}
# The drain's start command: B up, then A retries its whole queue now.
start_b_and_retry() {
    start_b && "$CMTPD" --config "$OUT/a.toml" queue retry --all >&2
}
export -f start_b ready start_b_and_retry
export OUT CMTPD

fresh_servers() {
    stop_all
    A_DATA=$(mktemp -d /tmp/bench-relay-a-XXXXXX); B_DATA=$(mktemp -d /tmp/bench-relay-b-XXXXXX)
    export A_DATA B_DATA
    config_a; config_b
    : > "$OUT/a.log"; : > "$OUT/b.log"
    start_b; B_PID=$(cat "$OUT/b.pid")
    printf 'bench-password-1\n' | "$CMTPD" --config "$OUT/b.toml" user add bob --password-stdin >&2
    rm -f "$OUT/a.ready"
    "$CMTPD" --config "$OUT/a.toml" serve --ready-file "$OUT/a.ready" >>"$OUT/a.log" 2>&1 &
    A_PID=$!
    local r; r=$(ready a "$A_PID")
    read -r A_ADDR A_METRICS <<<"$r"
    echo "A pid $A_PID $A_ADDR (metrics $A_METRICS), B pid $B_PID $B_ADDR (metrics $B_METRICS)" >&2
}

run() { # name, args...
    local name=$1; shift
    echo "$(date -u +%T) $name (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    if ! "$BENCH" --json "$@" > "$OUT/$name.json"; then
        echo "{\"error\": \"run failed\"}" > "$OUT/$name.json"
    fi
}

relay_args() {
    echo --server "$A_ADDR" --a-metrics "$A_METRICS" --a-pid "$A_PID" \
        --b-metrics "$B_METRICS" --b-pid "$B_PID" --to bob --domain b.test
}

for part in $PARTS; do
    case $part in
    baseline)
        fresh_servers
        for r in $(seq 1 "$RUNS"); do
            run "baseline-$r" mail --server "$B_ADDR" --server-pid "$B_PID" --metrics "$B_METRICS" \
                -c "$CONNS" --size "$SIZE" --seconds "$SECS" --to bob
        done ;;
    mail)
        fresh_servers
        for r in $(seq 1 "$RUNS"); do
            run "relay-mail-$r" relay $(relay_args) -c "$CONNS" --size "$SIZE" --seconds "$SECS"
        done ;;
    submit)
        fresh_servers
        # alice's 64-byte secret key, as `cmtp login --remember` stores it (hex, 0600).
        printf 'bench-password-2\n' | "$CMTPD" --config "$OUT/a.toml" user add alice --password-stdin >&2
        rm -rf "$OUT/alice"
        printf 'bench-password-2\n' | "$CMTP" --profile "$OUT/alice" login alice@a.test \
            --server "$A_ADDR" --password-stdin --remember >&2
        for r in $(seq 1 "$RUNS"); do
            run "relay-submit-$r" relay $(relay_args) -c "$CONNS" --size "$SIZE" --seconds "$SECS" \
                --submit-key "$OUT/alice/secret.key" --from alice --from-domain a.test
        done
        rm -rf "$OUT/alice" ;;
    latency)
        fresh_servers
        for r in $(seq 1 "$RUNS"); do
            run "relay-latency-$r" relay $(relay_args) --latency --messages "$LAT_MSGS" --size "$SIZE"
        done ;;
    drain)
        for r in $(seq 1 "$RUNS"); do
            fresh_servers
            stop_one "$B_PID"; B_PID=""; rm -f "$OUT/b.pid"   # B down: A defers everything
            run "relay-drain-$r" relay --server "$A_ADDR" --a-metrics "$A_METRICS" --a-pid "$A_PID" \
                --to bob --domain b.test -c "$CONNS" --size "$SIZE" --messages "$DRAIN" --drain \
                -- bash -c start_b_and_retry
        done ;;
    esac
done
stop_all
"$HERE/relay-summary.sh" "$OUT"
