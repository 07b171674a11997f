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

The packets are plain scapy, built by `streams(mix)`; TRex's own API is only
imported inside `get_streams`, so the module imports and builds its packets
wherever scapy is installed. Without TRex, `python3 cpumapd.py --pcap DIR`
writes each mix as a pcap (the field engine's ranges walked in order), which
tcpreplay or cpumapd's net_pcap port can replay; tests/deploy.rs runs those
through cpumapd.
"""

import argparse
import ipaddress
import os
import sys

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

MIXES = ("udp64", "tcpudp", "imix", "ddos")
DST_MAC = "02:00:00:00:00:01"
SRC_MAC = "02:00:00:00:00:02"
DST_IP = "198.18.0.1"


class Stream:
    """One TRex stream: a base packet, its share of the rate, and the
    fields the field engine varies (name -> (offset, size, min, max))."""

    def __init__(self, pkt, share, vary=None):
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


def _nth(stream, n):
    """The stream's n-th packet as the field engine would write it (every
    varied field incremented in step, each wrapping in its own range)."""
    pkt = stream.pkt.copy()
    for name, (field, _size, lo, hi) in stream.vary.items():
        layer, attr = field.split(".")
        v = lo + n % (hi - lo + 1)
        if layer == "IP" and attr == "src":
            v = str(ipaddress.IPv4Address(v))
        setattr(pkt[layer], attr, v)
    # Recompute checksums and lengths on rebuild.
    del pkt[IP].chksum
    if pkt.haslayer(UDP):
        del pkt[UDP].chksum
    if pkt.haslayer(TCP):
        del pkt[TCP].chksum
    return Ether(bytes(pkt))


def expand(mix, count, ddos_port=9):
    """`count` packets of the mix, streams interleaved by their shares."""
    ss = streams(mix, ddos_port)
    out, sent = [], [0] * len(ss)
    for i in range(count):
        # The stream furthest behind its share sends next (a deterministic
        # stand-in for TRex's rate-based interleaving).
        k = min(range(len(ss)), key=lambda j: (sent[j] / ss[j].share, j))
        out.append(_nth(ss[k], sent[k]))
        sent[k] += 1
    return out


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
                    mode=STLTXCont(percentage=100.0 * s.share),
                )
            )
        return out


def register():
    return STLcpumapd()


def main():
    ap = argparse.ArgumentParser(description="Write the mixes as pcaps (no TRex needed).")
    ap.add_argument("--pcap", required=True, help="directory for <mix>.pcap")
    ap.add_argument("--count", type=int, default=1600)
    ap.add_argument("--ddos-port", type=int, default=9)
    ap.add_argument("--mix", action="append", choices=MIXES)
    a = ap.parse_args()
    os.makedirs(a.pcap, exist_ok=True)
    for mix in a.mix or MIXES:
        pkts = expand(mix, a.count, a.ddos_port)
        path = os.path.join(a.pcap, mix + ".pcap")
        wrpcap(path, pkts)
        print("%s: %d packets" % (path, len(pkts)))


if __name__ == "__main__":
    sys.exit(main())
