#!/usr/bin/env bash
# The PostgreSQL backend end to end (docs/performance.md "PostgreSQL backend, end to
# end"), every figure against a baseline measured in the same run. Starts a private
# PostgreSQL cluster (initdb into a temporary directory, run as `nobody` when root,
# loopback only, fsync and synchronous_commit on), then RUNS rounds of:
#   - ceiling: pgbench, 32 clients, each transaction one INSERT of 10 KiB (what the
#     database commits by itself; one WAL flush per transaction, merged by PostgreSQL);
#   - large ceiling: pgbench, 8 clients, each transaction four new 256 KiB rows (1 MiB,
#     made by the server, so no client transfer) into a table like message_chunks: what
#     the database stores of large messages by itself;
#   - embedded: cmtpd on the embedded store, MAIL 10 KiB x 32 and 1 MiB x 8;
#   - pg1: one cmtpd node on the database, the same two loads;
#   - pg2: two cmtpd nodes on the database, 16 connections to each at once (10 KiB);
#   - spread: the same 32 connections split over two mailboxes (m1, m2), all through
#     node 1 (pg1-spread), then m1 through node 1 and m2 through node 2 (pg2-spread):
#     one node against two on a load that is not one mailbox.
# and once, at the end, one 1 GiB message through a postgres node (node RSS sampled).
# Writes one JSON file per run into OUTDIR and prints the medians.
#
#   cargo build --release -p cmtpd -p cmtp-bench
#   crates/cmtp-bench/scripts/postgres.sh /tmp/cmtp-pg [SECONDS] [RUNS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
CMTPD=${CMTPD:-$ROOT/target/release/cmtpd}
BENCH=${BENCH:-$ROOT/target/release/cmtp-bench}
OUT=${1:-/tmp/cmtp-pg-$(date +%s)}
SECS=${2:-5}
RUNS=${3:-3}
BIG=${BIG:-1}
PGBIN=${PGBIN:-$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
# The database's settings: the test harness's (cmtp_testkit::PgCluster) plus a larger
# WAL, so that no checkpoint is forced in the middle of a run.
PGSETTINGS="-c fsync=on -c synchronous_commit=on -c full_page_writes=on \
-c max_connections=300 -c shared_buffers=256MB -c max_wal_size=8GB"
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/bench-pg-XXXXXX)
chmod 755 "$WORK"
PIDS=()
as_pg() {
    if [[ $(id -u) == 0 ]]; then setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; else "$@"; fi
}
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- the database -----------------------------------------------------------------
mkdir -p "$WORK/pg" "$WORK/sock"
[[ $(id -u) == 0 ]] && chown -R nobody:nogroup "$WORK/pg" "$WORK/sock"
as_pg "$PGBIN/initdb" -D "$WORK/pg" -A trust -U cmtp -E UTF8 --no-locale >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$WORK" && as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/sock/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $WORK/sock $PGSETTINGS" start >/dev/null)
PSQL=("$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U cmtp -X -q)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE ceiling" -c "CREATE DATABASE cmtp"
"${PSQL[@]}" -d ceiling -c "CREATE TABLE bench (id bigserial PRIMARY KEY, data bytea)" \
    -c "CREATE TABLE chunks (key bigint, seq int, data bytea, PRIMARY KEY (key, seq))" \
    -c "ALTER TABLE chunks ALTER COLUMN data SET STORAGE EXTERNAL" -c "CREATE SEQUENCE keys"
echo "INSERT INTO bench (data) VALUES (convert_to(repeat('x', 10240), 'UTF8'));" > "$WORK/insert.sql"
# Each row's value made afresh (a copied value would reuse its stored form).
echo "WITH n AS (SELECT nextval('keys') AS key) INSERT INTO chunks SELECT n.key, s,
  convert_to(repeat('x', 262140) || lpad(s::text, 4), 'UTF8') FROM n, generate_series(0, 3) s;" \
    > "$WORK/large.sql"
URL="postgres://cmtp@127.0.0.1:$PORT/cmtp"
CMTPD_DATABASE_URL=$URL "$CMTPD" --data-dir "$WORK/unused" db migrate >&2
{
    echo "PostgreSQL: $("$PGBIN/postgres" --version), on $(df --output=source "$WORK" | tail -1)"
    echo "settings: $PGSETTINGS (everything else default)"
    "${PSQL[@]}" -d cmtp -At -c "SELECT name || ' = ' || setting FROM pg_settings WHERE name IN
        ('fsync','synchronous_commit','wal_sync_method','shared_buffers','max_wal_size',
         'commit_delay','wal_buffers','full_page_writes') ORDER BY name"
} > "$OUT/database.txt"

# --- servers ------------------------------------------------------------------------
# start_cmtpd NAME DATA [postgres]: starts a server, sets ADDR_<NAME>, METRICS_<NAME>,
# PID_<NAME>.
start_cmtpd() {
    local name=$1 data=$2 backend=${3:-}
    sed "s#@DATA@#$data#" "$(dirname "$0")/bench-cmtpd.toml" > "$OUT/$name.toml"
    if [[ $backend == postgres ]]; then
        printf '\n[store]\nbackend = "postgres"\nurl = "%s"\n' "$URL" >> "$OUT/$name.toml"
    fi
    rm -f "$OUT/$name.ready"
    "$CMTPD" --config "$OUT/$name.toml" serve --ready-file "$OUT/$name.ready" >"$OUT/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 300); do
        if [[ -s "$OUT/$name.ready" ]] && grep -q '^metrics ' "$OUT/$name.ready"; then break; fi
        if ! kill -0 "$pid" 2>/dev/null; then cat "$OUT/$name.log"; exit 1; fi
        sleep 0.1   # polling a condition with a deadline (30 s), not synchronisation
    done
    printf -v "ADDR_$name" '%s' "$(awk '$1=="cmtp"{print $2; exit}' "$OUT/$name.ready")"
    printf -v "METRICS_$name" '%s' "$(awk '$1=="metrics"{print $2; exit}' "$OUT/$name.ready")"
    printf -v "PID_$name" '%s' "$pid"
}
ulimit -n "$(ulimit -Hn)"
start_cmtpd emb "$WORK/emb"
start_cmtpd pg1 "$WORK/node" postgres
# The second node shares the first one's data directory, hence its server key.
start_cmtpd pg2 "$WORK/node" postgres
for u in m1 m2; do
    echo "bench" | "$CMTPD" --config "$OUT/pg1.toml" user add "$u" --password-stdin \
        --allow-weak-password >/dev/null
done
echo "embedded $ADDR_emb, node 1 $ADDR_pg1, node 2 $ADDR_pg2, database 127.0.0.1:$PORT" >&2

note() { echo "$(date -u +%T) $1 (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2; }
bench() { # name, args...
    local name=$1; shift
    note "$name"
    "$BENCH" --json "$@" > "$OUT/$name.json" || echo '{"error": "run failed"}' > "$OUT/$name.json"
}
mail() { # name, server, pid, metrics, connections, size
    bench "$1" mail -c "$5" --size "$6" --seconds "$SECS" --server "$2" --server-pid "$3" --metrics "$4"
}

for r in $(seq 1 "$RUNS"); do
    note "ceiling-$r"
    "$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U cmtp -n -c 32 -j 2 -T "$SECS" \
        -f "$WORK/insert.sql" ceiling > "$OUT/ceiling-$r.txt" 2>&1
    mail "emb-small-$r" "$ADDR_emb" "$PID_emb" "$METRICS_emb" 32 10k
    mail "pg1-small-$r" "$ADDR_pg1" "$PID_pg1" "$METRICS_pg1" 32 10k
    note "pg2-small-$r"
    "$BENCH" --json mail -c 16 --size 10k --seconds "$SECS" --server "$ADDR_pg1" \
        --server-pid "$PID_pg1" > "$OUT/pg2-small-$r-a.json" &
    a=$!
    "$BENCH" --json mail -c 16 --size 10k --seconds "$SECS" --server "$ADDR_pg2" \
        --server-pid "$PID_pg2" > "$OUT/pg2-small-$r-b.json"
    wait "$a"
    note "ceiling-large-$r"
    "$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U cmtp -n -c 8 -j 2 -T "$SECS" \
        -f "$WORK/large.sql" ceiling > "$OUT/ceiling-large-$r.txt" 2>&1
    # pair NAME ADDR1 PID1 ADDR2 PID2: 16 connections to m1 at 1 and 16 to m2 at 2 at once.
    pair() {
        note "$1"
        "$BENCH" --json mail -c 16 --size 10k --seconds "$SECS" --to m1 --server "$2" \
            --server-pid "$3" > "$OUT/$1-a.json" &
        local a=$!
        "$BENCH" --json mail -c 16 --size 10k --seconds "$SECS" --to m2 --server "$4" \
            --server-pid "$5" > "$OUT/$1-b.json"
        wait "$a"
    }
    pair "pg1-spread-$r" "$ADDR_pg1" "$PID_pg1" "$ADDR_pg1" "$PID_pg1"
    pair "pg2-spread-$r" "$ADDR_pg1" "$PID_pg1" "$ADDR_pg2" "$PID_pg2"
    mail "emb-large-$r" "$ADDR_emb" "$PID_emb" "$METRICS_emb" 8 1m
    mail "pg1-large-$r" "$ADDR_pg1" "$PID_pg1" "$METRICS_pg1" 8 1m
    # Keep the database small between rounds: what was delivered is not read again.
    "${PSQL[@]}" -d cmtp -c "TRUNCATE messages, message_chunks" -c "UPDATE mailboxes SET messages = 0, bytes = 0" -c "VACUUM"
    "${PSQL[@]}" -d ceiling -c "TRUNCATE bench, chunks"
done
if [[ $BIG == 1 ]]; then
    bench big-pg1 big --size 1G --server "$ADDR_pg1" --server-pid "$PID_pg1"
    bench big-emb big --size 1G --server "$ADDR_emb" --server-pid "$PID_emb"
fi
for n in emb pg1 pg2; do
    m="METRICS_$n"
    curl -s "http://${!m}/metrics" > "$OUT/metrics-$n.txt" || true
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
med() { for f in "$OUT"/$1; do jq -r "$2" "$f"; done | median; }
ceiling=$(for f in "$OUT"/ceiling-[0-9]*.txt; do awk '/^tps/{print $3}' "$f"; done | median)
ceiling_l=$(for f in "$OUT"/ceiling-large-*.txt; do awk '/^tps/{print $3}' "$f"; done | median)
pairsum() { for r in $(seq 1 "$RUNS"); do
    jq -s 'map(.per_sec) | add' "$OUT/$1-$r-a.json" "$OUT/$1-$r-b.json"
done | median; }
pg2=$(pairsum pg2-small)
pg1s=$(pairsum pg1-spread)
pg2s=$(pairsum pg2-spread)
emb_s=$(med 'emb-small-*.json' .per_sec); pg1_s=$(med 'pg1-small-*.json' .per_sec)
emb_l=$(med 'emb-large-*.json' .mb_per_sec); pg1_l=$(med 'pg1-large-*.json' .mb_per_sec)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
echo "| measurement (medians of $RUNS, $SECS s each) | value | ratio |"
echo "|---|---|---|"
echo "| pgbench ceiling, 32 clients, 10 KiB INSERT per transaction | $ceiling tps | 1 |"
echo "| embedded, MAIL 10 KiB × 32 | $emb_s msgs/s | |"
echo "| postgres, one node, MAIL 10 KiB × 32 | $pg1_s msgs/s | $(ratio "$pg1_s" "$ceiling") of ceiling, $(ratio "$pg1_s" "$emb_s") of embedded |"
echo "| postgres, two nodes, 16 + 16 connections | $pg2 msgs/s | $(ratio "$pg2" "$pg1_s") of one node |"
echo "| postgres, one node, 16 + 16 connections to two mailboxes | $pg1s msgs/s | |"
echo "| postgres, two nodes, one mailbox each (16 + 16) | $pg2s msgs/s | $(ratio "$pg2s" "$pg1s") of one node |"
echo "| embedded, MAIL 1 MiB × 8 | $emb_l MB/s | |"
echo "| pgbench large ceiling, 8 clients, 1 MiB (4 × 256 KiB rows) per transaction | $ceiling_l tps (× 1.05 MB) | |"
echo "| postgres, one node, MAIL 1 MiB × 8 | $pg1_l MB/s | $(ratio "$pg1_l" "$emb_l") of embedded, $(awk -v a="$pg1_l" -v c="$ceiling_l" 'BEGIN{printf "%.2f", a/(c*1.048576)}') of the large ceiling |"
echo "| postgres node, server CPU per 10 KiB MAIL | $(med 'pg1-small-*.json' .server_side.cpu_us_per_op) µs | |"
if [[ $BIG == 1 ]]; then
    for n in pg1 emb; do
        echo "| 1 GiB through $n: MB/s, node RSS before → peak (growth) | $(jq -r '"\(.mb_per_sec | floor) MB/s, \(.rss_before/1048576|floor) → \(.rss_peak/1048576|floor) MiB (+\(.rss_growth/1048576|floor) MiB)"' "$OUT/big-$n.json") | |"
    done
fi
grep -h "cmtpd_store_commit_batch_size_sum\|cmtpd_store_commit_batch_size_count" "$OUT/metrics-pg1.txt" | tr '\n' ' ' >&2
echo >&2
