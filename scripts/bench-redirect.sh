#!/usr/bin/env bash
# Remote redirect side by side with the kernel's cpumap (xdp-bench's
# `redirect-cpu -r redirect -D b0`): xdp-trafficgen udp (~5 Mpps) pinned to
# CPU 0 in namespace S sends into veth vs -> va; in namespace A the target
# on CPU 1 sends every frame out of b0; its peer b1 in B (GRO on, so a veth
# takes the kernel's XDP frames) counts what arrives. Rows, in turn:
#   kernel cpumap   xdp-bench redirect-cpu -c 1 -p no-touch -r redirect -D b0 va
#   cpumapd         net_af_xdp0 on va, --lcores 0@0,1@1, --remote-action redirect:b0
#   cpumapd + xdp-bench's own cpumap_redirect, unchanged (--jit, --devmap tx_port:0=b0)
# Mpps arriving at b1 during the generator's run, and the ratio to the
# kernel row of the same round. Needs root and xdp-tools 1.6.3:
#   ../shared/xdp-tools/build.sh DIR, then XDPTOOLS=DIR scripts/bench-redirect.sh [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
rounds=${2:-2}
: "${XDPTOOLS:?set XDPTOOLS to a directory built by ../shared/xdp-tools/build.sh}"
bin=${CPUMAPD:-target/release/cpumapd}
[ -n "${CPUMAPD:-}" ] || cargo build --release --quiet
. scripts/lib/netns.sh
s=cmrS$$; a=cmrA$$; b=cmrB$$
trap ns_cleanup EXIT
for ns in "$s" "$a" "$b"; do ns_add "$ns" noipv6; done
ns_veth "$s" vs "$a" va
ns_veth "$a" b0 "$b" b1
ip netns exec "$b" ethtool -K b1 gro on >/dev/null
mac=$(ip netns exec "$a" cat /sys/class/net/va/address)
arrived() { ip netns exec "$b" cat /sys/class/net/b1/statistics/rx_packets; }
gen() { # runs the generator; prints Mpps arriving at b1 meanwhile
  local t0 n0 n1 t1
  n0=$(arrived); t0=$(date +%s.%N)
  ip netns exec "$s" timeout -s INT "$secs" taskset -c 0 "$XDPTOOLS/bin/xdp-trafficgen" udp -m "$mac" -t 1 vs >/dev/null 2>&1 || true
  n1=$(arrived); t1=$(date +%s.%N)
  python3 -c "print(f'{($n1 - $n0) / ($t1 - $t0) / 1e6:.3f}')"
}
kernel() {
  ip netns exec "$a" "$XDPTOOLS/bin/xdp-bench" redirect-cpu -c 1 -p no-touch -r redirect -D b0 va >/dev/null 2>&1 &
  local p=$!; sleep 1.5; gen; kill -INT "$p"; wait "$p" 2>/dev/null || true
}
ours() { # app args...
  ip netns exec "$a" "$bin" --lcores 0@0,1@1 --vdev net_af_xdp0,iface=va -- --mode no-touch --cpu 1 \
    --exception drop --interval 0 --metrics off --control off --state-dir off \
    --duration $((secs + 2)) "$@" >/dev/null 2>&1 &
  local p=$!; sleep 1.5; gen; wait "$p" 2>/dev/null || true
}
obj="$XDPTOOLS/bpf-upstream/xdp_redirect_cpumap.bpf.o"
echo "| peer | Mpps out of b0 | vs kernel (same round) |"
echo "|---|---:|---:|"
for _ in $(seq "$rounds"); do
  k=$(kernel)
  echo "| kernel cpumap (xdp-bench -r redirect -D b0) | $k | 1.00 |"
  for row in "redirect:b0" "bpf"; do
    if [ "$row" = bpf ]; then
      m=$(ours --remote-action "$obj:cpumap_redirect" --devmap tx_port:0=b0 --jit)
      name="cpumapd, xdp-bench's cpumap_redirect (--jit)"
    else
      m=$(ours --remote-action redirect:b0)
      name="cpumapd --remote-action redirect:b0"
    fi
    echo "| $name | $m | $(python3 -c "print(f'{$m/$k:.2f}' if $k > 0 else '-')") |"
  done
done
