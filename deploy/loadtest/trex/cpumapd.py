"""TRex stateless (STL) profile: the traffic mixes cpumapd's modes care about.

    ./t-rex-64 -i                      # the TRex server, on the load host
    trex-console
    > start -f deploy/loadtest/trex/cpumapd.py -m 10mpps -p 0 -t mix=udp64
    > start -f deploy/loadtest/trex/cpumapd.py -m 50% -p 0 -t mix=ddos,ddos_port=9
    > stats --ps                       # compare with cpumapd ctl stats

Mixes (frame sizes without the 4-byte FCS, as TRex counts them):
  udp64   60 B UDP; the field engine walks 65,534 sources and 64,512 source
          ports, so RSS and l4-hash spread it over every queue and target
  tcpudp  TCP and UDP in equal shares over eight common destination ports
          (the l4-proto and l4-filter modes' split)
  imix    simple IMIX, 7:4:1 of 60 / 590 / 1514 B UDP
  ddos    15 of 16 frames a UDP flood to one port (default 9, the port
          cpumapd's l4-filter mode drops) from many sources, 1 of 16 TCP to
          443; with bpf/ddos_filter.o set its port: ctl prog map update
          ddos_config 0 <port>

The base packets are scapy, built by `streams(mix)`; TRex's own API is only
imported inside `get_streams`. Without a TRex server, TRex's stateless
simulator writes what TRex would send for a mix, field engine applied:

    cd trex-core/scripts && ./stl-sim -f .../cpumapd.py -o ddos.pcap -l 3200 -t --mix ddos

scripts/loadtest.sh --source trex replays those through cpumapd and checks
every frame's fate (tests/deploy.rs does too).
"""

import argparse
import ipaddress
import sys

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

MIXES = ("udp64", "tcpudp", "imix", "ddos")
DST_MAC = "02:00:00:00:00:01"
SRC_MAC = "02:00:00:00:00:02"
DST_IP = "198.18.0.1"
# The profile's own packet rate (all streams together) before TRex's -m.
PPS = 1000


class Stream:
    """One TRex stream: a base packet, its share of the rate, and the
    fields the field engine varies (name -> (offset, size, min, max))."""

    def __init__(self, pkt, share, vary=None):
        # share: of the profile's packets (the streams' shares sum to 1).
        self.pkt = pkt
        self.share = share
        self.vary = vary or {}


def _pad(pkt, size):
    """Pads with zeroes to `size` bytes on the wire (without FCS)."""
    missing = size - len(pkt)
    if missing > 0:
        pkt = pkt / (b"\x00" * missing)
    return pkt


def _ip_range(first, last):
    return int(ipaddress.IPv4Address(first)), int(ipaddress.IPv4Address(last))


def streams(mix, ddos_port=9):
    eth = Ether(dst=DST_MAC, src=SRC_MAC)
    if mix == "udp64":
        pkt = _pad(eth / IP(src="198.19.0.1", dst=DST_IP) / UDP(sport=1024, dport=5001), 60)
        lo, hi = _ip_range("198.19.0.1", "198.19.255.254")
        return [Stream(pkt, 1.0, {"src": ("IP.src", 4, lo, hi), "sport": ("UDP.sport", 2, 1024, 65535)})]
    if mix == "tcpudp":
        out = []
        for i, dport in enumerate((80, 443, 53, 123, 22, 8080, 5060, 3478)):
            for l4 in (TCP(sport=10000 + i, dport=dport, flags="S"), UDP(sport=10000 + i, dport=dport)):
                pkt = _pad(eth / IP(src="198.19.0.%d" % (i + 1), dst=DST_IP) / l4, 60)
                lo, hi = _ip_range("198.19.%d.1" % i, "198.19.%d.254" % i)
                out.append(Stream(pkt, 1.0 / 16, {"src": ("IP.src", 4, lo, hi)}))
        return out
    if mix == "imix":
        out = []
        for size, weight in ((60, 7), (590, 4), (1514, 1)):
            pkt = _pad(eth / IP(src="198.19.1.1", dst=DST_IP) / UDP(sport=20000, dport=5001), size)
            out.append(Stream(pkt, weight / 12.0, {"sport": ("UDP.sport", 2, 20000, 20999)}))
        return out
    if mix == "ddos":
        flood = _pad(eth / IP(src="203.0.113.1", dst=DST_IP) / UDP(sport=30000, dport=ddos_port), 60)
        lo, hi = _ip_range("203.0.113.1", "203.0.113.254")
        legit = _pad(eth / IP(src="198.19.0.1", dst=DST_IP) / TCP(sport=40000, dport=443, flags="S"), 60)
        return [
            Stream(flood, 15 / 16.0, {"src": ("IP.src", 4, lo, hi), "sport": ("UDP.sport", 2, 30000, 39999)}),
            Stream(legit, 1 / 16.0, {"sport": ("TCP.sport", 2, 40000, 49999)}),
        ]
    raise ValueError("mix '%s': expected one of %s" % (mix, ", ".join(MIXES)))


class STLcpumapd:
    """The profile TRex loads (`register()`)."""

    def get_streams(self, tunables=None, direction=0, **kwargs):
        # TRex >= 2.89 passes `-t` tunables as a list of strings; older
        # versions as keyword arguments.
        if isinstance(tunables, list):
            ap = argparse.ArgumentParser(prog="cpumapd.py")
            ap.add_argument("--mix", default="udp64", choices=MIXES)
            ap.add_argument("--ddos_port", type=int, default=9)
            t = ap.parse_args(tunables)
            mix, ddos_port = t.mix, t.ddos_port
        else:
            mix = kwargs.get("mix", "udp64")
            ddos_port = int(kwargs.get("ddos_port", 9))
        from trex_stl_lib.api import STLVM, STLPktBuilder, STLStream, STLTXCont

        out = []
        for s in streams(mix, ddos_port):
            vm = STLVM()
            for name, (field, size, lo, hi) in s.vary.items():
                vm.var(name=name, min_value=lo, max_value=hi, size=size, op="inc")
                vm.write(fv_name=name, pkt_offset=field)
            vm.fix_chksum()
            out.append(
                STLStream(
                    packet=STLPktBuilder(pkt=s.pkt, vm=vm),
                    # Shares are of packets, so each stream gets its share
                    # of the packet rate (TRex's -m scales them together;
                    # a percentage would be of the line's bits, which
                    # weights by size).
                    mode=STLTXCont(pps=PPS * s.share),
                )
            )
        return out


def register():
    return STLcpumapd()


def main():
    ap = argparse.ArgumentParser(description="Lists each mix's streams (what TRex would be asked to send).")
    ap.add_argument("--mix", action="append", choices=MIXES)
    a = ap.parse_args()
    for mix in a.mix or MIXES:
        for s in streams(mix):
            print("%s: %d B, share %.4f of the packets, varies %s" % (mix, len(s.pkt), s.share, ", ".join(sorted(s.vary)) or "nothing"))


if __name__ == "__main__":
    sys.exit(main())
