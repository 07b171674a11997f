#!/usr/bin/env bash
# Pipeline benchmark: 1 RX lcore (net_null, no-touch) -> 1 target (remote
# drop), for several bulk and ring sizes. Prints a Markdown table of Mpps at
# RX and at the target, enqueue drop rate, bulk-avg and target sched/s.
#
#   scripts/bench-pipeline.sh [SECONDS]      (default 3 s per point)
#
# Needs 2 CPUs (lcore 0 on CPU 0, lcore 1 on CPU 1) and python3 for the
# JSON. MODE picks the filter (default no-touch), $EXTRA adds app args (e.g. MODE=l4-hash
# with EAL="--vdev net_gen0").
#
# STAGES=1 runs with --stage-cycles and prints, per point, the cycles per
# packet of each loop stage (RX lcore: poll, rx, filter, enqueue, flush,
# other; target: dequeue, remote, sink, other). BULKS and QSIZES override
# the grid (e.g. BULKS="8" QSIZES="2048"). CPUMAPD=path runs another build
# (a DPDK one: EAL="--in-memory --vdev net_null0" and the lcores as below).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
if [[ -z ${CPUMAPD:-} ]]; then
  cargo build --release --quiet
fi
bin=${CPUMAPD:-target/release/cpumapd}
eal=${EAL:---vdev net_null0}
lcores=${LCORES:---lcores 0@0,1@1}
stages=${STAGES:-0}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if [[ $stages == 1 ]]; then
  echo "| bulk | qsize | target Mpps | RX poll | rx | filter | enqueue | flush | other | RX total | target dequeue | remote | sink | other | target total |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
else
  echo "| bulk | qsize | rx Mpps | target Mpps | enqueue drop % | bulk-avg | target sched/s |"
  echo "|-----:|------:|--------:|------------:|---------------:|---------:|---------------:|"
fi
flag=()
[[ $stages == 1 ]] && flag=(--stage-cycles)
for bulk in ${BULKS:-1 8 16 32}; do
  for qsize in ${QSIZES:-256 2048 16384}; do
    # shellcheck disable=SC2086
    $bin $lcores $eal -- --mode "${MODE:-no-touch}" --remote-action drop --cpu "${CPU:-1}" \
      --bulk-size "$bulk" --qsize "$qsize" --duration "$secs" --interval 0 \
      --metrics off --control off "${flag[@]}" ${EXTRA:-} --summary-json "$out" >/dev/null
    python3 - "$out" "$bulk" "$qsize" "$stages" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); d = s["duration_s"]; t = s["targets"][0]
if sys.argv[4] == "1":
    r = s["rx_lcores"][0]["stages"]; g = t["stages"]
    rc, tc = r["cycles_per_packet"], g["cycles_per_packet"]
    cells = [rc[k] for k in ("poll", "rx", "filter", "enqueue", "flush", "other")] + [r["total_per_packet"]]
    cells += [tc[k] for k in ("dequeue", "remote", "sink", "other")] + [g["total_per_packet"]]
    print(f"| {sys.argv[2]} | {sys.argv[3]} | {s['target_processed']/d/1e6:.2f} | "
          + " | ".join(f"{c:.1f}" for c in cells) + " |")
else:
    drop = 100.0 * s["enqueue_drops"] / max(1, s["redirect"])
    print(f"| {sys.argv[2]} | {sys.argv[3]} | {s['rx']/d/1e6:.2f} | {s['target_processed']/d/1e6:.2f} | "
          f"{drop:.2f} | {t['bulk_avg']:.2f} | {t['sched']/d:.0f} |")
PY
  done
done
if [[ $stages == 1 ]]; then
  python3 -c "import json; print(f'TSC: {json.load(open(\"$out\"))[\"tsc_ghz\"]:.3f} GHz (cycles per ns)')"
fi
