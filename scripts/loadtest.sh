#!/usr/bin/env bash
# A load test that runs on this machine: drives cpumapd with a real
# generator and reports, per step, the offered rate, cpumapd's RX rate,
# what the targets delivered, the drops by reason, the p99 ring occupancy
# and cpumapd's CPU, as a table on stdout and as OUT/loadtest.{md,json,png}.
#
#   scripts/loadtest.sh [--source trafgen|testpmd|pktgen|trex]
#                       [--backend native|dpdk] [--rates R,R,...] [--secs S]
#                       [--mode MODE] [--mixes M,M,...] [--targets N]
#                       [--qsize N] [--vdev-args K=V,...] [--count N]
#                       [--out DIR]
#
#   trafgen  (default; root) netsniff-ng's trafgen sends 64 B UDP, random
#            source ports, from a throwaway namespace over a veth pair at
#            each --rates step (pps: 100k, 1M, max = unpaced). cpumapd
#            reads the other end with its AF_PACKET port (native) or DPDK's
#            net_af_packet (--backend dpdk); --vdev-args appends kvargs to
#            its vdev (ring=v3: the AF_PACKET ring kinds side by side).
#   testpmd  (cpumapd built with --features dpdk) dpdk-testpmd
#            --forward-mode=txonly as the memif server, cpumapd the client.
#            testpmd has no software pacing: one step at its full rate.
#   pktgen   (--features dpdk) pktgen-dpdk as the memif server running
#            deploy/loadtest/pktgen/cpumapd.lua for each of --mixes (udp64,
#            tcpudp, imix, ddos) at each --rates step (percent of the memif
#            link's 100 Gb/s), cpumapd's DPDK build the client, all of its
#            lcores on CPU 1. After each step the script's hook checks
#            pktgen's counters against cpumapd's, exactly: rx + imissed =
#            opackets, bytes = obytes, and what the mix means for the mode
#            (ddos: the flood dropped by l4-filter; tcpudp: l4-proto's split).
#            pktgen: $PKTGEN, else `pktgen` on PATH, else
#            $CPUMAPD_CACHE/pktgen/bin/pktgen (build it with pktgen-dpdk's
#            sources; CI uses the shared build script).
#   trex     TRex's stateless simulator (stl-sim; $TREX_SCRIPTS, else
#            $CPUMAPD_CACHE/trex/trex-core-3.0.8/scripts) compiles
#            deploy/loadtest/trex/cpumapd.py for each mix and writes the
#            first --count frames TRex would send; cpumapd replays them
#            (net_pcap; --backend dpdk: DPDK's net_pcap) and every frame's
#            fate is checked against the profile and the pcap. The TRex
#            server cannot run here (no NIC, not packaged).
#
# CPUMAPD_CACHE defaults to /var/cache/cpumapd. The script exits non-zero
# when a check or cpumapd's accounting identity at exit fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. scripts/lib/netns.sh

source=trafgen backend=native rates= secs=5 mode= mixes= targets= qsize=2048 vdev_args= count=4800 out=target/loadtest
die() { echo "loadtest: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --source) source=$2; shift 2 ;;
        --backend) backend=$2; shift 2 ;;
        --rates) rates=$2; shift 2 ;;
        --secs) secs=$2; shift 2 ;;
        --mode) mode=$2; shift 2 ;;
        --mixes) mixes=$2; shift 2 ;;
        --targets) targets=$2; shift 2 ;;
        --qsize) qsize=$2; shift 2 ;;
        --vdev-args) vdev_args=$2; shift 2 ;;
        --count) count=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (--help lists them)" ;;
    esac
done
case "$source" in trafgen|testpmd|pktgen|trex) ;; *) die "--source '$source': trafgen, testpmd, pktgen or trex" ;; esac
case "$backend" in native|dpdk) ;; *) die "--backend '$backend': native or dpdk" ;; esac
[[ $secs =~ ^[0-9]+$ ]] && [ "$secs" -ge 1 ] || die "--secs '$secs': whole seconds >= 1"
[[ $count =~ ^[0-9]+$ ]] && [ "$count" -ge 16 ] || die "--count '$count': frames >= 16"
case "$source" in
    trafgen) rates=${rates:-100k,300k,1M,max}; mixes=${mixes:-udp64}; targets=${targets:-1} ;;
    testpmd) rates=${rates:-max}; mixes=${mixes:-udp64}; targets=${targets:-1}; backend=dpdk ;;
    pktgen) rates=${rates:-1,100}; mixes=${mixes:-udp64,tcpudp,imix,ddos}; targets=${targets:-2}; backend=dpdk ;;
    trex) rates=pcap; mixes=${mixes:-udp64,tcpudp,imix,ddos}; targets=${targets:-2} ;;
