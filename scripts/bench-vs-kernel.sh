#!/usr/bin/env bash
# Side by side with the kernel's own cpumap: the same veth, the same
# generator (trafgen at full rate from another namespace, pinned to CPU 0),
# the same program (no-touch to CPU/lcore 1, drop there). Reports frames
# offered (veth tx), frames processed on the target, and the ratio, for:
#   kernel  examples/kernel_cpumap.rs: XDP redirect into a CPUMAP entry whose
#           program counts and drops (xdp-bench -p no-touch -r drop)
#   cpumapd net_af_xdp0 on the veth, --mode no-touch --remote-action drop
#   cpumapd net_af_packet0 on the same veth, same flags
# Needs root and trafgen (netsniff-ng).   scripts/bench-vs-kernel.sh [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
rounds=${2:-2}
cargo build --release --quiet --example kernel_cpumap
cargo build --release --quiet
s=cmbS$$; a=cmbA$$; vs=vbS$$; va=vbA$$
ip netns add "$s"; ip netns add "$a"
trap 'ip netns del "$s"; ip netns del "$a"' EXIT
ip link add "$vs" netns "$s" type veth peer name "$va" netns "$a"
ip -n "$s" link set "$vs" up; ip -n "$a" link set "$va" up
conf=$(mktemp); out=$(mktemp)
cat > "$conf" <<'TG'
{ eth(da=02:00:00:00:00:01, sa=02:00:00:00:00:02, type=0x0800), ipv4(saddr=10.77.250.2, daddr=10.77.250.1, ttl=64, proto=17), udp(sp=drnd(), dp=9), fill(0x41, 18) }
TG
txp() { ip netns exec "$s" cat "/sys/class/net/$vs/statistics/tx_packets"; }
run() { # $1 = name, rest = command run in namespace A for $secs seconds
  local name=$1; shift
  ip netns exec "$s" timeout -s INT $((${secs%.*} + 2)) taskset -c 0 trafgen --dev "$vs" --conf "$conf" -q --cpus 1 >/dev/null 2>&1 &
  local tg=$!
  sleep 0.5
  local t0; t0=$(txp)
  ip netns exec "$a" "$@" > "$out"
  local t1; t1=$(txp)
  wait "$tg" 2>/dev/null || true
  python3 - "$name" "$out" "$t0" "$t1" "$secs" <<'PY'
import json, sys
name, path, t0, t1, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
j = json.load(open(path))
if "pps" in j:
    proc, dt = j["processed"], j["seconds"]
else:
    proc, dt = j["target_processed"], j["duration_s"]
offered = (t1 - t0) / dt
print(f"| {name} | {offered/1e6:.3f} | {proc/dt/1e6:.3f} | {proc/dt/offered:.2f} |")
PY
}
echo "| peer | offered Mpps (veth tx) | processed on target Mpps | processed/offered |"
echo "|---|---:|---:|---:|"
app=(-- --mode no-touch --cpu 1 --remote-action drop --interval 0 --metrics off --control off --duration "$secs" --summary-json -)
for _ in $(seq "$rounds"); do
  run "kernel cpumap (XDP native)" target/release/examples/kernel_cpumap "$va" "$secs" 1
  run "cpumapd net_af_xdp" target/release/cpumapd --lcores 0@0,1@1 --vdev "net_af_xdp0,iface=$va" "${app[@]}"
  run "cpumapd net_af_packet" target/release/cpumapd --lcores 0@0,1@1 --vdev "net_af_packet0,iface=$va" "${app[@]}"
done
rm -f "$conf" "$out"
