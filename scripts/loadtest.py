#!/usr/bin/env python3
"""The measuring side of scripts/loadtest.sh: reads cpumapd's /metrics and
summary, checks what a generator says it sent against what cpumapd counted,
and writes the report (JSON rows, a Markdown table, a PNG chart).

    loadtest.py window SECS OFFERED_CMD|device SOURCE MIX MODE STEP ROWS
        trafgen/testpmd: one step, sampled for SECS after a 1 s warm-up.
    loadtest.py hook STATE begin MIX RATE STEP_MS
    loadtest.py hook STATE end MIX RATE STEP_MS OPACKETS OBYTES OERRORS
        pktgen's CPUMAPD_STEP_HOOK (deploy/loadtest/pktgen/cpumapd.lua):
        STATE is a directory holding `env.json` ({"rows", "mode", "pid",
        "targets"}); `end` exits 1 when cpumapd's counters disagree with
        pktgen's.
    loadtest.py trex STREAMS_JSON PCAP SUMMARY_JSON SOURCE MIX MODE ROWS
        TRex: STREAMS_JSON is `stl-sim --json` (TRex's compiled profile),
        PCAP what stl-sim wrote for it, SUMMARY_JSON cpumapd's summary after
        replaying PCAP. Exits 1 when a frame's fate differs.
    loadtest.py report ROWS OUTDIR
        OUTDIR/loadtest.{json,md,png}.
"""
import json
import os
import re
import struct
import subprocess
import sys
import time
import urllib.request
from collections import Counter

METRICS = os.environ.get("LOADTEST_METRICS", "http://127.0.0.1:9419/metrics")
DROP_REASONS = ("missed", "nombuf", "filter", "ring_full", "target")


def die(msg):
    print(f"loadtest: {msg}", file=sys.stderr)
    sys.exit(1)


def scrape():
    for _ in range(100):
        try:
            return urllib.request.urlopen(METRICS, timeout=1).read().decode()
        except OSError:
            time.sleep(0.1)
    die(f"cpumapd's /metrics ({METRICS}) did not answer")


def series(text):
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"([a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+)$", line)
        if m:
            out.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(3))))
    return out


def total(s, name, where=""):
    return sum(v for labels, v in s.get(name, []) if where in labels)


def per_label(s, name, label):
    out = Counter()
    for labels, v in s.get(name, []):
        m = re.search(label + r'="([^"]*)"', labels)
        if m:
            out[m.group(1)] += v
    return out


def counters(s):
    """The counters a load-test row is made of, from one scrape."""
    c = {
        "rx": total(s, "cpumapd_rx_packets_total"),
        "rx_bytes": total(s, "cpumapd_rx_bytes_total"),
        "device_rx": total(s, "cpumapd_device_packets_total", 'direction="rx"'),
        "device_rx_bytes": total(s, "cpumapd_device_bytes_total", 'direction="rx"'),
        "redirect": total(s, "cpumapd_verdict_total", 'action="redirect"'),
        "delivered": total(s, "cpumapd_target_packets_total"),
        "missed": total(s, "cpumapd_port_rx_dropped_total", 'reason="missed"')
        + total(s, "cpumapd_device_dropped_total", 'reason="imissed"'),
        "nombuf": total(s, "cpumapd_port_rx_dropped_total", 'reason="nombuf"')
        + total(s, "cpumapd_device_dropped_total", 'reason="rx_nombuf"'),
        "filter": total(s, "cpumapd_verdict_total", 'action="drop"')
        + total(s, "cpumapd_verdict_total", 'action="aborted"'),
        "ring_full": total(s, "cpumapd_enqueue_drops_total"),
        "target": total(s, "cpumapd_target_drops_total")
        - total(s, "cpumapd_target_drops_total", 'reason="remote_drop"'),
        "ring_cap": total(s, "cpumapd_ring_capacity"),
    }
    # What each target was handed: processed + tail-dropped at its ring.
    per = per_label(s, "cpumapd_target_packets_total", "target")
    per.update(per_label(s, "cpumapd_enqueue_drops_total", "target"))
    c["per_target"] = dict(per)
    return c


