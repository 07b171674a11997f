-- A stand-in for pktgen's Lua API, for testing cpumapd.lua without a NIC:
--   lua5.4 mock_pktgen.lua cpumapd.lua
-- Checks every call's arguments against what pktgen accepts (port list,
-- sequence index 0..15, sizes 64..1518, rates 0..100, known range fields)
-- and prints what the script set up, so a test can compare it with the
-- documented mix. Exits non-zero on the first bad call.
local script = arg[1] or error("usage: mock_pktgen.lua SCRIPT")
local calls, seqs, seq_cnt, range_on, steps, sent = {}, {}, 0, false, 0, 0
local function check(c, msg)
    if not c then
        error("pktgen mock: " .. msg, 3)
    end
end
local function portlist(p)
    check(type(p) == "string" and (p == "all" or p:match("^%d+$")), "bad port list " .. tostring(p))
end
local function mac(m)
    check(type(m) == "string" and m:match("^%x%x:%x%x:%x%x:%x%x:%x%x:%x%x$"), "bad MAC " .. tostring(m))
end
local function ipv4(a)
    check(type(a) == "string" and a:match("^%d+%.%d+%.%d+%.%d+$"), "bad IPv4 " .. tostring(a))
end
local range_fields = {
    dst_mac = mac, src_mac = mac, dst_ip = ipv4, src_ip = ipv4,
    src_port = "port", dst_port = "port", pkt_size = "size",
}
pktgen = {
    info = {},
    range = {},
    seqTable = function(idx, p, t)
        check(type(idx) == "number" and idx >= 0 and idx <= 15, "sequence index " .. tostring(idx))
        portlist(p)
        mac(t.eth_dst_addr); mac(t.eth_src_addr); ipv4(t.ip_dst_addr)
        check(t.ip_src_addr:match("^%d+%.%d+%.%d+%.%d+/%d+$"), "ip_src_addr needs a /mask")
        check(t.ethType == "ipv4" or t.ethType == "ipv6" or t.ethType == "vlan", "ethType")
        check(t.ipProto == "udp" or t.ipProto == "tcp" or t.ipProto == "icmp", "ipProto")
        check(t.pktSize >= 64 and t.pktSize <= 1518, "pktSize " .. t.pktSize)
        check(t.sport >= 0 and t.sport <= 65535 and t.dport >= 0 and t.dport <= 65535, "ports")
        seqs[idx] = t
    end,
    set = function(p, what, v)
        portlist(p)
        if what == "seq_cnt" or what == "seqCnt" then
            check(v >= 0 and v <= 16, "seq_cnt " .. v)
            seq_cnt = v
        elseif what == "rate" then
            check(v > 0 and v <= 100, "rate " .. v)
        elseif what == "size" then
            check(v >= 64 and v <= 1518, "size " .. v)
        else
            check(({count = 1, sport = 1, dport = 1, burst = 1, ttl = 1})[what], "unknown set " .. what)
        end
    end,
    set_mac = function(p, dir, m) portlist(p); check(dir == "src" or dir == "dst", dir); mac(m) end,
    set_proto = function(p, proto) portlist(p); check(proto == "udp" or proto == "tcp" or proto == "icmp", proto) end,
    set_range = function(p, s) portlist(p); check(s == "on" or s == "off", s); range_on = range_on or (s == "on") end,
    start = function(p) portlist(p); steps = steps + 1 end,
    stop = function(p) portlist(p) end,
    clear = function(p) portlist(p) end,
    reset = function(p) portlist(p) end,
    delay = function(ms) check(type(ms) == "number" and ms >= 0, "delay") end,
    portStats = function(p, kind)
        portlist(p)
        check(kind == "port" or kind == "rate", "portStats kind " .. tostring(kind))
        sent = sent + 1000
        return {[tonumber(p)] = {opackets = sent, obytes = sent * 64, ierrors = 0, ipackets = 0}}
    end,
}
for field, kind in pairs(range_fields) do
    pktgen.range[field] = function(p, what, v)
        portlist(p)
        check(({start = 1, inc = 1, min = 1, max = 1})[what], field .. " " .. tostring(what))
        if type(kind) == "function" then
            kind(v)
        elseif kind == "port" then
            check(v >= 0 and v <= 65535, field .. " " .. v)
        else
            check(v == 0 or (v >= 64 and v <= 1518), field .. " " .. v)
        end
    end
end
function printf(fmt, ...) io.write(string.format(fmt, ...)) end
package.preload["Pktgen"] = function() return pktgen end
dofile(script)
-- What was set up: one line per sequence entry, then a summary.
for i = 0, seq_cnt - 1 do
    local t = seqs[i]
    check(t ~= nil, "seq_cnt " .. seq_cnt .. " but sequence " .. i .. " was never set")
    print(string.format("seq %d %s %d %s %d %d", i, t.ipProto, t.pktSize, t.ip_src_addr, t.sport, t.dport))
end
print(string.format("mock: seq_cnt %d range %s steps %d", seq_cnt, tostring(range_on), steps))
