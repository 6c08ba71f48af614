#!/usr/bin/env bash
# Side-by-side loopback benchmark of HTTP/1.1 reverse proxies, all in one run: the backend
# directly (the ceiling), nginx, HAProxy, the yardstick (bench/yardstick: the smallest
# forwarder on Gatehouse's own architecture, no features) and Gatehouse, in front of the same two nginx
# backends (127.0.0.1:19001 and :19002: `GET /` answers 100 bytes, `GET /16k` 16 KiB,
# `GET /16k.json` (body `json16k`) a 16 KiB JSON document of varied records),
# loaded by the same wrk. Reports req/s, p50/p99, peak RSS and the proxy's CPU time per
# request (the steadiest figure on a small shared machine).
#
#   bench/peers.sh [--proxies direct,nginx,haproxy,yardstick,gatehouse] [--workers "1 2"]
#                  [--conns "64 256"] [--bodies "small 16k"] [--duration 10] [--runs 3]
#                  [--warmup 2] [--out DIR]
#
# With one worker the proxy is pinned to CPU 1, wrk and the backend to CPU 0. Everything
# listens on 127.0.0.1; every wrk run is bounded; on exit the script stops exactly the
# PIDs it started. GATEHOUSE_BIN picks the gatehouse build; for an A/B run of two builds,
# set GATEHOUSE_B_BIN too and add `gatehouse-b` to --proxies; GATEHOUSE_B_EXTRA adds
# top-level YAML to gatehouse-b's config (`metrics: { enabled: false }` measures the
# cost of metrics with one binary; `consumers`, `policies` and `default_policies` measure
# a policy's cost against the plain proxy; GATEHOUSE_A_EXTRA does the same for
# `gatehouse`, so both sides of an A/B can differ from the default). GATEHOUSE_B_LISTENER
# (and _A_) add fields to the listener (`request_rate_per_ip: {...}, max_connections_per_ip: 1000`). WRK_HEADER ("name: value") is sent with every
# request to every proxy (an API key for such a run; the others ignore it).
# WRK_BODY (a file) makes every request a POST of that body, with Content-Type
# WRK_CONTENT_TYPE (default application/json): bench/order.json is the 300-byte JSON
# POST the WAF's bound is stated for. WRK_PATH replaces the small body's `/` (the
# backend answers any path), and WRK_HEADERS adds header lines ("name: value", one per
# line) to WRK_HEADER's: the WAF's small GET is
# WRK_PATH='/shop/search?q=red+shoes&page=2&sort=price' with an Accept and a Cookie.
# NGINX_HTTP_EXTRA and NGINX_LOCATION_EXTRA add directives to nginx's http block and its
# proxying location (a `limit_req_zone` and `limit_req` to compare a rate limit's cost);
# NGINX_MAIN_EXTRA to its main context (`load_module` of a dynamic module). For nginx
# with libmodsecurity and the installed CRS, the WAF's peer (Debian:
# libnginx-mod-http-modsecurity), see bench/modsecurity.conf.
set -u -o pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PROXIES="nginx,haproxy,yardstick,gatehouse"
WORKERS_LIST="1 2"; CONNS_LIST="64 256"; BODIES="small 16k"
DURATION=10; RUNS=3; WARMUP=2; OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --proxies) PROXIES="$2"; shift 2 ;;
    --workers) WORKERS_LIST="$2"; shift 2 ;;
    --conns) CONNS_LIST="$2"; shift 2 ;;
    --bodies) BODIES="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
for t in wrk nginx haproxy taskset curl python3; do
  command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done
