#!/usr/bin/env bash
# A load test that runs on this machine: drives cpumapd with a real
# generator for a fixed time per step and prints, per step, the offered
# rate, cpumapd's RX rate, what the targets delivered, the drops by reason
# and the p99 ring occupancy (sampled from /metrics every 50 ms).
#
#   scripts/loadtest.sh [--source trafgen|testpmd] [--backend native|dpdk]
#                       [--rates 100k,300k,1M,max] [--secs S] [--mode MODE]
#                       [--targets N] [--qsize N] [--vdev-args K=V,...]
#
#   trafgen  (default; root) netsniff-ng's trafgen sends 64 B UDP, random
#            source ports, from a throwaway namespace over a veth pair at
#            each --rates step (pps; "max" = unpaced). cpumapd reads the
#            other end with its AF_PACKET port (native) or DPDK's
#            net_af_packet (--backend dpdk); --vdev-args appends kvargs
#            to its vdev (ring=v3: the AF_PACKET ring kinds side by side).
#   testpmd  (needs a cpumapd built with --features dpdk) dpdk-testpmd
#            --forward-mode=txonly as the memif server, cpumapd the client.
#            testpmd has no software pacing: one step at its full rate.
#
# cpumapd's lcores: RX on CPU 0 (with the generator), targets on CPU 1.
# Offered = frames the generator's link counted (veth peer RX / testpmd's
# own TX count); cpumapd's rates come from its own counters over the same
# window.
set -euo pipefail
cd "$(dirname "$0")/.."

source=trafgen backend=native rates="100k,300k,1M,max" secs=5 mode=l4-hash targets=1 qsize=2048 vdev_args=
die() { echo "loadtest: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --source) source=$2; shift 2 ;;
        --backend) backend=$2; shift 2 ;;
        --rates) rates=$2; shift 2 ;;
        --secs) secs=$2; shift 2 ;;
        --mode) mode=$2; shift 2 ;;
        --targets) targets=$2; shift 2 ;;
        --qsize) qsize=$2; shift 2 ;;
        --vdev-args) vdev_args=$2; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (--help lists them)" ;;
    esac
done
case "$source" in trafgen|testpmd) ;; *) die "--source '$source': trafgen or testpmd" ;; esac
case "$backend" in native|dpdk) ;; *) die "--backend '$backend': native or dpdk" ;; esac
[[ $secs =~ ^[0-9]+$ ]] && [ "$secs" -ge 1 ] || die "--secs '$secs': whole seconds >= 1"
[[ $targets =~ ^[1-4]$ ]] || die "--targets '$targets': 1 to 4"
[ "$source" = testpmd ] && backend=dpdk
[ "$(id -u)" = 0 ] || die "needs root (namespaces, veth, AF_PACKET, memif sockets)"

features=()
[ "$backend" = dpdk ] && features=(--features dpdk)
cargo build --release --quiet "${features[@]}"
bin=target/release/cpumapd
work=$(mktemp -d)
gen=cmlG$$ dut=cmlD$$ vg=vlG$$ vd=vlD$$
cleanup() {
    [ -n "${cm_pid:-}" ] && kill "$cm_pid" 2>/dev/null || true
    [ -n "${gen_pid:-}" ] && { kill -INT -- -"$gen_pid" || kill "$gen_pid"; } 2>/dev/null || true
    ip netns del "$gen" 2>/dev/null || true
    ip netns del "$dut" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Target lcores 1..N on CPU 1; lcore 0 (RX, or the DPDK main lcore beside
# the RX lcore) on CPU 0.
cpus=$(seq -s, 1 "$targets")
if [ "$backend" = dpdk ]; then
    lcores="0@0,1@0$(for t in $(seq 2 $((targets + 1))); do printf ',%s@1' "$t"; done)"
    cpus=$(seq -s, 2 $((targets + 1)))
    eal=(--lcores "$lcores" --no-huge -m 512 --no-shconf --no-pci --file-prefix "cml$$" --log-level 4)
else
    lcores="0@0$(for t in $(seq 1 "$targets"); do printf ',%s@1' "$t"; done)"
    eal=(--lcores "$lcores")
fi
app=(-- --mode "$mode" --cpu "$cpus" --qsize "$qsize" --remote-action drop --interval 0
     --control off --metrics 127.0.0.1:9419 --summary-json "$work/summary.json")

# Samples /metrics: counters at the start and end of the window, ring
# occupancy (sum over targets) every 50 ms in between; prints one row.
#   sampler.py SECS OFFERED_CMD|device LABEL
cat > "$work/sampler.py" <<'PY'
import re, subprocess, sys, time, urllib.request
secs, offered_cmd, label = float(sys.argv[1]), sys.argv[2], sys.argv[3]
def scrape():
    for _ in range(100):
        try:
            return urllib.request.urlopen("http://127.0.0.1:9419/metrics", timeout=1).read().decode()
        except OSError:
            time.sleep(0.1)
    sys.exit("loadtest: cpumapd's /metrics did not answer")
def series(text):
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r'([a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+)$', line)
        if m:
            out.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(3))))
    return out