def delta(a, b):
    d = {k: b[k] - a[k] for k in a if k != "per_target"}
    d["ring_cap"] = b["ring_cap"]
    d["per_target"] = {t: b["per_target"].get(t, 0) - a["per_target"].get(t, 0) for t in b["per_target"]}
    return d


def cpu_seconds(pid):
    """utime + stime of a process (all its threads)."""
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def p99(samples):
    s = sorted(samples)
    return s[min(len(s) - 1, int(0.99 * len(s)))] if s else 0


def make_row(source, mix, mode, step, secs, offered, d, ring, cpu, checks):
    ok = all(not c.startswith("FAILED") for c in checks)
    return {
        "source": source, "mix": mix, "mode": mode, "step": step, "secs": round(secs, 3),
        "offered": offered, "offered_pps": offered / secs if secs else 0,
        "rx": d["rx"], "rx_pps": d["rx"] / secs if secs else 0,
        "delivered": d["delivered"], "delivered_pps": d["delivered"] / secs if secs else 0,
        "drops": {r: d[r] for r in DROP_REASONS},
        "ring_p99": ring, "ring_cap": d["ring_cap"], "cpu": cpu, "checks": checks, "ok": ok,
    }


def append_row(rows, row, out=sys.stdout):
    """Adds a row to the ROWS file and prints it (and its failed checks)
    to `out`."""
    with open(rows, "a") as f:
        f.write(json.dumps(row) + "\n")
    # kpps over a timed step; frames for a replayed pcap.
    v = (lambda x: f"{x / row['secs'] / 1e3:,.1f}") if row["secs"] else (lambda x: f"{x:.0f}")
    drops = " | ".join(v(row["drops"][r]) for r in DROP_REASONS)
    cpu = f"{100 * row['cpu']:.0f}%" if row["secs"] else "-"
    print(f"| {row['source']} {row['mix']} {row['step']} | {v(row['offered'])} | {v(row['rx'])} | "
          f"{v(row['delivered'])} | {drops} | {row['ring_p99']:.0f} / {row['ring_cap']:.0f} | "
          f"{cpu} | {'ok' if row['ok'] else 'FAILED'} |", file=out, flush=True)
    for c in row["checks"]:
        if c.startswith("FAILED"):
            print(f"  {c}", file=out, flush=True)


def window(secs, offered_cmd, source, mix, mode, step, rows):
    """One trafgen/testpmd step: counters over SECS after a warm-up."""
    secs = float(secs)
    pid = os.environ.get("CPUMAPD_PID")

    def offered():
        if offered_cmd == "device":
            return total(series(scrape()), "cpumapd_device_packets_total", 'direction="rx"')
        return int(subprocess.check_output(offered_cmd, shell=True).split()[0])

    time.sleep(1.0)
    a, oa, ca, ta = counters(series(scrape())), offered(), cpu_seconds(pid) if pid else 0, time.monotonic()
    ring = []
    while time.monotonic() - ta < secs:
        time.sleep(0.05)
        ring.append(total(series(scrape()), "cpumapd_ring_entries"))
    b, ob, cb, tb = counters(series(scrape())), offered(), cpu_seconds(pid) if pid else 0, time.monotonic()
    dt = tb - ta
    append_row(rows, make_row(source, mix, mode, step, dt, ob - oa, delta(a, b), p99(ring), (cb - ca) / dt, []))


