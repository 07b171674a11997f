#!/usr/bin/env bash
# Pipeline benchmark: 1 RX lcore (net_null, no-touch) -> 1 target (remote
# drop), for several bulk and ring sizes. Prints a Markdown table of Mpps at
# RX and at the target, enqueue drop rate, bulk-avg and target sched/s.
#
#   scripts/bench-pipeline.sh [SECONDS]      (default 3 s per point)
#
# Needs 2 CPUs (lcore 0 on CPU 0, lcore 1 on CPU 1) and python3 for the
# JSON. Extra cpumapd app args can be given in $EXTRA (e.g. EXTRA="--mode l4-hash"
# with EAL="--vdev net_gen0").
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
cargo build --release --quiet
bin=target/release/cpumapd
eal=${EAL:---vdev net_null0}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "| bulk | qsize | rx Mpps | target Mpps | enqueue drop % | bulk-avg | target sched/s |"
echo "|-----:|------:|--------:|------------:|---------------:|---------:|---------------:|"
for bulk in 1 8 16 32; do
  for qsize in 256 2048 16384; do
    # shellcheck disable=SC2086
    $bin --lcores 0@0,1@1 $eal -- --mode no-touch --remote-action drop --cpu 1 \
      --bulk-size "$bulk" --qsize "$qsize" --duration "$secs" --interval 0 \
      ${EXTRA:-} --summary-json "$out" >/dev/null
    python3 - "$out" "$bulk" "$qsize" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); d = s["duration_s"]; t = s["targets"][0]
drop = 100.0 * s["enqueue_drops"] / max(1, s["redirect"])
print(f"| {sys.argv[2]} | {sys.argv[3]} | {s['rx']/d/1e6:.2f} | {s['target_processed']/d/1e6:.2f} | "
      f"{drop:.2f} | {t['bulk_avg']:.2f} | {t['sched']/d:.0f} |")
PY
  done
done
