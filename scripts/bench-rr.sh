#!/usr/bin/env bash
# Request/response into the kernel's stack through a CPU-steering step, side
# by side on one veth pair: clients in namespace S, servers in namespace A.
#   plain            the servers' address on the veth, no steering
#   kernel cpumap    xdp-bench redirect-cpu on the veth, -r pass, kthread on
#                    CPU 1 (needs XDPTOOLS=DIR from ../shared/xdp-tools/build.sh DIR)
#   cpumapd PORT     cpumapd -l 0-1 on the veth, --cpu 1, --exception tap:IF
#                    holding the servers' address; replies go back over the
#                    TAP's reverse path
# Workloads: sockperf ping-pong UDP and TCP (64 B: avg, p50, p99, p99.9 in
# us), nginx serving a 2-byte file to wrk (1 thread, 16 connections:
# keep-alive, and one connection per request; req/s and p99), and the CPU
# cpumapd used over the row (% of one CPU). Rounds alternate the paths.
#
# Needs root, sockperf, nginx-light, wrk (apt-get install sockperf
# nginx-light wrk).
#   scripts/bench-rr.sh [SECONDS] [ROUNDS]
# Environment:
#   PORTS="af_packet af_xdp"       the cpumapd ports to run (vdev kvargs may
#                                  follow a colon: "af_packet:ring=v3";
#                                  "af_xdp:egress=kernel" routes the replies
#                                  out of the veth instead of the TAP);
#                                  "dpdk:af_packet" runs DPDK's PMD in the
#                                  DPDK build (CPUMAPD_DPDK=BIN, else built
#                                  into target/dpdk), the same TAP
#   ARGS="--idle spin"             extra cpumapd app args (all cpumapd rows)
#   ROWS=$'af_packet|ring=v3|--idle spin\naf_xdp|||--lcores 0@1,1@1'
#                                  cpumapd rows as port|vdev kvargs|app args
#                                  [|EAL lcores, default -l 0-1], one per
#                                  line (instead of PORTS)
#   FLOOD=1                        xdp-trafficgen floods UDP to the discard
#                                  port from S on CPU 0 during every row;
#                                  both sides run l4-filter (the kernel:
#                                  -p l4-filter -c 1 -c 0, cpumapd --mode
#                                  l4-filter --cpu 1)
#   OFFLOADS=on                    keep the sender's offloads (the kernel's
#                                  cpumap then loses UDP: see docs/PERFORMANCE.md)
#   WORKLOADS="udp tcp http httpclose"
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-1}
ports=${PORTS:-"af_packet af_xdp"}
workloads=${WORKLOADS:-"udp tcp http httpclose"}
bin=${CPUMAPD:-target/release/cpumapd}
[ -n "${CPUMAPD:-}" ] || cargo build --release --quiet
# Rows "dpdk:PMD" run the DPDK build (CPUMAPD_DPDK, else built here).
dpdk_bin=${CPUMAPD_DPDK:-target/dpdk/release/cpumapd}
if [[ "${PORTS:-} ${ROWS:-}" == *dpdk:* ]] && [ -z "${CPUMAPD_DPDK:-}" ]; then
  cargo build --release --quiet --features dpdk --target-dir target/dpdk
fi
for t in sockperf nginx wrk; do
  command -v "$t" >/dev/null || { echo "bench-rr: $t is missing (apt-get install sockperf nginx-light wrk)" >&2; exit 1; }
done
. scripts/lib/netns.sh
s=cmrS$$; a=cmrA$$; vs=vrS$$; va=vrA$$; tap=tpr$$
srv=10.77.252.1
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ns_cleanup; rm -rf "$tmp"
}
trap cleanup EXIT
ns_add "$a"
# A fresh client namespace and veth pair for every row. The client's
# TIME_WAIT sockets live 60 s: left from one row, they fill the even half
# of its ephemeral ports (the half connect() takes), and every connect() of
# the next row's one-connection-per-request run then searches thousands of
# ports (3 ms each, measured: a stall to ~270 req/s). The client closes
# first whenever the server's FIN arrives after its reply was read.
client_ns() {
  ns_add "$s"
  ns_veth "$s" "$vs" "$a" "$va"
  ip -n "$s" addr add 10.77.252.2/24 dev "$vs"
  [ "${OFFLOADS:-off}" = on ] || ip netns exec "$s" ethtool -K "$vs" tso off gso off tx off >/dev/null
}

