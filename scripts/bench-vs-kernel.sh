#!/usr/bin/env bash
# Side by side with the kernel's own cpumap on one veth pair, one generator:
# xdp-trafficgen udp (66-byte IPv6/UDP, ~5 Mpps) pinned to CPU 0 in
# namespace S sends into the veth; in namespace A
#   kernel   xdp-bench redirect-cpu -c 1 -p no-touch -r drop|pass on the veth
#            (its kthread on CPU 1; rows "kthread total" are what it processed)
#   cpumapd  net_af_xdp0 on the veth, --mode no-touch --cpu 1
#            --remote-action drop|pass, --exception tap:IF, in two
#            placements: --lcores 0@0,1@1 (RX beside the generator, target
#            alone on CPU 1) and 0@1,1@1 (RX and target share CPU 1)
# Each cpumapd row is reported against the kernel row of the same round.
# "per target core" divides the rate by the share of a CPU the target used
# while the generator ran (its thread's /proc schedstat: the kthread
# cpumap/1/map:N for the kernel, lcore1 for cpumapd): what one fully busy
# target core would move. It separates the target's cost per frame from
# the RX side's (with 0@0,1@1 the RX lcore shares CPU 0 with a generator
# that runs inside the kernel, and starves the target).
# Needs root and xdp-tools 1.6.3: ../shared/xdp-tools/build.sh DIR, then
#   XDPTOOLS=DIR scripts/bench-vs-kernel.sh [SECONDS] [ROUNDS] [--idle POLICY]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
rounds=${2:-2}
shift $(($# > 2 ? 2 : $#)) || true
extra=("$@")
: "${XDPTOOLS:?set XDPTOOLS to a directory built by ../shared/xdp-tools/build.sh}"
bin=${CPUMAPD:-target/release/cpumapd}
[ -n "${CPUMAPD:-}" ] || cargo build --release --quiet
. scripts/lib/netns.sh
s=cmkS$$; a=cmkA$$
trap 'ns_cleanup; rm -f "$out" "$xb"' EXIT
ns_add "$s"; ns_add "$a"
ns_veth "$s" vs "$a" va
mac=$(ip netns exec "$a" cat /sys/class/net/va/address)
out=$(mktemp); xb=$(mktemp)
runtime() { # ns a thread has run (schedstat), 0 if it is gone
  awk '{print $1}' "$1" 2>/dev/null || echo 0
}
gen() { # runs the generator for $secs; leaves its wall time in $gen_s and
  # the share of a CPU thread $1 (a schedstat path) ran meanwhile in $busy
  local t0 c0 c1; t0=$(date +%s.%N); c0=$(runtime "$1")
  ip netns exec "$s" timeout -s INT "$secs" taskset -c 0 "$XDPTOOLS/bin/xdp-trafficgen" udp -m "$mac" -t 1 vs >/dev/null 2>&1 || true
  c1=$(runtime "$1")
  gen_s=$(python3 -c "print($(date +%s.%N) - $t0)")
  busy=$(python3 -c "print(max(($c1 - $c0) / 1e9 / $gen_s, 1e-9))")
}
kernel() { # $1 = drop|pass; prints Mpps the kthread processed
  ip netns exec "$a" "$XDPTOOLS/bin/xdp-bench" redirect-cpu -c 1 -p no-touch -r "$1" -i 1 -e va >"$xb" 2>&1 &
  local p=$! k; sleep 1.5
  k=$(pgrep '^cpumap/1/map' | head -1)
  gen "/proc/$k/schedstat"; sleep 0.5; kill -INT "$p"; wait "$p" 2>/dev/null || true
  # xdp_stats rows: what the entry's program did on the kthread, per second.
  python3 - "$xb" <<'PY'
import re, sys, statistics
rows = [int(a) + int(b) for a, b in re.findall(r"xdp_stats\s+(\d+) pass/s\s+(\d+) drop/s", open(sys.argv[1]).read())]
top = max(rows, default=0)
v = [x for x in rows if x > top / 2]
print(f"{statistics.median(v)/1e6:.3f}" if v else "0", end=" ")
PY
  echo "$busy"
}
ours() { # $1 = drop|pass, $2 = lcores; prints "processed delivered" Mpps
  ip netns exec "$a" "$bin" --lcores "$2" --vdev net_af_xdp0,iface=va -- --mode no-touch --cpu 1 \
    --remote-action "$1" --exception tap:kbt0 --interval 0 --metrics off --control off --state-dir off \
    --duration $((secs + 2)) --summary-json "$out" ${extra[@]+"${extra[@]}"} >/dev/null 2>&1 &
  local p=$! t; sleep 1.5
  t=$(grep -lx lcore1 /proc/"$p"/task/*/comm | head -1)
  gen "${t%/comm}/schedstat"; wait "$p" 2>/dev/null || true
  python3 - "$out" "$gen_s" "$busy" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); s = float(sys.argv[2])
print(f"{j['target_processed']/s/1e6:.3f} {j['delivered']/s/1e6:.3f} {sys.argv[3]}")
PY
}
echo "| remote action | peer | processed on the target, Mpps | into the stack, Mpps | target CPU busy | per target core, Mpps | vs kernel (same round) | per core vs kernel |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for _ in $(seq "$rounds"); do
  for act in drop pass; do
    read -r k kb <<<"$(kernel "$act")"
    kd=$([ "$act" = pass ] && echo "$k" || echo 0)
    kc=$(python3 -c "print(f'{$k/$kb:.3f}')")
    echo "| $act | kernel cpumap (xdp-bench) | $k | $kd | $(python3 -c "print(f'{$kb*100:.0f}%')") | $kc | 1.00 | 1.00 |"
    for lc in 0@0,1@1 0@1,1@1; do
      read -r p d b <<<"$(ours "$act" "$lc")"
      python3 - "$act" "$lc" "$p" "$d" "$b" "$k" "$kc" <<'PY'
import sys
act, lc, p, d, b, k, kc = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
c = p / b
r = f"{p / k:.2f}" if k > 0 else "-"
rc = f"{c / kc:.2f}" if kc > 0 else "-"
print(f"| {act} | cpumapd net_af_xdp --lcores {lc} | {p:.3f} | {d:.3f} | {b * 100:.0f}% | {c:.3f} | {r} | {rc} |")
PY
    done
  done
done
