#!/usr/bin/env bash
# GRO into virtio-user: the same TCP segments (two flows in runs of 5,
# 1502-byte frames, replayed from a pcap by DPDK's net_pcap with
# infinite_rx) through one target into virtio-user, whose vhost-user backend
# is dpdk-testpmd (net_vhost, tso=1, rxonly) on the other CPU; gro=on and
# gro=off alternating. Prints segments delivered per second, the packets
# the backend received per second, their mean size and the busy share
# (virtio ring full).
# Needs root, dpdk-testpmd, 512 free 2 MB hugepages and a --features dpdk
# build.   scripts/bench-virtio-gro.sh [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
rounds=${2:-3}
cargo build --release --quiet --features dpdk
bin=target/release/cpumapd
dir=$(mktemp -d)
trap 'rm -rf "$dir"; pkill -f "file-prefix cmvg$$" 2>/dev/null || true' EXIT
python3 - "$dir/tcp.pcap" <<'PY'
import struct, sys
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
src, dst = bytes([10, 9, 0, 1]), bytes([10, 9, 0, 2])
out = [struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1)]
for k in range(2000):
    sport = 40000 + (k // 5) % 2
    pay = bytes([k % 251]) * 1448
    tcp = struct.pack("!HHIIBBHHH", sport, 5201, (1 + k * 1448) & 0xffffffff, 1, 0x50, 0x10, 512, 0, 0)
    ph = src + dst + struct.pack("!BBH", 0, 6, len(tcp) + len(pay))
    c = csum(ph + tcp + pay)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(pay), k & 0xffff, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    fr = bytes([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]) + b"\x08\x00" + ip + tcp + pay
    out.append(struct.pack("<IIII", 0, 0, len(fr), len(fr)) + fr)
open(sys.argv[1], "wb").write(b"".join(out))
PY
echo "| gro | segments delivered/s | backend packets/s | bytes per backend packet | busy % |"
echo "|---|---:|---:|---:|---:|"
n=0
for _ in $(seq "$rounds"); do
  for gro in on off; do
    n=$((n + 1))
    sock="$dir/vhost$n.sock"
    coproc TP { exec dpdk-testpmd --lcores 0@0,1@0 --in-memory --single-file-segments -m 256 --no-pci \
      --file-prefix "cmvg$$tp$n" --log-level 4 --vdev "net_vhost0,iface=$sock,queues=1,tso=1" -- \
      -i --forward-mode=rxonly --auto-start --nb-cores=1 --total-num-mbufs=32768 2>&1; }
    for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
    "$bin" --lcores 0@1,1@1,2@1 --in-memory --single-file-segments -m 256 --no-pci \
      --file-prefix "cmvg$$" --log-level 4 --vdev "net_pcap0,rx_pcap=$dir/tcp.pcap,infinite_rx=1" -- \
      --mode no-touch --cpu 2 --duration "$secs" --interval 0 --metrics off --control off \
      --state-dir off --summary-json "$dir/s.json" --exception "virtio-user:$sock,gro=$gro" >/dev/null 2>&1
    echo "show port stats all" >&"${TP[1]}"; echo "stop" >&"${TP[1]}"; sleep 0.5; echo "quit" >&"${TP[1]}"
    tp=$(cat <&"${TP[0]}" || true)
    wait "$TP_PID" 2>/dev/null || true
    python3 - "$dir/s.json" "$secs" "$gro" "$tp" <<'PY'
import json, re, sys
s = json.load(open(sys.argv[1])); secs = float(sys.argv[2]); tp = sys.argv[4]
t = s["targets"][0]
busy = t["drop_reasons"]["exception_busy"]
nic = tp.split("NIC statistics for port 0")[1]
got = int(re.search(r"RX-packets: *(\d+)", nic).group(1))
nbytes = int(re.search(r"RX-bytes: *(\d+)", nic).group(1))
dur = s["duration_s"]
print("| %s | %.3f M | %.3f M | %.0f | %.1f |" % (sys.argv[3], t["delivered"] / dur / 1e6, got / dur / 1e6,
      nbytes / max(1, got), 100.0 * busy / max(1, busy + t["delivered"])))
PY
  done
done
