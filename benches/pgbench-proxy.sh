#!/usr/bin/env bash
# pgbench -S directly against PostgreSQL and through relapse-db-proxy in pass-through, on a fresh
# database; prints a markdown table and the machine. Goals (issue): TPS ratio >= 0.9 at 1 and 8
# clients, added p50 latency <= 50 us per query (Toxiproxy adds ~273 us).
#
#   benches/pgbench-proxy.sh            # PGHOST/PGPORT/PGUSER, DURATION (s), P50_TXNS override
#
# A plain byte relay (socat, if installed) runs alongside as the peer: it shows what any user-space
# relay costs on this machine, framing or not.
#
# Direct and proxied runs alternate, twice each, so that drift (caches, CPU frequency) hits both.
# TLS is off for both (PGSSLMODE=disable): the proxy answers SSLRequest with 'N', so a direct run
# with the server's TLS would compare encrypted against plaintext.

set -euo pipefail
cd "$(dirname "$0")/.."

PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
PGUSER=${PGUSER:-postgres}
DURATION=${DURATION:-10}
P50_TXNS=${P50_TXNS:-20000}
export PGSSLMODE=disable
DB=relapse_bench_$$
TMP=$(mktemp -d)
PROXY_PID=
SOCAT_PID=

cleanup() {
    for pid in $PROXY_PID $SOCAT_PID; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    psql -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres -qc \
        "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v pgbench >/dev/null || { echo "pgbench not found on PATH" >&2; exit 1; }

cargo build --release -q -p relapse-dbproxy --bin relapse-db-proxy
BIN="${CARGO_TARGET_DIR:-target}/release/relapse-db-proxy"

psql -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres -qc "CREATE DATABASE $DB"
pgbench -i -s 1 -q -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" "$DB" >/dev/null 2>&1

# A coprocess keeps the proxy's stdin open (it exits at EOF) and hands us its first line.
coproc PROXY { exec "$BIN" --protocol postgres --listen 127.0.0.1:0 --upstream "$PGHOST:$PGPORT" 2>"$TMP/proxy.err"; }
PROXY_PID=$PROXY_PID
read -r -t 10 line <&"${PROXY[0]}" || { echo "proxy did not start:" >&2; cat "$TMP/proxy.err" >&2; exit 1; }
PROXY_ADDR=${line#listening on }
PROXY_PORT=${PROXY_ADDR##*:}

SOCAT_PORT=
if command -v socat >/dev/null; then
    SOCAT_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    socat "TCP-LISTEN:$SOCAT_PORT,bind=127.0.0.1,reuseaddr,fork" "TCP:$PGHOST:$PGPORT" &
    SOCAT_PID=$!
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$SOCAT_PORT") 2>/dev/null && break
        sleep 0.1
    done
fi

# run PORT CLIENTS THREADS: prints "tps latency_ms"
run() {
    local out
    out=$(pgbench -n -S -T "$DURATION" -c "$2" -j "$3" -h 127.0.0.1 -p "$1" -U "$PGUSER" "$DB" 2>&1) \
        || { echo "$out" >&2; exit 1; }
    local tps lat
    tps=$(awk '/^tps = / {print $3; exit}' <<<"$out")
    lat=$(awk '/^latency average = / {print $4; exit}' <<<"$out")
    echo "$tps $lat"
}

# p50 PORT NAME: median per-transaction latency in us, from pgbench's transaction log.
p50() {
    (cd "$TMP" && pgbench -n -S -t "$P50_TXNS" -c 1 -j 1 -l --log-prefix="$2" \
        -h 127.0.0.1 -p "$1" -U "$PGUSER" "$DB" >/dev/null 2>&1)
    # Log lines: client_id transaction_no time_us script_no time_epoch time_us_part.
    cat "$TMP/$2".* | awk '{print $3}' | sort -n |
        awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
    rm -f "$TMP/$2".*
}

mean() { awk '{s += $1} END {printf "%.3f", s / NR}'; }

echo "| clients | direct TPS | proxy TPS | ratio | socat TPS | proxy/socat | direct latency avg (ms) | proxy latency avg (ms) | added latency (µs) |"
echo "|--------:|-----------:|----------:|------:|----------:|------------:|------------------------:|-----------------------:|-------------------:|"
for spec in "1 1" "8 2"; do
    read -r clients threads <<<"$spec"
    : >"$TMP/direct"
    : >"$TMP/proxy"
    echo "0 0" >"$TMP/socat"
    [ -n "$SOCAT_PORT" ] && : >"$TMP/socat"
    for _ in 1 2; do
        run "$PGPORT" "$clients" "$threads" >>"$TMP/direct"
        run "$PROXY_PORT" "$clients" "$threads" >>"$TMP/proxy"
        [ -n "$SOCAT_PORT" ] && run "$SOCAT_PORT" "$clients" "$threads" >>"$TMP/socat"
    done
    dt=$(awk '{print $1}' "$TMP/direct" | mean)
    pt=$(awk '{print $1}' "$TMP/proxy" | mean)
    st=$(awk '{print $1}' "$TMP/socat" | mean)
    dl=$(awk '{print $2}' "$TMP/direct" | mean)
    pl=$(awk '{print $2}' "$TMP/proxy" | mean)
    awk -v c="$clients" -v dt="$dt" -v pt="$pt" -v st="$st" -v dl="$dl" -v pl="$pl" 'BEGIN {
        printf "| %d | %.0f | %.0f | %.3f | %.0f | %s | %.3f | %.3f | %.0f |\n", c, dt, pt, pt / dt, st, (st > 0 ? sprintf("%.3f", pt / st) : "—"), dl, pl, (pl - dl) * 1000
    }'
done

echo
echo "p50 per-transaction latency, 1 client, $P50_TXNS transactions each (pgbench -l), alternating:"
echo
echo "| run | direct p50 (µs) | proxy p50 (µs) | added p50 (µs) | socat p50 (µs) | socat added p50 (µs) |"
echo "|----:|----------------:|---------------:|---------------:|---------------:|---------------------:|"
for round in 1 2; do
    d=$(p50 "$PGPORT" direct)
    p=$(p50 "$PROXY_PORT" proxy)
    s=0
    [ -n "$SOCAT_PORT" ] && s=$(p50 "$SOCAT_PORT" socat)
    awk -v r="$round" -v d="$d" -v p="$p" -v s="$s" 'BEGIN {printf "| %d | %.0f | %.0f | %.0f | %.0f | %.0f |\n", r, d, p, p - d, s, s - d}'
done

echo
echo "machine: $(uname -a)"
echo "cores: $(nproc)"
echo "pgbench: $(pgbench --version)"
echo "server: $(psql -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d "$DB" -Atc 'SELECT version()')"
