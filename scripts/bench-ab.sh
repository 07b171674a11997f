#!/usr/bin/env bash
# A/B of two cpumapd builds on the same pipeline point, run alternately
# (A, B, A, B, ...) so the host's drift hits both alike. Prints a Markdown
# row per round and the median B/A ratio of target Mpps.
#
#   scripts/bench-ab.sh OLD_BINARY NEW_BINARY [SECONDS] [ROUNDS]   (default 3 s, 6 rounds)
#
# The point is scripts/bench-pipeline.sh's: 1 RX lcore -> 1 target, remote
# drop, bulk 8, qsize 2048, `--lcores 0@0,1@1`. EAL, MODE and LCORES as
# there (e.g. EAL="--vdev net_gen0" MODE=l4-hash; a DPDK build:
# EAL="--no-pci --in-memory -m 800 --vdev net_null0" LCORES="--lcores 0@0,1@0,2@1" CPU=2).
# APP adds application options, e.g. an eBPF program on the RX lcore:
# EAL="--vdev net_gen0" APP="--prog OBJ.o:cpumap_l4_hash --jit".
# Rounds alternate which build runs first, so a drift inside a round
# favours neither.
set -euo pipefail
cd "$(dirname "$0")/.."
a=${1:?old binary}
b=${2:?new binary}
secs=${3:-3}
rounds=${4:-6}
eal=${EAL:---vdev net_null0}
lcores=${LCORES:---lcores 0@0,1@1}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
mpps() {
  # shellcheck disable=SC2086
  "$1" $lcores $eal -- --mode "${MODE:-no-touch}" ${APP:-} --remote-action drop --cpu "${CPU:-1}" \
    --bulk-size 8 --qsize 2048 --duration "$secs" --interval 0 \
    --metrics off --control off --summary-json "$out" >/dev/null 2>&1
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("%.2f" % (s["target_processed"]/s["duration_s"]/1e6))' "$out"
}
echo "| round | A Mpps | B Mpps | B/A |"
echo "|---:|---:|---:|---:|"
ratios=()
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 1 ]; then
    x=$(mpps "$a")
    y=$(mpps "$b")
  else
    y=$(mpps "$b")
    x=$(mpps "$a")
  fi
  q=$(python3 -c "print('%.3f' % ($y / $x if $x > 0 else 0))")
  ratios+=("$q")
  echo "| $r | $x | $y | $q |"
done
python3 -c "import statistics,sys; v=sorted(map(float, sys.argv[1:])); print(f'median B/A {statistics.median(v):.3f} (min {v[0]:.3f}, max {v[-1]:.3f})')" "${ratios[@]}"
