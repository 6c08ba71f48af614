#!/usr/bin/env bash
# The `aggregate` action's cost: one route making 3 parallel calls against one route
# proxying once, on the same gateway (1 worker, pinned to CPU 1) and the same nginx
# backend (CPU 0, a small JSON answer), loaded in turn by the same wrk. Reports req/s,
# p99 and the gateway's CPU time per request for each; the budget compares the
# aggregate's CPU with three proxied requests'.
#
#   bench/aggregate.sh [--duration 8] [--conns 64]
# Needs: nginx, wrk, a release build (cargo build --release). Loopback only; stops what
# it started, by PID.
set -euo pipefail
DURATION=8
CONNS=64
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --conns) CONNS="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}"
OUT="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$OUT"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BE=$(port); GW=$(port)
mkdir -p "$OUT/logs"
cat > "$OUT/backend.conf" <<EOF
worker_processes 1;
pid $OUT/backend.pid;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$BE backlog=4096;
    location / { default_type application/json; return 200 '{"id":42,"name":"alpha bravo","tags":["a","b"]}'; }
  }
}
EOF
taskset -c 0 nginx -p "$OUT" -c "$OUT/backend.conf" -e "$OUT/logs/backend.err" -g 'daemon off;' &
PIDS+=($!)
cat > "$OUT/gw.yaml" <<EOF
listeners: [{ name: bench, address: "127.0.0.1:$GW" }]
upstreams:
  a: { targets: [{ address: "127.0.0.1:$BE" }], pool: { max_idle_per_target: 1024 } }
  b: { targets: [{ address: "127.0.0.1:$BE" }], pool: { max_idle_per_target: 1024 } }
  c: { targets: [{ address: "127.0.0.1:$BE" }], pool: { max_idle_per_target: 1024 } }
routes:
  - { name: plain, match: { path: { type: prefix, value: /plain } }, upstream: a }
  - name: agg
    match: { path: { type: template, value: "/agg/{id}" } }
    aggregate:
      calls:
        - { name: profile, upstream: a, path: "/users/{id}", required: true }
        - { name: orders, upstream: b, path: "/orders?user={id}" }
        - { name: recs, upstream: c, path: "/recs/{id}" }
access_log: "off"
reload: { watch: false }
EOF
GATEHOUSE_WORKERS=1 taskset -c 1 "$BIN" run -c "$OUT/gw.yaml" > "$OUT/logs/gw.log" 2>&1 &
GWPID=$!
PIDS+=($GWPID)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$GW/plain" >/dev/null && break; sleep 0.1; done
TCK=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$GWPID/stat"; }
run() {  # path
  wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$GW$1" >/dev/null
  local before after out reqs
  before=$(cpu)
  out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$GW$1")
  after=$(cpu)
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  printf '| %s | %s | %s | %.1f | %s |\n' "$1" \
    "$(echo "$out" | awk '/Requests\/sec/ {print $2}')" \
    "$(echo "$out" | awk '$1=="99%" {print $2}')" \
    "$(echo "($after - $before) * 1000000 / $TCK / $reqs" | bc -l)" \
    "$(echo "$out" | grep -c 'Non-2xx' || true)"
}
echo "| path | req/s | p99 | gateway CPU us/req | non-2xx lines |"
echo "|---|---|---|---|---|"
run /plain
run /agg/7
echo "RSS: $(awk '/VmHWM/ {print $2, $3}' "/proc/$GWPID/status")"