# Servers, started once in A; they listen on the address wherever it lives.
mkdir -p "$tmp/www"; printf 'ok' > "$tmp/www/x"
cat > "$tmp/nginx.conf" <<EOF
daemon off; worker_processes 1; pid $tmp/nginx.pid; error_log $tmp/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000; client_body_temp_path $tmp;
  proxy_temp_path $tmp; fastcgi_temp_path $tmp; uwsgi_temp_path $tmp; scgi_temp_path $tmp;
  server { listen 8080 reuseport; root $tmp/www; } }
EOF
ip netns exec "$a" sysctl -qw net.ipv4.ip_nonlocal_bind=1
ip netns exec "$a" nginx -c "$tmp/nginx.conf" -e "$tmp/error.log" >/dev/null 2>&1 & pids+=($!)
ip netns exec "$a" sockperf server -i 0.0.0.0 -p 11111 >/dev/null 2>&1 & pids+=($!)
ip netns exec "$a" sockperf server -i 0.0.0.0 -p 11112 --tcp >/dev/null 2>&1 & pids+=($!)
sleep 0.5

flood_start() {
  [ "${FLOOD:-0}" = 1 ] || return 0
  ip netns exec "$s" taskset -c 0 "$XDPTOOLS/bin/xdp-trafficgen" udp -d 9 "$vs" \
    -m "$(ip -n "$a" -j link show "$va" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')" \
    -a 10.77.252.2 -A "$srv" >/dev/null 2>&1 &
  flood=$!
}
flood_stop() { [ "${FLOOD:-0}" = 1 ] || return 0; kill -INT "$flood" 2>/dev/null; wait "$flood" 2>/dev/null || true; }

# One sockperf ping-pong: "avg p50 p99 p99.9" in us.
pingpong() {
  local port=11111 proto=()
  [ "$1" = tcp ] && { port=11112; proto=(--tcp); }
  ip netns exec "$s" timeout $((secs + 15)) sockperf ping-pong -i "$srv" -p "$port" "${proto[@]}" \
    -t "$secs" -m 64 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | awk '
      /avg-latency=/ { sub(/.*avg-latency=/, ""); sub(/ .*/, ""); avg = $0 }
      /percentile 50.000/ { p50 = $NF } /percentile 99.000/ { p99 = $NF } /percentile 99.900/ { p999 = $NF }
      END { if (avg == "") print "failed - - -"; else printf "%.0f %.0f %.0f %.0f\n", avg, p50, p99, p999 }'
}
# One wrk run: "req/s p99"; close=1 sends Connection: close.
http() {
  local hdr=()
  [ "$1" = close ] && hdr=(-H "Connection: close")
  ip netns exec "$s" timeout $((secs + 15)) wrk -t1 -c16 -d"${secs}s" --latency "${hdr[@]}" \
    "http://$srv:8080/x" 2>&1 | awk '
      /Requests\/sec/ { rps = $2 } /^ +99%/ { p99 = $2 }
      /Non-2xx|Socket errors/ { err = err " " $0 }
      END { if (rps == "") print "failed -"; else printf "%d %s%s\n", rps, p99, (err != "" ? " (" err ")" : "") }'
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# One row: every workload against what now holds the address; $1 names it,
# $2 the cpumapd pid (or empty).
row() {
  local name=$1 pid=${2:-} t0 t1 w0 w1 cells=() cpu="-"
  ip netns exec "$s" ip neigh flush dev "$vs" >/dev/null 2>&1 || true
  ip netns exec "$s" ping -c 2 -i 0.2 -W 1 "$srv" >/dev/null 2>&1 || true
  flood_start
  [ -n "$pid" ] && { t0=$(cpu_ticks "$pid"); w0=$(date +%s%N); }
  for w in $workloads; do
    case $w in
      udp|tcp) read -r avg p50 p99 p999 < <(pingpong "$w"); cells+=("$avg / $p50 / $p99 / $p999") ;;
      http) cells+=("$(http keep)") ;;
      httpclose) cells+=("$(http close)") ;;
    esac
  done
  if [ -n "$pid" ]; then
    t1=$(cpu_ticks "$pid"); w1=$(date +%s%N)
    cpu=$(python3 -c "print('%.0f' % (($t1 - $t0) / $(getconf CLK_TCK) / (($w1 - $w0) / 1e9) * 100))")
  fi
  flood_stop
  local line="| $name"
  for c in "${cells[@]}"; do line+=" | $c"; done
  echo "$line | $cpu |"
}

