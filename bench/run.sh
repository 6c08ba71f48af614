#!/usr/bin/env bash
# Whole-process benchmark: Gatehouse vs nginx vs HAProxy vs the yardstick forwarder on
# loopback, same run, same backends (bench/peers.sh). Installs nginx, haproxy and wrk from
# Debian when missing and builds the release binary and the yardstick first.
#
#   bench/run.sh                       # full matrix: 1 and 2 workers, 64/256 conns, small/16k
#   bench/run.sh --workers 1 --conns 64 --bodies small --runs 1 --duration 5   # quick look
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
missing=()
for t in nginx haproxy wrk curl; do command -v "$t" >/dev/null || missing+=("$t"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}"
fi
(cd "$ROOT" && cargo build --release -p gatehouse)
(cd "$ROOT/bench/yardstick" && cargo build --release)
exec "$ROOT/bench/peers.sh" "$@"
