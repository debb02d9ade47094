#!/usr/bin/env bash
# A screenshot of a slave's dashboard page (the monitor's GET /) during a failover: brings up
# a slave lab in Docker (the stand-in master and the slave's service container, on a Docker
# network of their own), runs `xivo-ha monitor` on it, stops the master, waits for the page to
# say SERVING and has headless Chromium (Debian's `chromium`) take the screenshot, 1000×1200.
# The lab is the test fixture of tests/dashboard.rs (its failover test), removed when it ends.
# Needs a Docker engine, a Rust toolchain and chromium (apt-get install chromium).
#
# usage: scripts/dashboard-screenshot.sh OUT.png      (e.g. docs/dashboard.png)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 1 ] || [[ "$1" == -* ]]; then
  sed -n '2,9p' "$0" >&2
  exit 2
fi
out=$1
command -v chromium >/dev/null || { echo "dashboard-screenshot: chromium not found: apt-get install chromium" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "dashboard-screenshot: the Docker engine does not answer (docker info failed): start dockerd" >&2; exit 1; }

shot=target/tmp/dashboard/serving.png
rm -f "$shot"
cargo test --locked --test dashboard a_failover_shows_on_the_slave_page -- --exact
cp "$shot" "$out"
echo "dashboard-screenshot: wrote $out"