def total(s, name, where=""):
    return sum(v for labels, v in s.get(name, []) if where in labels)
def offered():
    if offered_cmd == "device":
        # The DPDK port's own RX count (what the memif peer handed over).
        return total(series(scrape()), "cpumapd_device_packets_total", 'direction="rx"')
    return int(subprocess.check_output(offered_cmd, shell=True).split()[0])
time.sleep(1.0)   # warm-up: the generator reaches its rate
a, oa, ta = series(scrape()), offered(), time.monotonic()
ring = []
while time.monotonic() - ta < secs:
    time.sleep(0.05)
    ring.append(total(series(scrape()), "cpumapd_ring_entries"))
b, ob, tb = series(scrape()), offered(), time.monotonic()
dt = tb - ta
d = lambda name, where="": (total(b, name, where) - total(a, name, where)) / dt
ring.sort()
p99 = ring[min(len(ring) - 1, int(0.99 * len(ring)))] if ring else 0
cap = total(b, "cpumapd_ring_capacity")
drops = {
    "missed": d("cpumapd_port_rx_dropped_total", 'reason="missed"') + d("cpumapd_device_dropped_total", 'reason="imissed"'),
    "nombuf": d("cpumapd_port_rx_dropped_total", 'reason="nombuf"') + d("cpumapd_device_dropped_total", 'reason="rx_nombuf"'),
    "filter": d("cpumapd_verdict_total", 'action="drop"') + d("cpumapd_verdict_total", 'action="aborted"'),
    "ring_full": d("cpumapd_enqueue_drops_total"),
    "target": d("cpumapd_target_drops_total") - d("cpumapd_target_drops_total", 'reason="remote_drop"'),
}
delivered = d("cpumapd_target_packets_total")
k = lambda x: f"{x / 1e3:,.1f}"
print(f"| {label} | {k((ob - oa) / dt)} | {k(d('cpumapd_rx_packets_total'))} | {k(delivered)} | "
      + " | ".join(k(drops[r]) for r in ("missed", "nombuf", "filter", "ring_full", "target"))
      + f" | {p99:.0f} / {cap:.0f} |")
PY

echo "cpumapd load test: source $source, backend $backend, mode $mode, $targets target(s), qsize $qsize, ${secs} s per step"
echo "(kpps; 'delivered' = frames the targets processed; the remote program drops them, as xdp-bench -r drop)"
echo
echo "| step | offered | cpumapd rx | delivered | drop: missed | nombuf | filter | ring full | target | p99 ring occupancy |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"

