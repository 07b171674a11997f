-- pktgen-dpdk script: the traffic mixes cpumapd's modes care about, sent at
-- a series of rates, with the generator's own counters printed per step.
-- Runs unattended: it waits for the link, runs every step, and quits pktgen
-- (exit 0), or prints "cpumapd.lua: FAILED: why" and exits 1.
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
--   CPUMAPD_LINK_WAIT_MS  how long to wait for the link     (default 30000)
--   CPUMAPD_STEP_HOOK  a shell command run before each step as
--                    `HOOK begin MIX RATE STEP_MS` and after it as
--                    `HOOK end MIX RATE STEP_MS OPACKETS OBYTES OERRORS`;
--                    pktgen waits for it, and a non-zero exit fails the run
--                    (scripts/loadtest.sh checks cpumapd's counters there)
--   CPUMAPD_QUIT     1: quit pktgen when done (default); 0: stay in its shell
--
-- The mixes (frame sizes are pktgen's, with the 4-byte FCS):
--   udp64   64 B UDP, 65,534 sources x 64,512 source ports: RSS and the
--           l4-hash mode spread it over every queue and target
--   tcpudp  16 sequences, TCP and UDP alternating over common ports: the
--           l4-proto / l4-filter modes' split
--   imix    simple IMIX 7:4:1 of 64 / 594 / 1518 B in 12 sequences, TX
--           bursts of 24 (pktgen restarts the sequences at each burst)
--   ddos    15 of 16 frames a UDP flood to port 9 from 15 sources, 1 of 16
--           TCP to port 443: cpumapd's l4-filter mode (and bpf/ddos_filter.o
--           with ddos_config[0] = 9) drops exactly the flood
-- Per step it prints opackets (frames the port took), obytes (their bytes,
-- without FCS, as the PMD counts them) and oerrors. Compare them with
-- cpumapd's counters (ctl stats, /metrics): scripts/loadtest.sh --source
-- pktgen does, exactly, through CPUMAPD_STEP_HOOK.

local function say(fmt, ...)
    io.write(string.format(fmt, ...))
    io.flush()
end

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
local hook = env("CPUMAPD_STEP_HOOK", nil)
local quit = env("CPUMAPD_QUIT", "1") ~= "0"

local function settings()
    local rates = {}
    for r in string.gmatch(env("CPUMAPD_RATES", "10,25,50,75,100"), "[^,]+") do
        local n = tonumber(r)
        if n == nil or n <= 0 or n > 100 then
            error("CPUMAPD_RATES: '" .. r .. "' is not a percentage in (0, 100]", 0)
        end
        rates[#rates + 1] = n
    end
    local step_ms = tonumber(env("CPUMAPD_STEP_MS", "10000"))
    if step_ms == nil or step_ms < 100 then
        error("CPUMAPD_STEP_MS must be a number of milliseconds >= 100", 0)
    end
    local link_ms = tonumber(env("CPUMAPD_LINK_WAIT_MS", "30000"))
    if link_ms == nil or link_ms < 0 then
        error("CPUMAPD_LINK_WAIT_MS must be a number of milliseconds >= 0", 0)
    end
    return rates, step_ms, link_ms
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
    -- pktgen starts each TX burst at the first sequence: a burst of 24 is
    -- two whole 7:4:1 cycles (its default of 32 would skew the mix).
    pktgen.set(port, "burst", 24)
end

function mixes.ddos()
    for i = 0, 14 do
        seq(i, "udp", 64, "203.0.113." .. (i + 1), 30000 + i, 9)
    end
    seq(15, "tcp", 64, "198.19.0.1", 40000, 443)
    pktgen.set(port, "seq_cnt", 16)
end

-- Runs the hook, if any; a failure (non-zero exit) is an error.
local function run_hook(...)
    if hook == nil then
        return
    end
    local args = {...}
    for i, a in ipairs(args) do
        args[i] = tostring(a)
    end
    local cmd = hook .. " " .. table.concat(args, " ")
    local ok, how, code = os.execute(cmd)
    if not ok then
        error(string.format("step hook '%s' failed (%s %s)", cmd, tostring(how), tostring(code)), 0)
    end
end

local function wait_link(link_ms)
    local waited = 0
    while true do
        local st = pktgen.linkState(port)[tonumber(port)]
        if st ~= nil and string.find(st, "UP", 1, true) then
            return st
        end
        if waited >= link_ms then
            error(string.format("port %s: link still down after %d ms (%s): is cpumapd connected?",
                port, link_ms, tostring(st)), 0)
        end
        pktgen.delay(100)
        waited = waited + 100
    end
end

-- pktgen's "port" counters are a snapshot its 1 s timer takes: after a
-- stop, read them once two snapshots agree (the last frames counted).
local function settled_stats()
    local last = nil
    for _ = 1, 10 do
        local st = pktgen.portStats(port, "port")[tonumber(port)]
        if last ~= nil and st.opackets == last.opackets and st.obytes == last.obytes then
            return st
        end
        last = st
        pktgen.delay(1100)
    end
    error("port " .. port .. ": its TX counters did not settle in 10 s after the stop", 0)
end

local function main()
    local rates, step_ms, link_ms = settings()
    local setup = mixes[mix]
    if setup == nil then
        error("CPUMAPD_MIX '" .. mix .. "': expected udp64, tcpudp, imix or ddos", 0)
    end
    pktgen.stop(port)
    pktgen.reset(port)
    setup()
    local link = wait_link(link_ms)
    say("cpumapd load: mix %s on port %s (link %s), %d steps of %d ms\n", mix, port, link, #rates, step_ms)
    for _, rate in ipairs(rates) do
        pktgen.set(port, "rate", rate)
        pktgen.clear(port)
        run_hook("begin", mix, rate, step_ms)
        pktgen.start(port)
        pktgen.delay(step_ms)
        pktgen.stop(port)
        local st = settled_stats()
        say("rate %g%%: opackets %d obytes %d oerrors %d\n", rate, st.opackets, st.obytes, st.oerrors)
        run_hook("end", mix, rate, step_ms, st.opackets, st.obytes, st.oerrors)
    end
    pktgen.set_range(port, "off")
end

local ok, err = pcall(main)
if not ok then
    say("cpumapd.lua: FAILED: %s\n", tostring(err))
    os.exit(1)
end
say("cpumapd.lua: done\n")
if quit then
    pktgen.quit()
end