esac
[[ $targets =~ ^[1-4]$ ]] || die "--targets '$targets': 1 to 4"
IFS=, read -r -a mix_list <<<"$mixes"
for m in "${mix_list[@]}"; do
    case "$m" in udp64|tcpudp|imix|ddos) ;; *) die "--mixes: '$m' is not udp64, tcpudp, imix or ddos" ;; esac
    [ "$source" != trafgen ] && [ "$source" != testpmd ] || [ "$m" = udp64 ] || die "--source $source sends udp64 only"
done
# The mode each mix is about, unless --mode says otherwise.
mode_of() {
    if [ -n "$mode" ]; then echo "$mode"; return; fi
    case "$1" in tcpudp) echo l4-proto ;; ddos) echo l4-filter ;; *) echo l4-hash ;; esac
}
[ "$(id -u)" = 0 ] || die "needs root (namespaces, veth, AF_PACKET, memif sockets)"
cache=${CPUMAPD_CACHE:-/var/cache/cpumapd}
py=python3
[ -x /usr/bin/python3 ] && py=/usr/bin/python3   # Debian's, with matplotlib
"$py" -c "import matplotlib" 2>/dev/null || die "the report's chart needs matplotlib (apt-get install python3-matplotlib)"
case "$source" in
    pktgen)
        pktgen=${PKTGEN:-$(command -v pktgen || echo "$cache/pktgen/bin/pktgen")}
        [ -x "$pktgen" ] || die "pktgen not found (\$PKTGEN, PATH, $cache/pktgen/bin/pktgen)" ;;
    trex)
        trex=${TREX_SCRIPTS:-$cache/trex/trex-core-3.0.8/scripts}
        [ -x "$trex/stl-sim" ] || die "TRex's stl-sim not found in $trex (\$TREX_SCRIPTS)" ;;
esac