[ -n "$OUT" ] || OUT="$PWD/bench-results-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"/{wrk,logs,conf,tmp,docroot}
OUT="$(cd "$OUT" && pwd)"
GATEHOUSE_BIN="${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}"
GATEHOUSE_B_BIN="${GATEHOUSE_B_BIN:-$GATEHOUSE_BIN}"
YARDSTICK_BIN="${YARDSTICK_BIN:-$ROOT/bench/yardstick/target/release/yardstick}"
UP1=19001; UP2=19002
declare -A PORT=([direct]=$UP1 [nginx]=18081 [haproxy]=18082 [yardstick]=18085 [gatehouse]=18090 [gatehouse-b]=18091)
IFS=',' read -r -a LIST <<< "$PROXIES"
head -c 16384 /dev/zero | tr '\0' 'y' > "$OUT/docroot/16k.bin"
# A 16 KiB JSON document of varied records (what a compression or transform run reads).
python3 - "$OUT/docroot/16k.json" <<'PY'
import json, random, sys
rnd = random.Random(7)
words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
items, doc = [], ""
while True:
    items.append({"id": 10000 + len(items), "name": " ".join(rnd.choice(words) for _ in range(3)),
                  "price": round(rnd.uniform(1, 500), 2), "stock": rnd.randint(0, 900),
                  "tags": rnd.sample(words, 3), "active": rnd.random() < 0.8})
    candidate = json.dumps({"items": items, "total": len(items)})
    if len(candidate) > 16384:
        break
    doc = candidate
open(sys.argv[1], "w").write(doc)
PY
SMALL="$(head -c 100 /dev/zero | tr '\0' 'x')"
TCK=$(getconf CLK_TCK)
PIDS=()

say() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/bench.log" >&2; }
stop() {  # one PID we started: TERM, up to 5 s, then KILL
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null; return 0
}
trap 'for p in "${PIDS[@]}"; do stop "$p"; done' EXIT
trap 'exit 130' INT TERM
tree() { local c; echo "$1"; for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree "$c"; done; }
ticks() { local t=0 p v; for p in $(tree "$1"); do
  v=$(awk '{sub(/^.*\) /,""); print $12+$13}' "/proc/$p/stat" 2>/dev/null) || continue; t=$((t+${v:-0})); done; echo $t; }
hwm() { local t=0 p v; for p in $(tree "$1"); do
  v=$(awk '/^VmHWM:/{print $2}' "/proc/$p/status" 2>/dev/null) || continue; t=$((t+${v:-0})); done; echo $t; }
ready() {  # 127.0.0.1:$1 answers 200 while PID $2 lives (20 s at most)
  local i; for i in $(seq 100); do
    kill -0 "$2" 2>/dev/null || return 1
    [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' ${WRK_HEADER:+-H "$WRK_HEADER"} "http://127.0.0.1:$1/")" = 200 ] && return 0
    sleep 0.2; done; return 1; }
bg() {  # bg NAME PIN CMD...: start in the background, record the PID in LAST
  local name=$1 pin=$2; shift 2
  if [ -n "$pin" ]; then taskset -c "$pin" "$@" >"$OUT/logs/$name.out" 2>&1 &
  else "$@" >"$OUT/logs/$name.out" 2>&1 & fi
  LAST=$!; PIDS+=("$LAST")
}
nginx_common() {  # workers, name
  cat <<EOF
worker_processes $1;
daemon off;
pid $OUT/$2.pid;
error_log $OUT/logs/$2.error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 8192; multi_accept on; }
EOF
}
nginx_http_common() {  # name
  cat <<EOF
    access_log off; tcp_nodelay on; keepalive_timeout 120s; keepalive_requests 10000000;
    client_body_temp_path $OUT/tmp/$1-body; proxy_temp_path $OUT/tmp/$1-proxy;
    fastcgi_temp_path $OUT/tmp/$1-fcgi; uwsgi_temp_path $OUT/tmp/$1-uwsgi; scgi_temp_path $OUT/tmp/$1-scgi;
EOF
}
write_backend() {  # workers
  { nginx_common "$1" backend; echo "http {"; nginx_http_common backend; cat <<EOF
    sendfile on; default_type text/plain; etag off;
    server {
        listen 127.0.0.1:$UP1 backlog=4096; listen 127.0.0.1:$UP2 backlog=4096;
        add_header X-Backend \$server_port;
        location = /16k { root $OUT/docroot; try_files /16k.bin =404; }
        location = /16k.json { root $OUT/docroot; types { } default_type application/json; }
        location / { return 200 '$SMALL'; }
    }
}
EOF
  } > "$OUT/conf/backend.conf"
}
write_proxy() {  # name workers port
  case "$1" in
    nginx) { echo "${NGINX_MAIN_EXTRA:-}"; nginx_common "$2" nginx; echo "http {"; nginx_http_common nginx; cat <<EOF
    ${NGINX_HTTP_EXTRA:-}
    # 512 idle upstream connections: with fewer, nginx reconnects under 256 clients.
    upstream be { server 127.0.0.1:$UP1; server 127.0.0.1:$UP2; keepalive 512;
                  keepalive_requests 10000000; keepalive_timeout 120s; }
    server { listen 127.0.0.1:$3 backlog=4096;
        location / { ${NGINX_LOCATION_EXTRA:-} proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
                     proxy_set_header Host \$http_host;
                     proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } }
}
EOF
      } > "$OUT/conf/nginx.conf" ;;
    haproxy) cat > "$OUT/conf/haproxy.cfg" <<EOF
