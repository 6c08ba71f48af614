#!/usr/bin/env bash
# Runs the whole test suite; installs what the tests need on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v curl >/dev/null || need+=(curl)
# RSA keys for the JWT tests (ring signs RSA but cannot generate keys).
command -v openssl >/dev/null || need+=(openssl)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# The shared Redis that cluster-scope limits are tested against (started per test).
command -v redis-server >/dev/null || need+=(redis-server)
# Headless Chromium and its WebDriver, for the dashboard test.
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
# The OWASP Core Rule Set as Debian packages it (CRS 3.3): the bot filter's scanner list.
[ -f /usr/share/modsecurity-crs/rules/scanners-user-agents.data ] || need+=(modsecurity-crs)
# nginx with libmodsecurity 3: the reference the WAF's differential test compares with.
[ -x /usr/sbin/nginx ] || need+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_http_modsecurity_module.so ] || need+=(libnginx-mod-http-modsecurity)
if [ ${#need[@]} -gt 0 ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}"
fi
# Python tools the tests run, in a venv of their own (Debian's Python is externally
# managed): sslyze checks the TLS listener against Mozilla's intermediate profile;
# http-message-signatures (with requests) is the standard RFC 9421 client that signed
# requests must interoperate with; prometheus_client's strict OpenMetrics parser reads
# the OpenMetrics scrape.
tools="$PWD/target/test-tools"
if [ ! -x "$tools/bin/sslyze" ] || ! "$tools/bin/python3" -c 'import http_message_signatures, requests, prometheus_client' 2>/dev/null; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q sslyze http-message-signatures requests prometheus_client
fi
export PATH="$tools/bin:$PATH"
# nextest runs every test in a process of its own. The gateway's integration tests share
# one binary, and some run the gateway in-process with process-wide metrics and
# analytics: under plain `cargo test` they would count each other's traffic.
cargo nextest --version >/dev/null 2>&1 || cargo install cargo-nextest --locked
cargo nextest run --workspace --no-fail-fast "$@"

# Fuzz smoke: each cargo-fuzz target for 30 s when the nightly toolchain is present. New
# inputs go to a scratch corpus; the seeds in fuzz/seeds stay small and reviewed.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
  for target in config_load path_normalize host_parse request_head gateway_request accept_encoding xml_body json_body; do
    scratch="$(mktemp -d)"
    cargo +nightly fuzz run "$target" "$scratch" "fuzz/seeds/$target" -- -max_total_time=30 -rss_limit_mb=2048
    rm -rf "$scratch"
  done
else
  echo "nightly toolchain not installed: skipping the fuzz smoke run"
fi

