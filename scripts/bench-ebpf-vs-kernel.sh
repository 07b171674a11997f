#!/usr/bin/env bash
# Per-packet cost of xdp-bench's own redirect-cpu programs (xdp-tools 1.6.3)
# in cpumapd (interpreter, JIT) beside the kernel's JIT on the same object
# and the same 64-byte IPv4/UDP frame: BPF_PROG_TEST_RUN with repeat
# (bpftool prog run, on CPU 0) against examples/ebpf_cost.rs (one lcore,
# same repeat). Same run, ROUNDS rounds; prints ns per run and ratios.
# Needs root, bpftool, a bpffs and XDPTOOLS=DIR (../shared/xdp-tools/build.sh DIR).
#   XDPTOOLS=DIR scripts/bench-ebpf-vs-kernel.sh [REPEAT] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
repeat=${1:-1000000}
rounds=${2:-1}
obj="${XDPTOOLS:?XDPTOOLS=DIR (../shared/xdp-tools/build.sh DIR)}/bpf-upstream/xdp_redirect_cpumap.bpf.o"
cargo build --release --quiet --example ebpf_cost
cost=target/release/examples/ebpf_cost
grep -q " /sys/fs/bpf bpf " /proc/mounts || mount -t bpf bpf /sys/fs/bpf
tmp=$(mktemp -d)
pin=/sys/fs/bpf/cpmdbench$$
cleanup() { rm -rf "$pin" "${pin}_m" "${pin}_pre" "$tmp"; }
trap cleanup EXIT
# nr_cpus as xdp-bench sets it, in the kernel's copy of the object.
python3 - "$obj" "$tmp/obj.o" <<'PY'
import sys, struct
# Patch .rodata's nr_cpus (first symbol of .rodata in this object is found
# by name through the ELF symbol table).
data = bytearray(open(sys.argv[1], 'rb').read())
shoff, = struct.unpack_from('<Q', data, 0x28); shentsize, shnum, shstrndx = struct.unpack_from('<HHH', data, 0x3a)
secs = [struct.unpack_from('<IIQQQQIIQQ', data, shoff + i * shentsize) for i in range(shnum)]
def name(off, tab): s = secs[tab][4] + off; return data[s:data.index(0, s)].decode()
rodata = [i for i, s in enumerate(secs) if name(s[0], shstrndx) == '.rodata'][0]
symtab = [s for s in secs if s[1] == 2][0]
for j in range(symtab[5] // 24):
    st_name, info, other, shndx, value, size = struct.unpack_from('<IBBHQQ', data, symtab[4] + j * 24)
    if shndx == rodata and name(st_name, symtab[6]) == 'nr_cpus':
        struct.pack_into('<i', data, secs[rodata][4] + value, 2)
open(sys.argv[2], 'wb').write(data)
PY
# Maps a tool's loader sizes (no max_entries in the object), made first
# (struct datarec is 64 bytes).
mkdir -p "${pin}_m" "${pin}_pre"
maps=()
bpftool map create "${pin}_pre/cpu_map" type cpumap key 4 value 8 entries 2 name cpu_map
maps+=(map name cpu_map pinned "${pin}_pre/cpu_map")
bpftool map create "${pin}_pre/cpus_available" type array key 4 value 4 entries 2 name cpus_available
maps+=(map name cpus_available pinned "${pin}_pre/cpus_available")
for m in rx_cnt redir_err_cnt cpumap_enqueue_cnt cpumap_kthread_cnt exception_cnt devmap_xmit_cnt rxq_cnt; do
  bpftool map create "${pin}_pre/$m" type array key 4 value 64 entries 2 name "$m" flags 1024
  maps+=(map name "$m" pinned "${pin}_pre/$m")
done
bpftool prog loadall "$tmp/obj.o" "$pin" "${maps[@]}" pinmaps "${pin}_m"
for i in 0 1; do
  bpftool map update pinned "${pin}_pre/cpus_available" key $i 0 0 0 value $i 0 0 0
  bpftool map update pinned "${pin}_pre/cpu_map" key $i 0 0 0 value 0 8 0 0 0 0 0 0
done
bpftool map update pinned "${pin}_m/cpus_count" key 0 0 0 0 value 2 0 0 0
python3 -c "
import struct
f = bytes.fromhex('020202020202040404040404' '0800' '4500002e00004000401100000a0000010a000002' '04d20035001a0000') + bytes(18)
open('$tmp/frame', 'wb').write(f)"
echo "| program | kernel JIT ns | cpumapd JIT ns | cpumapd interp ns | JIT / kernel |"
echo "|---|---:|---:|---:|---:|"
for _ in $(seq "$rounds"); do
  for p in cpumap_no_touch cpumap_touch_data cpumap_round_robin cpumap_l4_proto cpumap_l4_filter cpumap_l4_hash cpumap_l4_sport cpumap_l4_dport; do
    k=$(taskset -c 0 bpftool -j prog run pinned "$pin/$p" data_in "$tmp/frame" repeat "$repeat" | python3 -c 'import json,sys; print(json.load(sys.stdin)["duration"])')
    read -r _ interp _ jit < <(taskset -c 0 "$cost" "$obj:$p" "$tmp/frame" "$repeat" nr_cpus=2 2>/dev/null)
    python3 -c "print('| $p | $k | $jit | $interp | %.2f |' % ($jit / max($k, 0.1)))"
  done
done
# Tail calls: bpf/lb.c's lb_chain runs, then tail-calls itself 33 times (the
# kernel's limit) on every run: 34 programs and 33 tail calls per run.
if make -s -C bpf lb.o >/dev/null 2>&1; then
  lb="$pin"_lb
  mkdir -p "${lb}_m"
  bpftool prog loadall bpf/lb.o "$lb" pinmaps "${lb}_m"
  bpftool map update pinned "${lb}_m/chain_table" key 0 0 0 0 value pinned "$lb/lb_chain"
  for _ in $(seq "$rounds"); do
    k=$(taskset -c 0 bpftool -j prog run pinned "$lb/lb_chain" data_in "$tmp/frame" repeat "$repeat" | python3 -c 'import json,sys; print(json.load(sys.stdin)["duration"])')
    read -r _ interp _ jit < <(taskset -c 0 "$cost" bpf/lb.o:lb_chain "$tmp/frame" "$repeat" chain_table:0=lb_chain 2>/dev/null)
    python3 -c "print('| lb_chain (34 programs, 33 tail calls) | $k | $jit | $interp | %.2f |' % ($jit / max($k, 0.1)))"
  done
  rm -rf "$lb" "${lb}_m"
fi
# bpf-to-bpf calls and bpf_loop: bpf/calls.c's classifier (the kernel calls
# its functions; cpumapd inlines them). The frame goes to a target by hash
# through five calls and a 21-iteration bpf_loop.
if make -s -C bpf calls.o >/dev/null 2>&1; then
  cl="$pin"_calls
  mkdir -p "${cl}_m"
  bpftool prog loadall bpf/calls.o "$cl" pinmaps "${cl}_m"
  for i in 0 1; do
    bpftool map update pinned "${cl}_m/cpus_available" key $i 0 0 0 value $i 0 0 0
  done
  bpftool map update pinned "${cl}_m/cpus_count" key 0 0 0 0 value 2 0 0 0
  for _ in $(seq "$rounds"); do
    k=$(taskset -c 0 bpftool -j prog run pinned "$cl/calls" data_in "$tmp/frame" repeat "$repeat" | python3 -c 'import json,sys; print(json.load(sys.stdin)["duration"])')
    read -r _ interp _ jit < <(taskset -c 0 "$cost" bpf/calls.o:calls "$tmp/frame" "$repeat" 2>/dev/null)
    python3 -c "print('| calls (5 calls, bpf_loop x21) | $k | $jit | $interp | %.2f |' % ($jit / max($k, 0.1)))"
  done
  rm -rf "$cl" "${cl}_m"
fi
