#!/usr/bin/env bash
# Puts Debian's Prometheus and promtool under target/tools/prometheus without
# installing a service: apt-get download + dpkg -x. Idempotent.
#   scripts/get-prometheus.sh [DEST]      (default target/tools/prometheus)
# The tests look there (or at $CPUMAPD_PROMETHEUS_BIN, or on PATH).
set -euo pipefail
dest=${1:-"$(dirname "$0")/../target/tools/prometheus"}
if [ -x "$dest/usr/bin/prometheus" ] && [ -x "$dest/usr/bin/promtool" ]; then
    echo "prometheus: already in $dest"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download prometheus >/dev/null 2>&1) || {
    apt-get update -qq && (cd "$work" && apt-get download prometheus)
}
mkdir -p "$dest"
dpkg -x "$work"/prometheus_*.deb "$dest"
"$dest/usr/bin/prometheus" --version | head -1