features=()
[ "$backend" = dpdk ] && features=(--features dpdk)
cargo build --release --quiet "${features[@]}"
bin=$root/target/release/cpumapd
work=$(mktemp -d)
rows=$work/rows.jsonl
gen=cmlG$$ dut=cmlD$$ vg=vlG$$ vd=vlD$$
cleanup() {
    [ -n "${cm_pid:-}" ] && kill "$cm_pid" 2>/dev/null || true
    [ -n "${gen_pid:-}" ] && { kill -INT -- -"$gen_pid" || kill "$gen_pid"; } 2>/dev/null || true
    [ -n "${sampler:-}" ] && kill "$sampler" 2>/dev/null || true
    ns_cleanup
    [ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $work" || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Target lcores on CPU 1. Native: lcore 0 (RX) on CPU 0, with the generator.
# DPDK: the main lcore 0 and the RX lcore 1 on CPU 0 for trafgen/testpmd;
# for pktgen (which spins on CPU 0) every cpumapd lcore is on CPU 1, so the
# RX lcore must yield to the targets it shares that CPU with.
rx_cpu=0
[ "$source" = pktgen ] && rx_cpu=1
if [ "$backend" = dpdk ]; then
    lcores="0@$rx_cpu,1@$rx_cpu$(for t in $(seq 2 $((targets + 1))); do printf ',%s@1' "$t"; done)"
    cpus=$(seq -s, 2 $((targets + 1)))
    eal=(--lcores "$lcores" --no-huge -m 512 --no-shconf --no-pci --file-prefix "cml$$" --log-level 4)
else
    lcores="0@0$(for t in $(seq 1 "$targets"); do printf ',%s@1' "$t"; done)"
    cpus=$(seq -s, 1 "$targets")
    eal=(--lcores "$lcores")
fi
app() {
    printf '%s\n' -- --mode "$1" --cpu "$cpus" --qsize "$qsize" --remote-action drop --interval 0 \
        --control off --metrics 127.0.0.1:9419 --summary-json "$work/summary.json"
}
# cpumapd's accounting identity at exit, from its summary.
identity() {
    "$py" - "$work/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
ok = (s["rx"] == s["pass"] + s["drop"] + s["tx"] + s["redirect"] + s["aborted"]
      and s["redirect"] == s["enqueued"] + s["enqueue_drops"] and s["in_flight"] == 0
      and s["enqueued"] == s["target_processed"] and s["pool_in_use"] == 0)
print(f"  summary: rx {s['rx']} redirect {s['redirect']} enqueue_drops {s['enqueue_drops']} "
      f"target_processed {s['target_processed']} imissed {s['imissed']}; accounting identity {'holds' if ok else 'VIOLATED'}")
sys.exit(0 if ok else 1)
PY
}
stop_cpumapd() {
    kill -TERM "$cm_pid"; wait "$cm_pid" || { cat "$work/cpumapd.log"; die "cpumapd exited non-zero (identity or shutdown)"; }
    cm_pid=
    identity || die "accounting identity violated"
}

echo "cpumapd load test: source $source, backend $backend, $targets target(s), qsize $qsize"
echo "(kpps; 'delivered' = frames the targets processed; the remote program drops them, as xdp-bench -r drop)"
echo
echo "| step | offered | cpumapd rx | delivered | drop: missed | nombuf | filter | ring full | target | p99 ring occupancy | CPU | checks |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"

failed=0
case "$source" in
trafgen)
    command -v trafgen >/dev/null || die "trafgen not found (apt-get install netsniff-ng)"
    ns_add "$gen"; ns_add "$dut"
    ns_veth "$gen" "$vg" "$dut" "$vd"
    cat > "$work/udp.cfg" <<'TG'
{ eth(da=02:00:00:00:00:01, sa=02:00:00:00:00:02, type=0x0800), ipv4(saddr=10.77.251.2, daddr=10.77.251.1, ttl=64, proto=17), udp(sp=drnd(), dp=5001), fill(0x41, 18) }
TG
    # The same vdev string for both backends: cpumapd's own AF_PACKET port
    # natively, DPDK's net_af_packet with --backend dpdk.
    port=(--vdev "net_af_packet0,iface=$vd${vdev_args:+,$vdev_args}")
    m=$(mode_of udp64)
    IFS=, read -r -a steps <<<"$rates"
    for r in "${steps[@]}"; do
        case "$r" in
            max) pace=() ;;
            *[kK]) pace=(-b "$(( ${r%[kK]} * 1000 ))pps") ;;
            *[mM]) pace=(-b "$(( ${r%[mM]} * 1000000 ))pps") ;;
            *) [[ $r =~ ^[0-9]+$ ]] || die "--rates step '$r': N, Nk, NM or max"; pace=(-b "${r}pps") ;;
        esac
        mapfile -t a < <(app "$m")
        ip netns exec "$dut" "$bin" "${eal[@]}" "${port[@]}" "${a[@]}" >"$work/cpumapd.log" 2>&1 &
        cm_pid=$!
        sleep 1
        ip netns exec "$gen" setsid taskset -c 0 trafgen --dev "$vg" --conf "$work/udp.cfg" -q --cpus 1 "${pace[@]}" >/dev/null 2>&1 &
        gen_pid=$!
        CPUMAPD_PID=$cm_pid ip netns exec "$dut" "$py" scripts/loadtest.py window "$secs" \
            "cat /sys/class/net/$vd/statistics/rx_packets" trafgen udp64 "$m" "$r" "$rows" \
            || { cat "$work/cpumapd.log"; die "step $r failed"; }
        # trafgen stops on ^C, i.e. SIGINT to its process group (its
        # workers are children); setsid gave it a group of its own.
        kill -INT -- -"$gen_pid" 2>/dev/null || true; wait "$gen_pid" 2>/dev/null || true; gen_pid=
        stop_cpumapd
    done
    ;;
testpmd)
    command -v dpdk-testpmd >/dev/null || die "dpdk-testpmd not found (apt-get install dpdk)"
    sock="$work/memif.sock"
    mkfifo "$work/tp.in"
    dpdk-testpmd --lcores 0@0,1@0 --no-huge -m 256 --no-shconf --no-pci --file-prefix "cmlt$$" --log-level 4 \
        --vdev "net_memif0,role=server,socket=$sock,socket-abstract=no" -- -i --forward-mode=txonly \
        --txonly-multi-flow --auto-start --nb-cores=1 --total-num-mbufs=8192 <"$work/tp.in" >"$work/testpmd.log" 2>&1 &
    gen_pid=$!
    exec 3>"$work/tp.in"
    sleep 2
    m=$(mode_of udp64)
    mapfile -t a < <(app "$m")
    "$bin" "${eal[@]}" --vdev "net_memif0,role=client,socket=$sock,socket-abstract=no" "${a[@]}" >"$work/cpumapd.log" 2>&1 &
    cm_pid=$!
    sleep 1
    # Offered: what the memif port received (testpmd's attempts beyond a
    # full memif ring fail on its side and are not seen here).
    CPUMAPD_PID=$cm_pid "$py" scripts/loadtest.py window "$secs" device testpmd udp64 "$m" max "$rows"
    stop_cpumapd
    echo "stop" >&3; echo "quit" >&3; exec 3>&-
    wait "$gen_pid" 2>/dev/null || true; gen_pid=
    ;;
