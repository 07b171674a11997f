#!/usr/bin/env bash
# TCP into the kernel's stack through a CPU-steering step, side by side on
# one veth pair: iperf3 client in namespace S, server in namespace A.
#   plain            the server's address on the veth, no steering
#   kernel cpumap    xdp-bench redirect-cpu -c 1 -p no-touch -r pass on the veth
#                    (needs XDPTOOLS=DIR from ../shared/xdp-tools/build.sh DIR)
#   cpumapd PORT     cpumapd on the veth (net_af_packet or net_af_xdp),
#                    --exception tap:IF holding the server's address; ACKs go
#                    back over the TAP's reverse path
# each with the sender's offloads on (the default) and off
# (ethtool -K tso off gso off tx off). Prints Gbit/s per row. MTU=9000
# runs it with jumbo frames (the veth pair and the TAP).
# Needs root and iperf3.   scripts/bench-iperf.sh [SECONDS] [ROUNDS] [EXTRA cpumapd app args...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-1}
shift $(($# > 2 ? 2 : $#)) || true
extra=("$@")
bin=${CPUMAPD:-target/release/cpumapd}
[ -n "${CPUMAPD:-}" ] || cargo build --release --quiet
. scripts/lib/netns.sh
s=cmiS$$; a=cmiA$$; vs=viS$$; va=viA$$; tap=tpi$$
trap ns_cleanup EXIT
ns_add "$s"; ns_add "$a"
ns_veth "$s" "$vs" "$a" "$va"
mtu=${MTU:-1500}
ip -n "$s" link set "$vs" mtu "$mtu"; ip -n "$a" link set "$va" mtu "$mtu"
ip -n "$s" addr add 10.77.251.2/24 dev "$vs"
ip netns exec "$a" iperf3 -s -D -1 >/dev/null 2>&1 || true

offloads() { ip netns exec "$s" ethtool -K "$vs" tso "$1" gso "$1" tx "$1" >/dev/null 2>&1; }
client() { # prints Gbit/s of one client run
  ip netns exec "$s" ip neigh flush dev "$vs" >/dev/null 2>&1 || true
  ip netns exec "$s" timeout $((secs + 10)) iperf3 -c 10.77.251.1 -t "$secs" -J 2>/dev/null |
    python3 -c 'import json,sys
try: print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))
except Exception: print("0 (failed)")'
}
server() { ip netns exec "$a" iperf3 -s -1 -D -B 10.77.251.1 >/dev/null 2>&1; sleep 0.3; }

row() { echo "| $1 | $2 | $3 |"; }
echo "| path | sender offloads | Gbit/s |"
echo "|---|---|---:|"
for _ in $(seq "$rounds"); do
  for off in on off; do
    offloads "$off"
    # plain stack
    ip -n "$a" addr add 10.77.251.1/24 dev "$va"
    server; row "plain stack" "$off" "$(client)"
    if [ -n "${XDPTOOLS:-}" ]; then
      ip netns exec "$a" "$XDPTOOLS/bin/xdp-bench" redirect-cpu -c 1 -p no-touch -r pass "$va" >/dev/null 2>&1 &
      xb=$!; sleep 1
      server; row "kernel cpumap (xdp-bench -r pass)" "$off" "$(client)"
      kill -INT "$xb"; wait "$xb" 2>/dev/null || true
    fi
    ip -n "$a" addr del 10.77.251.1/24 dev "$va"
    for port in af_packet af_xdp; do
      ip netns exec "$a" "$bin" --lcores 0@0,1@1 --vdev "net_${port}0,iface=$va" -- \
        --mode no-touch --cpu 1 --exception "tap:$tap" --interval 0 --metrics off \
        --control off --state-dir off ${extra[@]+"${extra[@]}"} >/tmp/bench-iperf-$$.log 2>&1 &
      d=$!
      for _ in $(seq 100); do ip -n "$a" link show "$tap" >/dev/null 2>&1 && break; sleep 0.05; done
      ip -n "$a" link set "$tap" mtu "$mtu"
      ip -n "$a" addr add 10.77.251.1/24 dev "$tap"
      server; row "cpumapd net_$port -> tap" "$off" "$(client)"
      kill -TERM "$d"; wait "$d" 2>/dev/null || true
    done
  done
done
rm -f /tmp/bench-iperf-$$.log