hdr="| path"
for w in $workloads; do
  case $w in
    udp) hdr+=" | UDP ping-pong avg / p50 / p99 / p99.9 us" ;;
    tcp) hdr+=" | TCP ping-pong avg / p50 / p99 / p99.9 us" ;;
    http) hdr+=" | HTTP keep-alive req/s, p99" ;;
    httpclose) hdr+=" | HTTP new connection per request req/s, p99" ;;
  esac
done
echo "$hdr | cpumapd CPU % |"
echo "$hdr" | awk -F'|' '{ s = ""; for (i = 2; i <= NF; i++) s = s "|---"; print s "|---|" }'

mode=(--mode no-touch); kmode=(-p no-touch -c 1)
[ "${FLOOD:-0}" = 1 ] && { mode=(--mode l4-filter); kmode=(-p l4-filter -c 1 -c 0); }
for _ in $(seq "$rounds"); do
  if [ "${PLAIN:-1}" = 1 ]; then
    client_ns
    ip -n "$a" addr add "$srv/24" dev "$va"
    row "plain stack"
    ip -n "$a" addr del "$srv/24" dev "$va"
  fi
  if [ -n "${XDPTOOLS:-}" ]; then
    client_ns
    ip -n "$a" addr add "$srv/24" dev "$va"
    ip netns exec "$a" "$XDPTOOLS/bin/xdp-bench" redirect-cpu "${kmode[@]}" -r pass "$va" >/dev/null 2>&1 &
    xb=$!; sleep 1
    row "kernel cpumap (xdp-bench redirect-cpu -r pass)"
    kill -INT "$xb"; wait "$xb" 2>/dev/null || true
    ip -n "$a" addr del "$srv/24" dev "$va"
  fi
  rows=${ROWS:-}
  if [ -z "$rows" ]; then
    for p in $ports; do
      pre=""; [ "${p#dpdk:}" != "$p" ] && { pre="dpdk:"; p=${p#dpdk:}; }
      port=${p%%:*}; kv=""; [ "$p" != "$port" ] && kv="${p#*:}"
      rows+="$pre$port|$kv|${ARGS:-}"$'\n'
    done
  fi
  while IFS='|' read -r port kv args lc; do
    [ -n "$port" ] || continue
    lc=${lc:-"-l 0-1"}
    [ -n "$kv" ] && kv=",$kv"
    client_ns
    if [ "${port#dpdk:}" != "$port" ]; then
      # The DPDK build: its PMD on the veth (the main lcore beside the RX
      # lcore on CPU 0), the same TAP into the kernel.
      port=${port#dpdk:}
      ip netns exec "$a" "$dpdk_bin" --lcores 0@0,1@0,2@1 --no-huge -m 512 --no-shconf --no-pci \
        --file-prefix "cmr$$" --log-level 4 --vdev "net_${port}0,iface=$va$kv" -- \
        --rx "(0,0,1)" --cpu 2 "${mode[@]}" --exception "tap:$tap" --interval 0 --metrics off \
        --control off --state-dir off $args >"$tmp/cpumapd.log" 2>&1 </dev/null &
      port="$port (DPDK build)"
    else
      # shellcheck disable=SC2086
      ip netns exec "$a" "$bin" $lc --vdev "net_${port}0,iface=$va$kv" -- \
        --rx "(0,0,0)" --cpu 1 "${mode[@]}" --exception "tap:$tap" --interval 0 --metrics off \
        --control off --state-dir off $args >"$tmp/cpumapd.log" 2>&1 </dev/null &
    fi
    d=$!
    for _ in $(seq 100); do ip -n "$a" link show "$tap" >/dev/null 2>&1 && break; sleep 0.05; done
    if [[ "$kv" == *egress=kernel* ]]; then
      # Replies out of the veth's own stack: the address on the TAP alone,
      # the clients routed out of the veth, loose reverse-path filtering.
      ip -n "$a" addr add "$srv/32" dev "$tap"
      ip -n "$a" route replace 10.77.252.0/24 dev "$va" src "$srv"
      ip netns exec "$a" sysctl -qw net.ipv4.conf.all.rp_filter=2 "net.ipv4.conf.$tap.rp_filter=2"
    else
      ip -n "$a" addr add "$srv/24" dev "$tap"
    fi
    sleep 0.3
    where=""; [ "$lc" = "-l 0-1" ] || where=" ($lc)"
    row "cpumapd net_$port$kv $args$where" "$d"
    kill -TERM "$d"; wait "$d" 2>/dev/null || { echo "cpumapd exited badly:"; tail -5 "$tmp/cpumapd.log"; }
  done <<< "$rows"
done