if [ "$source" = trafgen ]; then
    command -v trafgen >/dev/null || die "trafgen not found (apt-get install netsniff-ng)"
    ip netns add "$gen"; ip netns add "$dut"
    ip link add "$vg" netns "$gen" type veth peer name "$vd" netns "$dut"
    ip -n "$gen" link set "$vg" up; ip -n "$dut" link set "$vd" up; ip -n "$dut" link set lo up
    cat > "$work/udp.cfg" <<'TG'
{ eth(da=02:00:00:00:00:01, sa=02:00:00:00:00:02, type=0x0800), ipv4(saddr=10.77.251.2, daddr=10.77.251.1, ttl=64, proto=17), udp(sp=drnd(), dp=5001), fill(0x41, 18) }
TG
    # The same vdev string for both backends: cpumapd's own AF_PACKET port
    # natively, DPDK's net_af_packet with --backend dpdk.
    port=(--vdev "net_af_packet0,iface=$vd${vdev_args:+,$vdev_args}")
    IFS=, read -r -a steps <<<"$rates"
    for r in "${steps[@]}"; do
        case "$r" in
            max) pace=() ;;
            *[kK]) pace=(-b "$(( ${r%[kK]} * 1000 ))pps") ;;
            *[mM]) pace=(-b "$(( ${r%[mM]} * 1000000 ))pps") ;;
            *) [[ $r =~ ^[0-9]+$ ]] || die "--rates step '$r': N, Nk, NM or max"; pace=(-b "${r}pps") ;;
        esac
        ip netns exec "$dut" "$bin" "${eal[@]}" "${port[@]}" "${app[@]}" >"$work/cpumapd.log" 2>&1 &
        cm_pid=$!
        sleep 1
        ip netns exec "$gen" setsid taskset -c 0 trafgen --dev "$vg" --conf "$work/udp.cfg" -q --cpus 1 "${pace[@]}" >/dev/null 2>&1 &
        gen_pid=$!
        ip netns exec "$dut" python3 "$work/sampler.py" "$secs" "cat /sys/class/net/$vd/statistics/rx_packets" "$r" \
            || { cat "$work/cpumapd.log"; die "step $r failed"; }
        # trafgen stops on ^C, i.e. SIGINT to its process group (its
        # workers are children); setsid gave it a group of its own.
        kill -INT -- -"$gen_pid" 2>/dev/null || true; wait "$gen_pid" 2>/dev/null || true; gen_pid=
        kill -TERM "$cm_pid"; wait "$cm_pid" || { cat "$work/cpumapd.log"; die "cpumapd exited non-zero (identity or shutdown)"; }
        cm_pid=
    done
else
    command -v dpdk-testpmd >/dev/null || die "dpdk-testpmd not found (apt-get install dpdk)"
    sock="$work/memif.sock"
    mkfifo "$work/tp.in"
    dpdk-testpmd --lcores 0@0,1@0 --no-huge -m 256 --no-shconf --no-pci --file-prefix "cmlt$$" --log-level 4 \
        --vdev "net_memif0,role=server,socket=$sock,socket-abstract=no" -- -i --forward-mode=txonly \
        --txonly-multi-flow --auto-start --nb-cores=1 --total-num-mbufs=8192 <"$work/tp.in" >"$work/testpmd.log" 2>&1 &
    gen_pid=$!
    exec 3>"$work/tp.in"
    sleep 2
    "$bin" "${eal[@]}" --vdev "net_memif0,role=client,socket=$sock,socket-abstract=no" "${app[@]}" >"$work/cpumapd.log" 2>&1 &
    cm_pid=$!
    sleep 1
    # Offered: what the memif port received (testpmd's attempts beyond a
    # full memif ring fail on its side and are not seen here).
    python3 "$work/sampler.py" "$secs" device max
    kill -TERM "$cm_pid"; wait "$cm_pid" || { cat "$work/cpumapd.log"; die "cpumapd exited non-zero"; }
    cm_pid=
    echo "stop" >&3; echo "quit" >&3; exec 3>&-
    wait "$gen_pid" 2>/dev/null || true; gen_pid=
fi
echo
python3 - "$work/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
ok = (s["rx"] == s["pass"] + s["drop"] + s["tx"] + s["redirect"] + s["aborted"]
      and s["redirect"] == s["enqueued"] + s["enqueue_drops"] and s["in_flight"] == 0
      and s["enqueued"] == s["target_processed"] and s["pool_in_use"] == 0)
print(f"last step's summary: rx {s['rx']} redirect {s['redirect']} enqueue_drops {s['enqueue_drops']} "
      f"target_processed {s['target_processed']} imissed {s['imissed']}; accounting identity {'holds' if ok else 'VIOLATED'}")
sys.exit(0 if ok else 1)
PY
