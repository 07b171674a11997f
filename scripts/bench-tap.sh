#!/usr/bin/env bash
# TAP exception path benchmark: frames/s into the kernel through cpumapd's
# TapSink vs a plain write() loop on the same TAP, same frame, 1 and 2
# queues (examples/tap_bench.rs). Runs in a throwaway network namespace.
# Needs root.   scripts/bench-tap.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-2}
cargo build --release --quiet --example tap_bench
. scripts/lib/netns.sh
ns=cmbench$$
trap ns_cleanup EXIT
ns_add "$ns"
ip netns exec "$ns" target/release/examples/tap_bench "$secs"
