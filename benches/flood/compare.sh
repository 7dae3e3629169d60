#!/usr/bin/env bash
# relapse-flood against wrk and oha, same connections, threads and duration, alternating, on the
# relapse bench server and (if installed) nginx. Then: the open model at 70% of the closed
# model's max, 256 source addresses against one, and RSS over a 1M-request run.
#
# Usage: benches/flood/compare.sh   (env: CONNS=64 THREADS DUR=10 ROUNDS=3 PIN=1)
#
# With PIN=1 (the default where taskset exists and there are at least 2 cores) the servers run on
# CPU 0 and every client on the other CPUs, so that client and server do not take turns on the
# same core: on a 2-core machine unpinned runs of the same tool differed by 30 %. THREADS then
# defaults to the number of client CPUs.
# Needs wrk (apt-get install -y wrk) and oha (cargo install oha --locked); nginx is optional.
set -euo pipefail

CONNS=${CONNS:-64}
DUR=${DUR:-10}
ROUNDS=${ROUNDS:-3}
CORES=$(nproc)
if [ "${PIN:-1}" = 1 ] && command -v taskset >/dev/null && [ "$CORES" -ge 2 ]; then
    SERVER_ON=(taskset -c 0)
    CLIENT_ON=(taskset -c "1-$((CORES - 1))")
    THREADS=${THREADS:-$((CORES - 1))}
    SERVER_THREADS=1
else
    SERVER_ON=()
    CLIENT_ON=()
    THREADS=${THREADS:-$CORES}
    SERVER_THREADS=$CORES
fi
ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 1; }
[ -x "$OHA" ] || { echo "oha missing: cargo install oha --locked" >&2; exit 1; }

cargo build --release -q -p relapse-flood --bins --manifest-path "$ROOT/Cargo.toml"
BIN=$CARGO_TARGET_DIR/release

TMP=$(mktemp -d)
SERVER_PID=
NGINX_PID=
cleanup() {
    # Only what this script started, by pid.
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
    exec 3>&- 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

# The bench server exits on stdin EOF: hold its stdin open on fd 3.
mkfifo "$TMP/server.in"
${SERVER_ON[@]+"${SERVER_ON[@]}"} "$BIN/relapse-bench-server" --listen 127.0.0.1:0 --threads "$SERVER_THREADS" <"$TMP/server.in" >"$TMP/server.out" &
SERVER_PID=$!
exec 3>"$TMP/server.in"
for _ in $(seq 100); do grep -q "listening on" "$TMP/server.out" && break; sleep 0.05; done
BENCH_ADDR=$(sed -n 's/^listening on //p' "$TMP/server.out")
TARGETS=("relapse-bench-server http://$BENCH_ADDR/")

if command -v nginx >/dev/null; then
    NGINX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$TMP/nginx/www"
    printf 'ok, ok, ok!\n' >"$TMP/nginx/www/index.html"
    cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx;
    proxy_temp_path $TMP/nginx;
    fastcgi_temp_path $TMP/nginx;
    uwsgi_temp_path $TMP/nginx;
    scgi_temp_path $TMP/nginx;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $TMP/nginx/www;
        location / { try_files /index.html =404; }
    }
}
EOF
    ${SERVER_ON[@]+"${SERVER_ON[@]}"} nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" 2>"$TMP/nginx/stderr" &
    NGINX_PID=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$NGINX_PORT/" >/dev/null 2>&1 && break; sleep 0.05; done
    TARGETS+=("nginx http://127.0.0.1:$NGINX_PORT/")
fi

# Each runner prints "rps p50_ms p99_ms" (answered requests only).
to_ms() { # wrk's "1.23ms", "456.00us", "1.20s"
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}
run_wrk() {
    local out p50 p99 rps
    out=$(${CLIENT_ON[@]+"${CLIENT_ON[@]}"} wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency "$1")
    rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
    p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}
run_oha() {
    # oha's requestsPerSec counts failed requests too: count the 200s.
    ${CLIENT_ON[@]+"${CLIENT_ON[@]}"} "$OHA" -c "$CONNS" -z "${DUR}s" --no-tui --output-format json "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
ok = sum(v for k, v in d["statusCodeDistribution"].items() if k.startswith("2"))
p = d["latencyPercentiles"]
print("%.1f %.3f %.3f" % (ok / d["summary"]["total"], p["p50"] * 1e3, p["p99"] * 1e3))'
}
run_relapse() { # URL [extra args]
    local url=$1
    shift
    ${CLIENT_ON[@]+"${CLIENT_ON[@]}"} "$BIN/relapse-flood" "$url" -c "${RC:-$CONNS}" -t "$THREADS" -d "${DUR}s" --json "$@" | python3 -c '
import json, sys
d = json.load(sys.stdin)
ok = sum(v for k, v in d["statuses"].items() if k.startswith("2"))
l = d["latency_us"]
print("%.1f %.3f %.3f" % (ok / d["duration_s"], l["p50"] / 1e3, l["p99"] / 1e3))'
}

