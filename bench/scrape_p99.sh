#!/usr/bin/env bash
# The proxied p99 while /metrics is scraped: one gateway worker with 1,000 routes (all
# proxied to one nginx backend, every one served once so each has its series),
# loaded by wrk on a proxied route, quiet and then with a scraper calling /metrics N
# times a second. Reports req/s, p50/p99 and the scrape's own wall time per run.
#
#   bench/scrape_p99.sh [--cpus "1" | "0,1"] [--rates "0 1 4"] [--duration 8] [--runs 2]
#                       [--out DIR]
#
# --cpus pins the whole gateway process: "1" (the default) shares one core between the
# worker and the admin API, the hardest case; wrk and the backend run on CPU 0. Everything
# listens on 127.0.0.1; each run is bounded; on exit the script stops exactly the PIDs it
# started. SCRAPE_PATH scrapes another admin path (default /metrics); SCRAPE_GZIP=1 asks
# for gzip, as Prometheus does. AFTER_START, if set, is evaluated once the gateway serves (GW holds its PID),
# e.g. to change a thread's scheduling for an experiment.
set -u -o pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CPUS="1"; RATES="0 1 4"; DURATION=8; RUNS=2; OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpus) CPUS="$2"; shift 2 ;;
    --rates) RATES="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
for t in wrk nginx taskset curl python3; do
  command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done
[ -n "$OUT" ] || OUT="$PWD/scrape-p99-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"/{logs,conf,tmp}
OUT="$(cd "$OUT" && pwd)"
GATEHOUSE_BIN="${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}"
UP=19001; PORT=18301; ADMIN=18302
PIDS=()

say() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/bench.log" >&2; }
stop() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null; return 0
}
trap 'for p in "${PIDS[@]}"; do stop "$p"; done' EXIT
trap 'exit 130' INT TERM
ready() {  # URL answers while PID lives (20 s at most)
  local i; for i in $(seq 100); do
    kill -0 "$2" 2>/dev/null || return 1
    curl -s -o /dev/null -m 1 "$1" && return 0
    sleep 0.2; done; return 1; }

cat > "$OUT/conf/backend.conf" <<EOF
worker_processes 1;
daemon off;
pid $OUT/backend.pid;
error_log $OUT/logs/backend.error.log warn;
events { worker_connections 4096; }
http {
    access_log off; keepalive_timeout 120s; keepalive_requests 10000000;
    client_body_temp_path $OUT/tmp/body; proxy_temp_path $OUT/tmp/proxy;
    fastcgi_temp_path $OUT/tmp/fcgi; uwsgi_temp_path $OUT/tmp/uwsgi; scgi_temp_path $OUT/tmp/scgi;
    server { listen 127.0.0.1:$UP backlog=4096; location / { return 200 '$(head -c 100 /dev/zero | tr '\0' x)'; } }
}
EOF
{
  cat <<EOF
listeners:
  - { name: p, address: "127.0.0.1:$PORT" }
admin: { address: "127.0.0.1:$ADMIN" }
access_log: "off"
reload: { watch: false }
upstreams:
  be: { targets: [{ address: "127.0.0.1:$UP" }], pool: { max_idle_per_target: 1024 } }
routes:
  - { name: hot, match: { path: { type: prefix, value: /hot } }, upstream: be }
EOF
  for i in $(seq 0 998); do
    echo "  - { name: r$i, match: { path: { type: prefix, value: /r$i/ } }, upstream: be }"
  done
} > "$OUT/conf/gatehouse.yaml"

taskset -c 0 nginx -p "$OUT" -c "$OUT/conf/backend.conf" >"$OUT/logs/backend.out" 2>&1 &
PIDS+=($!); BACKEND=$!
ready "http://127.0.0.1:$UP/" "$BACKEND" || { say "backend failed"; exit 1; }
taskset -c "$CPUS" "$GATEHOUSE_BIN" run --config "$OUT/conf/gatehouse.yaml" --threads 1 \
  >"$OUT/logs/gatehouse.out" 2>&1 &
PIDS+=($!); GW=$!
ready "http://127.0.0.1:$PORT/hot/" "$GW" || { say "gatehouse failed"; exit 1; }
# Every route serves once, so the scrape renders 1,000 routes' series and scores.
python3 - "$PORT" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for i in range(999):
    s.sendall(f"GET /r{i}/ HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
EOF
say "1,000 routes served; scrape size $(curl -s "http://127.0.0.1:$ADMIN/metrics" | wc -c) bytes"
[ -n "${AFTER_START:-}" ] && eval "$AFTER_START"
# The first seconds of load run slower (pools filling, caches warming): not measured.
taskset -c 0 wrk -t1 -c64 -d3s "http://127.0.0.1:$PORT/hot/" > "$OUT/logs/warmup.txt" 2>&1

echo "| scrapes/s | run | req/s | p50 | p99 | scrape wall (mean, max) |" | tee "$OUT/results.md"
echo "|---|---|---|---|---|---|" | tee -a "$OUT/results.md"
# Runs interleave the rates, so a drift of the machine's speed does not favour one.
for run in $(seq "$RUNS"); do
  for rate in $RATES; do
    log="$OUT/logs/wrk-$rate-$run.txt"; times="$OUT/logs/scrape-$rate-$run.txt"; : > "$times"
    SCRAPER=""
    if [ "$rate" != 0 ]; then
      # The scraper shares CPU 0 with wrk: at the lowest priority it does not delay wrk's
      # own reading (what Prometheus costs its own machine is not the gateway's p99).
      nice -n 19 python3 - "$ADMIN" "$rate" "$DURATION" "$times" "${SCRAPE_PATH:-/metrics}" <<'EOF' &
import os, sys, time, urllib.request
port, rate, duration, out, path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
end = time.monotonic() + duration
# As Prometheus asks, with SCRAPE_GZIP=1.
headers = {"Accept-Encoding": "gzip"} if os.environ.get("SCRAPE_GZIP") == "1" else {}
with open(out, "w") as f:
    while time.monotonic() < end:
        t = time.monotonic()
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
        urllib.request.urlopen(req, timeout=30).read()
        f.write(f"{(time.monotonic() - t) * 1000:.1f}\n")
        time.sleep(max(0.0, 1 / rate - (time.monotonic() - t)))
EOF
      SCRAPER=$!; PIDS+=("$SCRAPER")
    fi
    taskset -c 0 wrk -t1 -c64 -d"${DURATION}s" --latency "http://127.0.0.1:$PORT/hot/" > "$log" 2>&1
    [ -n "$SCRAPER" ] && wait "$SCRAPER"
    rps=$(awk '/Requests\/sec/{print $2}' "$log")
    p50=$(awk '$1=="50%"{print $2}' "$log"); p99=$(awk '$1=="99%"{print $2}' "$log")
    wall=$(awk '{s+=$1; if ($1>m) m=$1; n++} END {if (n) printf "%.1f ms, %.1f ms", s/n, m; else print "-"}' "$times")
    echo "| $rate | $run | $rps | $p50 | $p99 | $wall |" | tee -a "$OUT/results.md"
  done
done
