#!/usr/bin/env bash
# Memory per connection, same run: RSS of Gatehouse and nginx (1 worker each) at rest,
# with N idle client connections open, and after a burst of N concurrent requests has
# left up to N idle pooled upstream connections. Prints MiB and KiB per connection.
#
#   bench/memory.sh [N]      (default 1000; loopback only, bounded, stops what it started)
set -u -o pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
N="${1:-1000}"
GATEHOUSE_BIN="${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}"
OUT="$(mktemp -d)"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$OUT"' EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
rss() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
tree_rss() { local t=0 p; for p in "$1" $(ps -o pid= --ppid "$1"); do t=$((t + $(rss "$p"))); done; echo $t; }
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

python3 "$ROOT/bench/memory.py" backend 19101 300 & PIDS+=($!)
wait_port 19101
cat > "$OUT/gatehouse.yaml" <<YAML
listeners:
  - { name: mem, address: "127.0.0.1:18201", max_connections: 100000 }
upstreams:
  b:
    targets: [{ address: "127.0.0.1:19101" }]
    pool: { max_idle_per_target: 100000 }
routes:
  - { name: local, match: { path: { type: exact, value: /local } }, respond: { status: 200, body: "ok" } }
  - { name: all, upstream: b }
access_log: "off"
reload: { watch: false }
YAML
"$GATEHOUSE_BIN" run -c "$OUT/gatehouse.yaml" --threads 1 >"$OUT/gh.log" 2>&1 & PIDS+=($!); GH=$!
cat > "$OUT/nginx.conf" <<NGX
worker_processes 1;
pid $OUT/nginx.pid;
error_log $OUT/nginx.err;
daemon off;
events { worker_connections $((N * 2 + 256)); }
http {
  access_log off;
  upstream b { server 127.0.0.1:19101; keepalive $((N + 64)); }
  server {
    listen 127.0.0.1:18202;
    keepalive_timeout 300s;
    location = /local { return 200 "ok"; }
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGX
nginx -p "$OUT" -c "$OUT/nginx.conf" & PIDS+=($!); NG=$!
wait_port 18201 && wait_port 18202 || { echo "a proxy did not start" >&2; exit 1; }
python3 "$ROOT/bench/memory.py" burst 18201 10 && python3 "$ROOT/bench/memory.py" burst 18202 10
sleep 0.5
printf "| proxy | at rest MiB | %s idle client conns: MiB (KiB per conn) | after a burst of %s: MiB (KiB per pooled upstream conn) |\n|---|---|---|---|\n" "$N" "$N"
for p in gatehouse:18201:$GH nginx:18202:$NG; do
  IFS=: read -r name port pid <<< "$p"
  base=$(tree_rss "$pid")
  python3 "$ROOT/bench/memory.py" idle "$port" "$N" 3 & C=$!
  sleep 2.5; idle=$(tree_rss "$pid"); wait $C
  sleep 1
  python3 "$ROOT/bench/memory.py" burst "$port" "$N"
  sleep 1; burst=$(tree_rss "$pid")
  awk -v n="$name" -v b="$base" -v i="$idle" -v u="$burst" -v N="$N" 'BEGIN{
    printf "| %s | %.1f | %.1f (%.1f) | %.1f (%.1f) |\n", n, b/1024, i/1024, (i-b)/N, u/1024, (u-b)/N }'
done