pktgen)
    for mix in "${mix_list[@]}"; do
        m=$(mode_of "$mix")
        sock="$work/memif.sock" state="$work/state-$mix"
        rm -f "$sock"; mkdir -p "$state"
        IFS=, read -r -a steps <<<"$rates"
        limit=$(( ${#steps[@]} * (secs + 15) + 60 ))
        # pktgen's own script, unattended: it waits for the link, runs the
        # steps, calls the hook around each and quits (exit 1 on failure).
        CPUMAPD_MIX=$mix CPUMAPD_RATES=$rates CPUMAPD_STEP_MS=$((secs * 1000)) \
        CPUMAPD_STEP_HOOK="$py $root/scripts/loadtest.py hook $state" \
            setsid timeout "$limit" "$pktgen" --lcores 0@0,1@0 --no-huge -m 3072 --no-pci --file-prefix "pg$$" \
            --log-level 4 --vdev "net_memif0,role=server,socket=$sock,socket-abstract=no" \
            -- -P -m "1.0" -f "$root/deploy/loadtest/pktgen/cpumapd.lua" >"$work/pktgen.log" 2>&1 </dev/null &
        gen_pid=$!
        # cpumapd connects once pktgen runs its script: its ports are
        # started by then (a memif client that connects earlier, while the
        # server's port is still stopped, is refused and does not retry).
        for _ in $(seq 300); do grep -aq "Executing '" "$work/pktgen.log" && break; sleep 0.1; done
        [ -S "$sock" ] && grep -aq "Executing '" "$work/pktgen.log" \
            || { tail -c 2000 "$work/pktgen.log"; die "pktgen did not start its script with its memif socket open"; }
        mapfile -t a < <(app "$m")
        "$bin" "${eal[@]}" --vdev "net_memif0,role=client,socket=$sock,socket-abstract=no" "${a[@]}" >"$work/cpumapd.log" 2>&1 &
        cm_pid=$!
        printf '{"rows": "%s", "mode": "%s", "pid": %s, "targets": ["lcore%s"]}\n' "$rows" "$m" "$cm_pid" \
            "$(echo "$cpus" | sed 's/,/", "lcore/g')" >"$state/env.json"
        rc=0; wait "$gen_pid" || rc=$?
        gen_pid=
        cat "$state/table.txt" 2>/dev/null || true
        # pktgen draws a screen: keep its script's lines.
        tr -d '\033' <"$work/pktgen.log" | grep -aoE "cpumapd (load|\.lua): .*|rate +[0-9.]+%: .*" | sed 's/^/  pktgen: /' || true
        if [ "$rc" != 0 ] || ! grep -aq "cpumapd.lua: done" "$work/pktgen.log"; then
            failed=1
            echo "  pktgen ($mix) failed: exit $rc (124: timed out after ${limit}s)"
            grep -aq "cpumapd.lua: done" "$work/pktgen.log" || tail -c 2000 "$work/pktgen.log" | tr -d '\033' | tail -15
        fi
        stop_cpumapd
    done
    ;;
trex)
    for mix in "${mix_list[@]}"; do
        m=$(mode_of "$mix")
        ( cd "$trex" && ./stl-sim -f "$root/deploy/loadtest/trex/cpumapd.py" --json -t --mix "$mix" ) \
            >"$work/$mix.json" 2>"$work/stl-sim.log" || { cat "$work/stl-sim.log"; die "stl-sim --json ($mix) failed"; }
        ( cd "$trex" && ./stl-sim -f "$root/deploy/loadtest/trex/cpumapd.py" -o "$work/$mix.pcap" -l "$count" -t --mix "$mix" ) \
            >"$work/stl-sim.log" 2>&1 || { cat "$work/stl-sim.log"; die "stl-sim ($mix) failed"; }
        mapfile -t a < <(app "$m")
        if [ "$backend" = dpdk ]; then
            # DPDK's net_pcap does not say when its file ends: a fixed run.
            "$bin" "${eal[@]}" --vdev "net_pcap0,rx_pcap=$work/$mix.pcap" "${a[@]}" --duration 2 >"$work/cpumapd.log" 2>&1 \
                || { cat "$work/cpumapd.log"; die "cpumapd ($mix) failed"; }
        else
            "$bin" "${eal[@]}" --vdev "net_pcap0,rx_pcap=$work/$mix.pcap" "${a[@]}" --linger 0 >"$work/cpumapd.log" 2>&1 \
                || { cat "$work/cpumapd.log"; die "cpumapd ($mix) failed"; }
        fi
        identity >/dev/null || die "accounting identity violated ($mix)"
        "$py" scripts/loadtest.py trex "$work/$mix.json" "$work/$mix.pcap" "$work/summary.json" "$backend" "$mix" "$m" "$rows" \
            || failed=1
    done
    ;;
esac
echo
[ -s "$rows" ] || die "no step was measured"
"$py" scripts/loadtest.py report "$rows" "$out"
[ "$failed" = 0 ] || die "a check failed (above, and in $out/loadtest.md)"