def expect_share(n, share, got, what):
    """`got` frames of `n` belong to a class that is `share` of the
    generator's rotation: exactly floor or ceil of n * share."""
    lo, hi = int((n * share) // 1), int(-(-(n * share) // 1))
    if lo <= got <= hi:
        return f"ok: {what} {got:.0f} of {n} (share {share:g})"
    return f"FAILED: {what} {got:.0f} of {n}, expected {lo}..{hi} (share {share:g})"


def mode_checks(mix, mode, n, d, targets, obytes=None):
    """What each mix means for cpumapd's counters, per pktgen's rotation of
    its sequences (deploy/loadtest/pktgen/cpumapd.lua)."""
    out = []
    per = [d["per_target"].get(t, 0) for t in targets]
    if mix == "ddos" and mode == "l4-filter":
        out.append(expect_share(n, 1 / 16, d["redirect"], "TCP to 443 redirected"))
        out.append(expect_share(n, 15 / 16, d["filter"], "UDP flood to port 9 dropped by the filter"))
    elif mix == "tcpudp" and mode == "l4-proto":
        out.append(expect_share(n, 1 / 2, per[0], f"TCP to the first target ({targets[0]})"))
        out.append(expect_share(n, 1 / 2, per[1], f"UDP to the second target ({targets[1]})"))
    elif mix == "imix" and obytes is not None:
        cycle = 7 * 60 + 4 * 590 + 1514
        full, rest = divmod(n, 12)
        lo, hi = full * cycle + rest * 60, full * cycle + min(rest * 1514, cycle)
        ok = lo <= obytes <= hi
        out.append(f"{'ok' if ok else 'FAILED'}: imix bytes {obytes} for {n} frames (7:4:1 of 60/590/1514 B: {lo}..{hi})")
    elif mix == "udp64":
        ok = d["redirect"] == n and all(p > n / (4 * len(per)) for p in per)
        out.append(f"{'ok' if ok else 'FAILED'}: udp64 all {d['redirect']:.0f} of {n} redirected, spread {per}")
    return out


def hook(state, what, mix, rate, step_ms, *rest):
    env = json.load(open(os.path.join(state, "env.json")))
    base = os.path.join(state, "begin.json")
    if what == "begin":
        sampler = subprocess.Popen([sys.executable, __file__, "sample", os.path.join(state, "ring.txt")])
        json.dump({"c": counters(series(scrape())), "cpu": cpu_seconds(env["pid"]), "sampler": sampler.pid},
                  open(base, "w"))
        return
    opackets, obytes, oerrors = (int(x) for x in rest)
    b0 = json.load(open(base))
    # The last frames pktgen counted are read by cpumapd within a poll or
    # two: wait until its RX counters reach pktgen's (or give up).
    deadline = time.monotonic() + 3
    while True:
        b = counters(series(scrape()))
        d = delta(b0["c"], b)
        if d["rx"] + d["missed"] >= opackets or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    os.kill(b0["sampler"], 15)
    time.sleep(0.1)
    try:
        ring = [float(x) for x in open(os.path.join(state, "ring.txt")).read().split()]
    except OSError:
        ring = []
    checks = []
    seen = d["rx"] + d["missed"]
    checks.append(f"{'ok' if seen == opackets else 'FAILED'}: pktgen sent {opackets}, cpumapd rx + imissed {seen:.0f}")
    ok = d["device_rx_bytes"] == obytes
    checks.append(f"{'ok' if ok else 'FAILED'}: pktgen obytes {obytes}, cpumapd's port counted {d['device_rx_bytes']:.0f} B")
    if oerrors:
        checks.append(f"FAILED: pktgen oerrors {oerrors}")
    checks += mode_checks(mix, env["mode"], opackets, d, env["targets"], obytes)
    secs = int(step_ms) / 1000
    # CPU over the step: the drain and pktgen's settling after it are idle.
    row = make_row("pktgen", mix, env["mode"], f"{rate}%", secs, opackets, d, p99(ring),
                   (cpu_seconds(env["pid"]) - b0["cpu"]) / secs, checks)
    # pktgen owns this process's stdout (its screen): loadtest.sh prints
    # the table lines it finds here.
    with open(os.path.join(state, "table.txt"), "a") as out:
        append_row(env["rows"], row, out)
    sys.exit(0 if row["ok"] else 1)


def sample(path):
    """Ring occupancy (all targets) every 50 ms until killed."""
    with open(path, "w") as f:
        while True:
            f.write(f"{total(series(scrape()), 'cpumapd_ring_entries'):.0f}\n")
            f.flush()
            time.sleep(0.05)


def pcap_frames(path):
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic not in (0xA1B2C3D4, 0xA1B23C4D):
        die(f"{path}: not a little-endian pcap (magic {magic:#x})")
    off, out = 24, []
    while off + 16 <= len(data):
        incl = struct.unpack("<I", data[off + 8:off + 12])[0]
        out.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return out


def l4(frame):
    """(proto, dport) of an untagged IPv4 frame, else (None, None)."""
    if len(frame) < 38 or frame[12:14] != b"\x08\x00":
        return None, None
    ihl = (frame[14] & 15) * 4
    return frame[23], struct.unpack(">H", frame[14 + ihl + 2:14 + ihl + 4])[0]


def trex(streams_json, pcap, summary, source, mix, mode, rows):
    """TRex's simulator output through cpumapd: the frames against the
    profile as TRex compiled it, and cpumapd's verdicts against the frames."""
    import base64
    streams = json.load(open(streams_json))
    frames = pcap_frames(pcap)
    s = json.load(open(summary))
    n = len(frames)
    checks = []
    total_pps = sum(st["mode"]["rate"]["value"] for st in streams)
    by_class = Counter((len(f), *l4(f)) for f in frames)
    for st in streams:
        pkt = base64.b64decode(st["packet"]["binary"])
        cls = (len(pkt), *l4(pkt))
        share = st["mode"]["rate"]["value"] / total_pps
        checks.append(expect_share(n, share, by_class.get(cls, 0), f"TRex stream {cls} in stl-sim's output"))
        for ins in st["vm"]["instructions"]:
            if ins["type"] != "flow_var":
                continue
            off = next(w["pkt_offset"] for w in st["vm"]["instructions"]
                       if w["type"] == "write_flow_var" and w["name"] == ins["name"])
            vals = {f[off:off + ins["size"]] for f in frames if (len(f), *l4(f)) == cls}
            want = min(by_class.get(cls, 0), ins["max_value"] - ins["min_value"] + 1)
            checks.append(f"{'ok' if len(vals) == want else 'FAILED'}: field engine var {ins['name']} of {cls}: "
                          f"{len(vals)} values (expected {want})")
    udp9 = sum(1 for f in frames if l4(f) == (17, 9))
    tcp = sum(1 for f in frames if l4(f)[0] == 6)
    ok = s["rx"] == n
    checks.append(f"{'ok' if ok else 'FAILED'}: cpumapd rx {s['rx']} of the {n} frames replayed")
    if mode == "l4-filter":
        ok = s["drop"] == udp9 and s["redirect"] == n - udp9
        checks.append(f"{'ok' if ok else 'FAILED'}: l4-filter dropped {s['drop']} (UDP to 9 in the pcap: {udp9}), redirected {s['redirect']}")
    if mode == "l4-proto":
        per = [t["processed"] + t["enqueue_drops"] for t in s["targets"]]
        ok = per[0] == tcp and per[1] == n - tcp
        checks.append(f"{'ok' if ok else 'FAILED'}: l4-proto TCP {per[0]} (pcap: {tcp}), UDP {per[1]} (pcap: {n - tcp})")
    if mix == "imix":
        got = sum(p["ibytes"] for p in s["ports"])
        want = sum(len(f) for f in frames)
        checks.append(f"{'ok' if got == want else 'FAILED'}: imix bytes {got} (pcap: {want})")
    d = {
        "rx": s["rx"], "delivered": s["target_processed"], "ring_cap": sum(t["qsize"] for t in s["targets"]),
        "missed": s["imissed"], "nombuf": 0, "filter": s["drop"] + s["aborted"], "ring_full": s["enqueue_drops"],
        "target": s["target_drops"] - sum(t["drop_reasons"]["remote_drop"] for t in s["targets"]),
    }
    append_row(rows, make_row(f"trex/{source}", mix, mode, "pcap", 0, n, d, 0, 0, checks))
    sys.exit(0 if all(not c.startswith("FAILED") for c in checks) else 1)


def report(rows_path, outdir):
    rows = [json.loads(line) for line in open(rows_path) if line.strip()]
    if not rows:
        die(f"{rows_path}: no step was measured")
    os.makedirs(outdir, exist_ok=True)
    json.dump(rows, open(os.path.join(outdir, "loadtest.json"), "w"), indent=1)
    k = lambda x: f"{x / 1e3:,.1f}"
    md = ["| generator | mix | mode | step | offered kpps | rx kpps | delivered kpps | drops: missed | nombuf | filter | "
          "ring full | target | p99 ring fill | CPU | checks |",
          "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        per = (lambda x: k(x / r["secs"])) if r["secs"] else (lambda x: f"{x:.0f} frames")
        off = k(r["offered_pps"]) if r["secs"] else f"{r['offered']:.0f} frames"
        cpu = f"{100 * r['cpu']:.0f}%" if r["secs"] else "-"
        md.append(f"| {r['source']} | {r['mix']} | {r['mode']} | {r['step']} | {off} | {per(r['rx'])} | "
                  f"{per(r['delivered'])} | " + " | ".join(per(r["drops"][d]) for d in DROP_REASONS)
                  + f" | {r['ring_p99']:.0f} / {r['ring_cap']:.0f} | {cpu} | "
                  f"{'ok' if r['ok'] else 'FAILED'} ({len(r['checks'])}) |")
    md.append("")
    for r in rows:
        for c in r["checks"]:
            md.append(f"- {r['source']} {r['mix']} {r['step']}: {c}")
    open(os.path.join(outdir, "loadtest.md"), "w").write("\n".join(md) + "\n")
    chart(rows, os.path.join(outdir, "loadtest.png"))
    print(f"report: {outdir}/loadtest.md, loadtest.json, loadtest.png")


def chart(rows, path):
    """Per generator and mix: offered against delivered, drops stacked by
    reason, one bar group per step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {}
    for r in rows:
        groups.setdefault((r["source"], r["mix"], r["mode"]), []).append(r)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups) + 1, 4.6), squeeze=False)
    colors = {"missed": "#d62728", "nombuf": "#9467bd", "filter": "#7f7f7f", "ring_full": "#ff7f0e", "target": "#8c564b"}
    for ax, ((source, mix, mode), rs) in zip(axes[0], groups.items()):
        unit = 1e6 if any(r["secs"] for r in rs) else 1.0
        scale = lambda r, x: x / r["secs"] / unit if r["secs"] else x
        xs = range(len(rs))
        ax.bar([x - 0.2 for x in xs], [scale(r, r["offered"]) for r in rs], 0.4, label="offered", color="#1f77b4")
        ax.bar([x + 0.2 for x in xs], [scale(r, r["delivered"]) for r in rs], 0.4, label="delivered", color="#2ca02c")
        bottom = [scale(r, r["delivered"]) for r in rs]
        for reason in DROP_REASONS:
            h = [scale(r, r["drops"][reason]) for r in rs]
            if any(h):
                ax.bar([x + 0.2 for x in xs], h, 0.4, bottom=bottom, label=f"drop: {reason}", color=colors[reason],
                       alpha=0.8)
                bottom = [b + v for b, v in zip(bottom, h)]
        for x, r in zip(xs, rs):
            mark = "ok" if r["ok"] else "FAILED"
            if r["secs"]:
                mark += f"\nCPU {100 * r['cpu']:.0f}%\nring p99 {r['ring_p99']:.0f}"
            ax.annotate(mark, (x, max(scale(r, r["offered"]), bottom[x])),
                        ha="center", va="bottom", fontsize=7, color="black" if r["ok"] else "red")
        ax.set_xticks(list(xs), [r["step"] for r in rs])
        ax.set_xlim(-0.8, len(rs) - 0.2)
        ax.set_title(f"{source}: {mix} ({mode})", fontsize=9)
        ax.set_ylabel("Mpps" if unit == 1e6 else "frames")
        ax.margins(y=0.25)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("cpumapd load test: offered vs delivered, drops by reason", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    if len(sys.argv) < 2:
        die(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    table = {"window": (window, 7), "hook": (hook, None), "sample": (sample, 1), "trex": (trex, 7),
             "report": (report, 2)}
    if cmd not in table:
        die(f"unknown command '{cmd}'\n{__doc__}")
    fn, n = table[cmd]
    if n is not None and len(args) != n:
        die(f"{cmd}: {n} arguments expected, got {len(args)}\n{__doc__}")
    fn(*args)


if __name__ == "__main__":
    main()
