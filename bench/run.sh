#!/usr/bin/env bash
# Whole-process benchmark: Gatehouse vs nginx vs HAProxy on loopback, same run, same
# backends, using the shared peer harness (../shared/bench/peers.sh or $PEERS).
# Installs nginx, haproxy, caddy and wrk from Debian when missing; builds the release binary.
#
#   bench/run.sh                       # full matrix: 1 and 2 workers, 64/256 conns, small/16k
#   bench/run.sh --workers 1 --conns 64 --bodies small --runs 1 --duration 5   # quick look
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PEERS="${PEERS:-$ROOT/../shared/bench/peers.sh}"
[ -x "$PEERS" ] || { echo "peer harness not found at $PEERS (set PEERS=...)" >&2; exit 1; }
missing=()
for t in nginx haproxy caddy wrk; do command -v "$t" >/dev/null || missing+=("$t"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}"
fi
(cd "$ROOT" && cargo build --release -p gatehouse)
exec "$PEERS" \
  --extra "gatehouse=$ROOT/bench/gatehouse-peer.sh" \
  --proxies direct,nginx,haproxy,gatehouse \
  --workers "1 2" --conns "64 256" --bodies "small 16k" --runs 3 "$@"
