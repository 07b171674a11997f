-- pktgen-dpdk script: the traffic mixes cpumapd's modes care about, sent at
-- a series of rates, with the generator's own counters printed per step.
--
--   pktgen -l 0-4 -n 4 -a 0000:5e:00.0 -- -P -m "[1:2].0" \
--       -f deploy/loadtest/pktgen/cpumapd.lua
--
-- Settings (environment, read when the script starts):
--   CPUMAPD_MIX      udp64 | tcpudp | imix | ddos          (default udp64)
--   CPUMAPD_PORT     pktgen port to send on                 (default 0)
--   CPUMAPD_DST_MAC  cpumapd's NIC MAC (it runs promiscuous; any unicast
--                    MAC works, but a switch in between needs the real one)
--   CPUMAPD_RATES    percent of line rate per step          (default 10,25,50,75,100)
--   CPUMAPD_STEP_MS  time per step                          (default 10000)
--
-- The mixes (frame sizes are pktgen's, with the 4-byte FCS):
--   udp64   64 B UDP, 65,534 sources x 64,512 source ports: RSS and the
--           l4-hash mode spread it over every queue and target
--   tcpudp  16 sequences, TCP and UDP alternating over common ports: the
--           l4-proto / l4-filter modes' split
--   imix    simple IMIX 7:4:1 of 64 / 594 / 1518 B in 12 sequences
--   ddos    15 of 16 frames a UDP flood to port 9 from 15 sources, 1 of 16
--           TCP to port 443: cpumapd's l4-filter mode (and bpf/ddos_filter.o
--           with ddos_config[0] = 9) drops exactly the flood
-- Compare cpumapd's counters (ctl stats, /metrics) with the opackets
-- printed here; scripts/loadtest.sh does the same with testpmd or trafgen
-- on a machine without a NIC.

package.path = package.path .. ";?.lua;test/?.lua;app/?.lua;"
require "Pktgen"

local function env(name, default)
    local v = os.getenv(name)
    if v == nil or v == "" then
        return default
    end
    return v
end

local port = env("CPUMAPD_PORT", "0")
local mix = env("CPUMAPD_MIX", "udp64")
local dst_mac = env("CPUMAPD_DST_MAC", "02:00:00:00:00:01")
local src_mac = "02:00:00:00:00:02"
local step_ms = tonumber(env("CPUMAPD_STEP_MS", "10000"))
local rates = {}
for r in string.gmatch(env("CPUMAPD_RATES", "10,25,50,75,100"), "[^,]+") do
    local n = tonumber(r)
    if n == nil or n <= 0 or n > 100 then
        error("CPUMAPD_RATES: '" .. r .. "' is not a percentage in (0, 100]")
    end
    rates[#rates + 1] = n
end
if step_ms == nil or step_ms < 100 then
    error("CPUMAPD_STEP_MS must be a number of milliseconds >= 100")
end

-- One pktgen sequence entry (pktgen sends seq 0..seq_cnt-1 in turn).
local function seq(idx, proto, size, src, sport, dport)
    pktgen.seqTable(idx, port, {
        eth_dst_addr = dst_mac,
        eth_src_addr = src_mac,
        ip_dst_addr = "198.18.0.1",
        ip_src_addr = src .. "/16",
        sport = sport,
        dport = dport,
        ethType = "ipv4",
        ipProto = proto,
        vlanid = 1,
        pktSize = size,
    })
end

local mixes = {}

-- One pktgen range field: start, inc, min, max.
local function range(field, start, inc, min, max)
    local set = pktgen.range[field]
    set(port, "start", start)
    set(port, "inc", inc)
    set(port, "min", min)
    set(port, "max", max)
end

function mixes.udp64()
    pktgen.set_mac(port, "dst", dst_mac)
    pktgen.set_proto(port, "udp")
    pktgen.range.dst_mac(port, "start", dst_mac)
    pktgen.range.src_mac(port, "start", src_mac)
    range("dst_ip", "198.18.0.1", "0.0.0.0", "198.18.0.1", "198.18.0.1")
    range("src_ip", "198.19.0.1", "0.0.0.1", "198.19.0.1", "198.19.255.254")
    range("src_port", 1024, 1, 1024, 65535)
    range("dst_port", 5001, 0, 5001, 5001)
    range("pkt_size", 64, 0, 64, 64)
    pktgen.set_range(port, "on")
end

function mixes.tcpudp()
    local ports = {80, 443, 53, 123, 22, 8080, 5060, 3478}
    for i = 0, 15 do
        local proto = (i % 2 == 0) and "tcp" or "udp"
        seq(i, proto, 64, "198.19.0." .. (i + 1), 10000 + i, ports[(i // 2) + 1])
    end
    pktgen.set(port, "seq_cnt", 16)
end

function mixes.imix()
    local sizes = {64, 64, 64, 64, 64, 64, 64, 594, 594, 594, 594, 1518}
    for i = 0, #sizes - 1 do
        seq(i, "udp", sizes[i + 1], "198.19.0." .. (i + 1), 20000 + i, 5001)
    end
    pktgen.set(port, "seq_cnt", #sizes)
end

function mixes.ddos()
    for i = 0, 14 do
        seq(i, "udp", 64, "203.0.113." .. (i + 1), 30000 + i, 9)
    end
    seq(15, "tcp", 64, "198.19.0.1", 40000, 443)
    pktgen.set(port, "seq_cnt", 16)
end

local setup = mixes[mix]
if setup == nil then
    error("CPUMAPD_MIX '" .. mix .. "': expected udp64, tcpudp, imix or ddos")
end

pktgen.stop(port)
pktgen.clear("all")
pktgen.reset(port)
setup()
printf("cpumapd load: mix %s on port %s, %d steps of %d ms\n", mix, port, #rates, step_ms)

for _, rate in ipairs(rates) do
    pktgen.set(port, "rate", rate)
    pktgen.clear(port)
    pktgen.start(port)
    pktgen.delay(step_ms)
    pktgen.stop(port)
    -- Let the last frames drain before reading the counters.
    pktgen.delay(500)
    local st = pktgen.portStats(port, "port")[tonumber(port)]
    printf("rate %3d%%: opackets %d obytes %d ierrors %d\n", rate, st.opackets, st.obytes, st.ierrors)
end
pktgen.set_range(port, "off")
