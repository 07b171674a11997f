#!/usr/bin/env bash
# RX-to-target latency at 10%, 50% and 90% of the maximum rate: the
# generator (net_gen, 64 B UDP, 256 flows) -> 1 RX lcore (CPU 0) -> 1
# target (CPU 1) -> drop, with --latency (the RX lcore stamps each burst,
# the target records every frame it dequeues). The maximum is measured
# first in the same run (unpaced generator).
# IDLE=spin|adaptive|sleep picks --idle (default adaptive); the 1% point
# shows what waking a sleeping target costs.
#   IDLE=POLICY scripts/bench-latency.sh [SECONDS] [BULK]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
bulk=${2:-8}
idle=${IDLE:-adaptive}
cargo build --release --quiet
run() { # generator rate (0 = unpaced) -> summary JSON on stdout (human output dropped)
    target/release/cpumapd --lcores 0@0,1@1 --vdev "net_gen0,flows=256,rate=$1" -- \
        --cpu 1 --remote-action drop --bulk-size "$bulk" --idle "$idle" --latency --duration "$secs" \
        --interval 0 --metrics off --control off --summary-json - 2>/dev/null
}
max=$(run 0 | python3 -c 'import json,sys; s=json.load(sys.stdin); print(int(s["target_processed"]/s["duration_s"]))')
echo "max (unpaced): $((max / 1000)) kpps at the target; bulk $bulk, --idle $idle, ${secs} s per point"
echo
echo "| load | offered kpps | target kpps | enqueue drops | p50 us | p99 us | p99.9 us | max us | target sched/s |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for pct in 1 10 50 90; do
    rate=$((max * pct / 100))
    run "$rate" | python3 -c '
import json, sys
pct, rate = sys.argv[1], int(sys.argv[2])
s = json.load(sys.stdin)
t = s["targets"][0]
l, d = t["latency"], s["duration_s"]
us = lambda ns: "%.1f" % (ns / 1000)
print("| %s%% | %.0f | %.0f | %d | %s | %s | %s | %s | %.0f |" % (
    pct, rate / 1000, t["processed"] / d / 1000, s["enqueue_drops"],
    us(l["p50_ns"]), us(l["p99_ns"]), us(l["p999_ns"]), us(l["max_ns"]), t["sched"] / d))
' "$pct" "$rate"
done