global
    nbthread $2
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 120s
    option forwardfor
    http-reuse always
frontend fe
    bind 127.0.0.1:$3
    default_backend be
backend be
    balance roundrobin
    server s1 127.0.0.1:$UP1
    server s2 127.0.0.1:$UP2
EOF
      ;;
    gatehouse|gatehouse-b) cat > "$OUT/conf/$1.yaml" <<EOF
listeners:
  - { name: bench, address: "127.0.0.1:$3"$(listener_extra "$1") }
upstreams:
  backends:
    targets: [{ address: "127.0.0.1:$UP1" }, { address: "127.0.0.1:$UP2" }]
    pool: { max_idle_per_target: 1024 }
routes:
  - name: all
    upstream: backends
access_log: "off"
reload: { watch: false }
EOF
      if [ "$1" = gatehouse-b ] && [ -n "${GATEHOUSE_B_EXTRA:-}" ]; then
        echo "$GATEHOUSE_B_EXTRA" >> "$OUT/conf/$1.yaml"
      fi
      if [ "$1" = gatehouse ] && [ -n "${GATEHOUSE_A_EXTRA:-}" ]; then
        echo "$GATEHOUSE_A_EXTRA" >> "$OUT/conf/$1.yaml"
      fi
      ;;
  esac
}
listener_extra() {  # name: GATEHOUSE_A_LISTENER / GATEHOUSE_B_LISTENER, as ", fields"
  local extra=""
  [ "$1" = gatehouse ] && extra="${GATEHOUSE_A_LISTENER:-}"
  [ "$1" = gatehouse-b ] && extra="${GATEHOUSE_B_LISTENER:-}"
  [ -n "$extra" ] && printf ', %s' "$extra"
  return 0
}
start_proxy() {  # name workers pin: sets STARTED
  local port=${PORT[$1]}
  STARTED=none; [ "$1" = direct ] && return 0
  write_proxy "$1" "$2" "$port"
  case "$1" in
    nginx) bg nginx "$3" nginx -p "$OUT" -c "$OUT/conf/nginx.conf" -e "$OUT/logs/nginx.error.log" ;;
    haproxy) bg haproxy "$3" haproxy -db -f "$OUT/conf/haproxy.cfg" ;;
    yardstick) bg yardstick "$3" "$YARDSTICK_BIN" "127.0.0.1:$port" "$2" "127.0.0.1:$UP1" "127.0.0.1:$UP2" ;;
    gatehouse) bg gatehouse "$3" "$GATEHOUSE_BIN" run -c "$OUT/conf/gatehouse.yaml" --threads "$2" ;;
    gatehouse-b) bg gatehouse-b "$3" "$GATEHOUSE_B_BIN" run -c "$OUT/conf/gatehouse-b.yaml" --threads "$2" ;;
    *) say "unknown proxy $1"; return 1 ;;
  esac
  STARTED=$LAST
  ready "$port" "$STARTED" || { say "$1 not ready"; tail -5 "$OUT/logs/$1.out" >&2; stop "$STARTED"; return 1; }
}
ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); printf "%.4f", v/1000}
  else if (v ~ /ms$/) {sub(/ms$/,"",v); printf "%.4f", v} else if (v ~ /s$/) {sub(/s$/,"",v); printf "%.4f", v*1000}
  else print "NA"}'; }