echo "## Machine"
echo
echo '```'
uname -a
echo "nproc: $(nproc)"
grep -m1 "model name" /proc/cpuinfo || true
echo "wrk: $(wrk -v 2>&1 | head -1)"
echo "oha: $("$OHA" --version)"
echo "pinning: servers on ${SERVER_ON[*]:-any CPU}, clients on ${CLIENT_ON[*]:-any CPU}, $THREADS client threads"
command -v nginx >/dev/null && echo "nginx: $(nginx -v 2>&1)"
echo '```'
echo
echo "## Closed loop: -c $CONNS, $THREADS threads, ${DUR}s, $ROUNDS rounds alternating"
echo
echo "| target | round | tool | rps | p50 ms | p99 ms | relapse/wrk | relapse/oha |"
echo "|---|---|---|---|---|---|---|---|"
BEST_RELAPSE=0
for target in "${TARGETS[@]}"; do
    name=${target%% *}
    url=${target#* }
    for round in $(seq "$ROUNDS"); do
        read -r w50 w51 w99 <<<"$(run_wrk "$url")"
        read -r o50 o51 o99 <<<"$(run_oha "$url")"
        read -r r50 r51 r99 <<<"$(run_relapse "$url")"
        echo "| $name | $round | wrk | $w50 | $w51 | $w99 | | |"
        echo "| $name | $round | oha | $o50 | $o51 | $o99 | | |"
        printf '| %s | %s | relapse-flood | %s | %s | %s | %.2f | %.2f |\n' "$name" "$round" "$r50" "$r51" "$r99" \
            "$(echo "$r50 / $w50" | bc -l)" "$(echo "$r50 / $o50" | bc -l)"
        if [ "$name" = relapse-bench-server ] && [ "$(echo "$r50 > $BEST_RELAPSE" | bc)" = 1 ]; then
            BEST_RELAPSE=$r50
        fi
    done
done

URL="http://$BENCH_ADDR/"
echo
echo "## Open model at 70% of the closed model's best ($BEST_RELAPSE req/s), ${DUR}s"
echo
RATE=$(echo "$BEST_RELAPSE * 0.7" | bc -l | xargs printf '%.0f')
OPEN=$("$BIN/relapse-flood" "$URL" -c "$CONNS" -t "$THREADS" -d "${DUR}s" --rate "$RATE" --json)
python3 - "$RATE" "$OPEN" <<'EOF'
import json, sys
rate = float(sys.argv[1]); d = json.loads(sys.argv[2])
ok = sum(v for k, v in d["statuses"].items() if k.startswith("2"))
achieved = ok / d["duration_s"]
l = d["latency_us"]
print(f"asked {rate:.0f} req/s, achieved {achieved:.1f} req/s ({(achieved / rate - 1) * 100:+.2f}%), "
      f"errors {d['errors']}; corrected latency p50 {l['p50']/1e3:.3f} ms p99 {l['p99']/1e3:.3f} ms "
      f"max {l['max']/1e3:.3f} ms")
EOF

echo
echo "## 256 source addresses (127.9.0.0/24) against one, closed loop, ${DUR}s"
echo
read -r one _ _ <<<"$(run_relapse "$URL")"
read -r many _ _ <<<"$(run_relapse "$URL" --source-cidr 127.9.0.0/24)"
python3 -c "import sys; one, many = float(sys.argv[1]), float(sys.argv[2]); print(f'one source {one:.0f} req/s, 256 sources {many:.0f} req/s: {(1 - many / one) * 100:+.2f}% loss (-c $CONNS uses {min(256, $CONNS)} of them with keep-alive)')" "$one" "$many"
read -r one _ _ <<<"$(RC=16 run_relapse "$URL" --no-keep-alive)"
read -r many _ _ <<<"$(RC=16 run_relapse "$URL" --no-keep-alive --source-cidr 127.9.0.0/24)"
python3 -c "import sys; one, many = float(sys.argv[1]), float(sys.argv[2]); print(f'new connection per request, -c 16: one source {one:.0f} req/s, 256 sources {many:.0f} req/s: {(1 - many / one) * 100:+.2f}% loss')" "$one" "$many"

echo
echo "## RSS over a 1,000,000-request run (closed, -c $CONNS, $THREADS threads)"
echo
"$BIN/relapse-flood" "$URL" -c "$CONNS" -t "$THREADS" -d 120s -n 1000000 --json >"$TMP/million.json" &
FLOOD_PID=$!
: >"$TMP/rss"
while kill -0 "$FLOOD_PID" 2>/dev/null; do
    awk '/^VmRSS/ { print $2 }' "/proc/$FLOOD_PID/status" 2>/dev/null >>"$TMP/rss" || true
    sleep 1
done
wait "$FLOOD_PID"
python3 - "$TMP/rss" "$TMP/million.json" <<'EOF'
import json, sys
rss = [int(l) for l in open(sys.argv[1]) if l.strip()]
d = json.load(open(sys.argv[2]))
warm = rss[2:] or rss
print(f"{d['completed']} requests in {d['duration_s']:.1f}s; VmRSS samples (1/s): {rss}")
print(f"after 2 s warm-up: min {min(warm)} kB, max {max(warm)} kB")
EOF
