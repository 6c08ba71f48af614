#!/usr/bin/env bash
# Started by the peer harness with PORT, WORKERS, UP1, UP2 set: writes the benchmark
# config and runs the release gateway in the foreground (GATEHOUSE_BIN picks another
# build, for A/B runs).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CFG="$(mktemp -t gatehouse-bench-XXXX.yaml)"
cat > "$CFG" <<YAML
listeners:
  - { name: bench, address: "127.0.0.1:${PORT}" }
upstreams:
  backends:
    targets: [{ address: "${UP1}" }, { address: "${UP2}" }]
    pool: { max_idle_per_target: 1024 }
routes:
  - name: all
    upstream: backends
access_log: "off"
reload: { watch: false }
YAML
exec "${GATEHOUSE_BIN:-$ROOT/target/release/gatehouse}" run -c "$CFG" --threads "${WORKERS}" --log-format text