CSV="$OUT/results.csv"
echo "workers,body,conns,proxy,run,rps,p50_ms,p99_ms,errors,requests,proxy_cpu_s,proxy_hwm_kb" > "$CSV"
{ date -Is; uname -a; nproc; nginx -v 2>&1; haproxy -v | head -1; wrk -v 2>&1 | head -1; "$GATEHOUSE_BIN" --version; } > "$OUT/env.txt" 2>&1
for W in $WORKERS_LIST; do
  if [ "$W" = 1 ]; then PIN=1; LOADPIN=0; BW=1; else PIN=""; LOADPIN=""; BW=$W; fi
  WRK=(wrk); [ -n "$LOADPIN" ] && WRK=(taskset -c "$LOADPIN" wrk)
  [ -n "${WRK_HEADER:-}" ] && WRK+=(-H "$WRK_HEADER")
  while IFS= read -r line; do [ -n "$line" ] && WRK+=(-H "$line"); done <<< "${WRK_HEADERS:-}"
  if [ -n "${WRK_BODY:-}" ]; then
    # wrk sends the script's method, body and header with every request.
    { echo 'wrk.method = "POST"'
      printf 'wrk.headers["Content-Type"] = "%s"\n' "${WRK_CONTENT_TYPE:-application/json}"
      printf 'wrk.body = [==['; cat "$WRK_BODY"; echo ']==]'; } > "$OUT/conf/post.lua"
    WRK+=(-s "$OUT/conf/post.lua")
  fi
  for BODY in $BODIES; do
    P_=${WRK_PATH:-/}; [ "$BODY" = 16k ] && P_=/16k; [ "$BODY" = json16k ] && P_=/16k.json
    for C in $CONNS_LIST; do
      say "=== workers=$W body=$BODY conns=$C"
      write_backend "$BW"
      bg backend "$LOADPIN" nginx -p "$OUT" -c "$OUT/conf/backend.conf" -e "$OUT/logs/backend.error.log"
      BACKEND=$LAST
      ready $UP1 "$BACKEND" && ready $UP2 "$BACKEND" || { say "backend failed"; exit 1; }
      declare -A LIVE=()
      for P in "${LIST[@]}"; do start_proxy "$P" "$W" "$PIN" && LIVE[$P]=$STARTED; done
      for P in "${!LIVE[@]}"; do
        timeout $((WARMUP + 15)) "${WRK[@]}" -t1 -c"$C" -d"${WARMUP}s" "http://127.0.0.1:${PORT[$P]}$P_" >/dev/null 2>&1
      done
      for R in $(seq "$RUNS"); do
        for P in "${LIST[@]}"; do
          [ -n "${LIVE[$P]:-}" ] || continue
          pid=${LIVE[$P]}; sleep 1
          c0=0; [ "$pid" != none ] && c0=$(ticks "$pid")
          f="$OUT/wrk/w$W-$BODY-c$C-$P-r$R.txt"
          timeout $((DURATION + 20)) "${WRK[@]}" -t1 -c"$C" -d"${DURATION}s" --timeout 5s --latency \
            "http://127.0.0.1:${PORT[$P]}$P_" > "$f" 2>&1
          c1=0; [ "$pid" != none ] && c1=$(ticks "$pid")
          rps=$(awk '/^Requests\/sec:/{print $2}' "$f")
          p50=$(ms "$(awk '$1=="50%"{print $2}' "$f")"); p99=$(ms "$(awk '$1=="99%"{print $2}' "$f")")
          n=$(awk '/requests in/{print $1}' "$f")
          errs=$(awk '/Non-2xx/{n+=$NF} /Socket errors/{gsub(/,/,""); n+=$4+$6+$8+$10} END{print n+0}' "$f")
          cpu=$(awk -v t=$((c1-c0)) -v h="$TCK" 'BEGIN{printf "%.2f", t/h}')
          mem=""; [ "$pid" != none ] && mem=$(hwm "$pid")
          echo "$W,$BODY,$C,$P,$R,${rps:-0},$p50,$p99,$errs,${n:-0},$cpu,$mem" >> "$CSV"
          say "w=$W $BODY c=$C $P r$R: ${rps:-0} req/s p99=${p99}ms err=$errs cpu=${cpu}s hwm=${mem}kB"
        done
      done
      for P in "${!LIVE[@]}"; do [ "${LIVE[$P]}" != none ] && stop "${LIVE[$P]}"; done
      unset LIVE; stop "$BACKEND"; sleep 1
    done
  done
done
python3 "$ROOT/bench/summarize.py" "$CSV" | tee "$OUT/summary.md"
