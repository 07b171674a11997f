#!/usr/bin/env bash
# The DPDK pipeline against its peers, measured in the same run on the same
# vdevs: cpumapd (1 RX lcore -> 1 target, net_null, no-touch, remote drop),
# the naive RX -> rte_ring -> worker loop (examples/dpdk_naive.rs), and
# dpdk-testpmd --forward-mode=io (one forwarding core, net_null pair).
# Prints a Markdown table with each peer's Mpps and its ratio to cpumapd.
#
#   scripts/bench-dpdk.sh [SECONDS] [ROUNDS]   (default 5 s, 3 rounds)
#
# Hugepages are used (--in-memory) when 512 are free (as root:
# echo 512 > /proc/sys/vm/nr_hugepages), else --no-huge.
# lcore 0 (main) and the RX lcore share CPU 0; the target has CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-3}
cargo build --release --features dpdk --quiet --bin cpumapd --example dpdk_naive
free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
if [ "${free:-0}" -ge 512 ]; then mem="--in-memory -m 800"; memname=hugepages; else mem="--no-huge -m 1024 --no-shconf"; memname=no-huge; fi
eal="--no-pci --log-level 4 $mem"
out=$(mktemp)
trap 'rm -f "$out"' EXIT

cpumapd_mpps() {
  # shellcheck disable=SC2086
  target/release/cpumapd --lcores 0@0,1@0,2@1 $eal --vdev net_null0 -- \
    --mode no-touch --remote-action drop --cpu 2 --duration "$secs" --interval 0 \
    --metrics off --control off --summary-json "$out" >/dev/null 2>&1
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("%.2f" % (s["target_processed"]/s["duration_s"]/1e6))' "$out"
}

naive_mpps() {
  # shellcheck disable=SC2086
  target/release/examples/dpdk_naive --lcores 0@0,1@0,2@1 $eal --vdev net_null0 -- "$secs" 2>/dev/null |
    python3 -c 'import json,sys; print("%.2f" % json.loads(sys.stdin.read().strip().splitlines()[-1])["worker_mpps"])'
}

testpmd_mpps() {
  local log
  log=$(mktemp)
  # shellcheck disable=SC2086
  # testpmd forwards until Enter or SIGINT: its stdin stays open (sleep),
  # and SIGINT comes after $secs.
  (sleep "$secs"; pkill -INT -f "file-prefix bench-testpmd") &
  sleep $((secs + 5)) | dpdk-testpmd --lcores 0@0,1@1 $eal --file-prefix bench-testpmd --vdev net_null0 --vdev net_null1 -- \
    --forward-mode=io --auto-start --nb-cores=1 >"$log" 2>&1 || true
  wait
  python3 - "$log" "$secs" <<'PY'
import re, sys
t = open(sys.argv[1]).read().split("Accumulated forward statistics")[-1]
n = int(re.search(r"RX-packets:\s+(\d+)", t).group(1))
print("%.2f" % (n / float(sys.argv[2]) / 1e6))
PY
  rm -f "$log"
}

echo "DPDK null pipeline, $memname, ${secs}s per point, $rounds rounds (Mpps delivered by the last stage)"
echo
echo "| round | cpumapd (RX -> ring -> target) | naive rte_ring pipeline | ratio | testpmd io (1 core) | ratio |"
echo "|------:|------:|------:|------:|------:|------:|"
for r in $(seq 1 "$rounds"); do
  c=$(cpumapd_mpps); n=$(naive_mpps); t=$(testpmd_mpps)
  python3 -c "import sys; c,n,t=map(float,sys.argv[2:]); print(f'| {sys.argv[1]} | {c:.2f} | {n:.2f} | {c/n:.2f}x | {t:.2f} | {c/t:.2f}x |')" "$r" "$c" "$n" "$t"
done
