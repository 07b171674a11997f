#!/usr/bin/env bash
# Runs benches/ring.rs and prints ns/element per ring and bulk size, with the
# ratio of crossbeam-channel to our MPSC ring (same run), and with
# FEATURES=dpdk the cost of our MPSC ring relative to DPDK's rte_ring.
#   [FEATURES=dpdk] scripts/bench-ring.sh [MEASUREMENT_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
cargo bench ${FEATURES:+--features "$FEATURES"} --bench ring -- --warm-up-time 1 --measurement-time "${1:-4}" 2>/dev/null | grep -E "^ring_cross|time:" >"$raw"
python3 - "$raw" <<'PY'
import re, sys
res, name = {}, None
for l in open(sys.argv[1]):
    m = re.match(r'^ring_cross_thread/(\S+)/(\d+)', l)
    if m:
        name = (m.group(1), int(m.group(2)))
    t = re.search(r'time:\s+\[\S+ \S+ (\S+) (\S+)', l)
    if t and name:
        v = float(t.group(1))
        res[name] = v / 1000 if t.group(2) == 'ps' else v
        name = None
impls = ['cpumapd_mpsc', 'cpumapd_spsc', 'crossbeam_channel', 'crossbeam_arrayqueue', 'rtrb']
dpdk = any(k[0] == 'dpdk_rte_ring_mp_sc' for k in res)
if dpdk:
    impls.append('dpdk_rte_ring_mp_sc')
extra = " | mpsc / rte_ring" if dpdk else ""
print("| bulk | " + " | ".join(impls) + " | channel / mpsc" + extra + " |")
print("|---:|" + "---:|" * (len(impls) + 1 + dpdk))
for b in [1, 8, 32]:
    row = [f"{res.get((i, b), float('nan')):.2f}" for i in impls]
    tail = f" | {res[('crossbeam_channel', b)] / res[('cpumapd_mpsc', b)]:.2f}x"
    if dpdk:
        tail += f" | {res[('cpumapd_mpsc', b)] / res[('dpdk_rte_ring_mp_sc', b)]:.2f}x"
    print(f"| {b} | " + " | ".join(row) + tail + " |")
PY
