#!/usr/bin/env bash
# Failover benchmark (issue 3): one of two backends is killed and restarted mid-run, for
# nginx (proxy_next_upstream), HAProxy (retry-on, option redispatch) and Gatehouse
# (health checks + retries), in the same run on loopback. Reports req/s, p99 and failed
# requests (non-2xx + socket errors) per proxy. Then measures the cost of health checking
# when every target is healthy (Gatehouse with and without health_check, same load).
#
#   bench/failover.sh [--duration 12] [--conns 64] [--runs 3]
# Needs nginx, haproxy, wrk (installed from Debian when missing).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION=12
CONNS=64
RUNS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --conns) CONNS="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
missing=()
for t in nginx haproxy wrk; do command -v "$t" >/dev/null || missing+=("$t"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}"
fi
(cd "$ROOT" && cargo build --release -q -p gatehouse)
GH="$ROOT/target/release/gatehouse"
RUN="$(mktemp -d -t gatehouse-failover-XXXX)"
mkdir -p "$RUN/tmp"
UP1=19101 UP2=19102 PORT=19180
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# One single-process nginx per backend, so a backend can be killed by its PID.
backend() { # port
  cat > "$RUN/backend-$1.conf" <<EOF
worker_processes 1; master_process off; daemon off;
pid $RUN/backend-$1.pid; error_log $RUN/backend-$1.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000;
  client_body_temp_path $RUN/tmp/b$1; proxy_temp_path $RUN/tmp/p$1; fastcgi_temp_path $RUN/tmp/f$1;
  uwsgi_temp_path $RUN/tmp/u$1; scgi_temp_path $RUN/tmp/s$1;
  server { listen 127.0.0.1:$1 backlog=4096; location / { return 200 'backend $1\n'; } } }
EOF
  nginx -c "$RUN/backend-$1.conf" -p "$RUN" >/dev/null 2>&1 &
  echo $!
}

proxy_cmd() { # name -> starts the proxy in the background, prints its PID
  case "$1" in
    nginx)
      cat > "$RUN/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $RUN/nginx.pid; error_log $RUN/nginx.log warn;
events { worker_connections 8192; }
http { access_log off; keepalive_timeout 120s; keepalive_requests 10000000;
  client_body_temp_path $RUN/tmp/pb; proxy_temp_path $RUN/tmp/pp; fastcgi_temp_path $RUN/tmp/pf;
  uwsgi_temp_path $RUN/tmp/pu; scgi_temp_path $RUN/tmp/ps;
  upstream be { server 127.0.0.1:$UP1 max_fails=1 fail_timeout=2s; server 127.0.0.1:$UP2 max_fails=1 fail_timeout=2s;
    keepalive 512; }
  server { listen 127.0.0.1:$PORT backlog=4096;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_next_upstream error timeout http_502 http_503 http_504; proxy_next_upstream_tries 3;
      proxy_connect_timeout 1s; } } }
EOF
      nginx -c "$RUN/nginx.conf" -p "$RUN" >/dev/null 2>&1 & echo $! ;;
    haproxy)
      cat > "$RUN/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 120s
    http-reuse always
    retries 3
    option redispatch 1
    retry-on all-retryable-errors
frontend fe
    bind 127.0.0.1:$PORT
    default_backend be
backend be
    balance roundrobin
    server s1 127.0.0.1:$UP1 check inter 500ms fall 2 rise 2
    server s2 127.0.0.1:$UP2 check inter 500ms fall 2 rise 2
EOF
      haproxy -f "$RUN/haproxy.cfg" >/dev/null 2>&1 & echo $! ;;
    gatehouse|gatehouse-nocheck)
      local hc=""
      if [ "$1" = gatehouse ]; then
        hc='    health_check:
      active: { type: tcp, interval: 500ms, timeout: 250ms, healthy_threshold: 2, unhealthy_threshold: 2 }
      passive: { consecutive_failures: 3, ejection_time: 2s }
    slow_start: 2s
    retries: { attempts: 3, backoff: { base: 2ms, max: 20ms }, budget: { ratio: 0.5, min_per_second: 1000 } }'
      fi
      cat > "$RUN/gatehouse-$1.yaml" <<EOF
listeners:
  - { name: bench, address: "127.0.0.1:$PORT" }
upstreams:
  be:
    targets: [{ address: "127.0.0.1:$UP1" }, { address: "127.0.0.1:$UP2" }]
    pool: { max_idle_per_target: 1024 }
$hc
routes:
  - name: all
    upstream: be
access_log: "off"
reload: { watch: false }
EOF
      "$GH" run -c "$RUN/gatehouse-$1.yaml" --threads 1 --log-format text >"$RUN/$TAG.log" 2>&1 & echo $! ;;
  esac
}

wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# wrk output -> "req/s p99_ms failed"
parse() {
  awk '/Requests\/sec/ {rps=$2}
       /^ +99%/ {p=$2; if (p ~ /us$/) {sub("us","",p); p/=1000} else if (p ~ /ms$/) {sub("ms","",p)} else if (p ~ /s$/) {sub("s","",p); p*=1000}}
       /Non-2xx/ {bad+=$NF}
       /Socket errors/ {gsub(",","",$0); for (i=1;i<=NF;i++) if ($i ~ /^[0-9]+$/) bad+=$i}
       END {printf "%.0f %.2f %d\n", rps, p, bad}'
}

one_run() { # proxy kill(0|1) -> "req/s p99 failed"
  TAG="$1-$2-$RANDOM"
  B1=$(backend $UP1); B2=$(backend $UP2); PIDS+=("$B1" "$B2")
  wait_port $UP1; wait_port $UP2
  P=$(proxy_cmd "$1"); PIDS+=("$P"); wait_port $PORT
  wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$PORT/" >/dev/null 2>&1 || true
  if [ "$2" = 1 ]; then
    ( sleep $((DURATION / 4)); kill -9 "$B2" 2>/dev/null
      sleep $((DURATION / 4)); backend $UP2 > "$RUN/b2.pid" ) &
    KILLER=$!
  fi
  out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$PORT/" 2>&1)
  [ "$2" = 1 ] && wait "$KILLER"
  echo "$out" > "$RUN/wrk-$TAG.txt"
  kill "$P" 2>/dev/null || true; wait "$P" 2>/dev/null || true
  kill "$B1" "$B2" 2>/dev/null || true
  [ -f "$RUN/b2.pid" ] && { kill "$(cat "$RUN/b2.pid")" 2>/dev/null || true; rm -f "$RUN/b2.pid"; }
  sleep 0.5
  echo "$out" | parse
}

echo "Logs and wrk output: $RUN"
echo
echo "## Failover: backend 2 killed at $((DURATION / 4)) s and restarted at $((DURATION / 2)) s of a ${DURATION} s run, $CONNS connections, 1 worker"
echo
echo "| proxy | run | req/s | p99 ms | failed requests |"
echo "|---|---|---|---|---|"
for p in nginx haproxy gatehouse; do
  for r in $(seq "$RUNS"); do
    read -r rps p99 bad < <(one_run $p 1)
    echo "| $p | $r | $rps | $p99 | $bad |"
  done
done
echo
echo "## Health-checking cost, all targets healthy (Gatehouse, ${DURATION} s runs)"
echo
echo "| config | run | req/s | p99 ms | failed requests |"
echo "|---|---|---|---|---|"
for r in $(seq "$RUNS"); do
  for p in gatehouse-nocheck gatehouse; do
    read -r rps p99 bad < <(one_run $p 0)
    echo "| $p | $r | $rps | $p99 | $bad |"
  done
done
