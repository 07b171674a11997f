#!/usr/bin/env bash
# Crash drill for --state-dir: runs cpumapd under generator traffic, applies
# random map changes and mode switches through its control socket as fast as
# it answers, SIGKILLs it at a random moment (a request may be in flight),
# restarts it on the same state directory and checks that the restored map
# and mode equal the last acknowledged state (or that state plus the one
# request in flight when it died: acknowledged means durable, in flight may
# go either way, nothing half-applied). Repeats ROUNDS times; exits non-zero
# on the first mismatch.
#
#   scripts/crash-drill.sh [ROUNDS]          (default 100)
#   scripts/crash-drill.sh --latency [N]     ctl map update latency with and without --state-dir
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec python3 - target/release/cpumapd "$@" <<'PY'
import json, os, random, socket, subprocess, sys, tempfile, threading, time

BIN = sys.argv[1]
args = sys.argv[2:]
MODES = ["no-touch", "touch", "round-robin", "l4-proto", "l4-filter", "l4-hash", "l4-sport", "l4-dport"]
KEYS = [1, 2]
tmp = tempfile.mkdtemp(prefix="cpumapd-drill-")
SOCK = os.path.join(tmp, "ctl.sock")

def start(state_dir):
    try:
        os.unlink(SOCK)
    except FileNotFoundError:
        pass
    p = subprocess.Popen(
        [BIN, "--lcores", "0@0,1@1,2@1", "--vdev", "net_gen0,rate=200000,flows=64", "--",
         "--cpu", "1,2", "--max-entries", "8", "--control", SOCK, "--state-dir", state_dir,
         "--metrics", "off", "--interval", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:  # up to the state line: the socket serves, the state is restored
        if line.startswith("cpumapd: state: ") or (state_dir == "off" and "control socket" in line):
            break
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    return p

class Conn:
    def __init__(self):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(SOCK)
        self.f = self.s.makefile("rw")
    def call(self, req):
        self.f.write(json.dumps(req) + "\n")
        self.f.flush()
        line = self.f.readline()
        if not line:
            raise ConnectionError("closed")
        return json.loads(line)

def observe(c):
    dump = c.call({"cmd": "map_dump"})["result"]
    entries = {e["key"]: (e["qsize"], e.get("prog")) for e in dump}
    return entries, c.call({"cmd": "mode_get"})["result"]["mode"]

def random_change(model):
    entries, mode = model
    r = random.random()
    new = dict(entries)
    if r < 0.45:
        k = random.choice(KEYS)
        q = random.choice([0, 1, 64, 256, 2048, 4096])
        prog = random.choice([None, "pass", "drop"])
        req = {"cmd": "map_update", "key": k, "qsize": q, "flags": "any"}
        if prog:
            req["prog"] = prog
        if q == 0:
            new.pop(k, None)
        else:
            new[k] = (q, prog)
        return req, (new, mode)
    if r < 0.6:
        k = random.choice(KEYS)
        new.pop(k, None)
        return {"cmd": "map_delete", "key": k}, (new, mode)
    if r < 0.8:
        keys = random.sample(KEYS, random.randint(0, len(KEYS)))
        spec = [{"key": k, "qsize": random.choice([64, 512, 2048])} for k in keys]
        return {"cmd": "map_apply", "entries": spec}, ({e["key"]: (e["qsize"], None) for e in spec}, mode)
    m = random.choice(MODES)
    return {"cmd": "mode_set", "mode": m}, (entries, m)

def drill(rounds):
    state = os.path.join(tmp, "state")
    p = start(state)
    model = observe(Conn())
    changes = 0
    for r in range(1, rounds + 1):
        c = Conn()
        deadline = time.monotonic() + random.uniform(0.02, 0.4)
        inflight = None
        killer = threading.Timer(deadline - time.monotonic(), p.kill)
        killer.start()
        try:
            while True:
                req, after = random_change(model)
                inflight = after
                rep = c.call(req)
                if rep["ok"]:
                    model = after
                    changes += 1
                inflight = None
        except (ConnectionError, BrokenPipeError, ConnectionResetError, json.JSONDecodeError):
            pass
        p.wait()
        p = start(state)
        got = observe(Conn())
        ok = got == model or (inflight is not None and got == inflight)
        if not ok:
            print(f"round {r}: MISMATCH\n  restored     {got}\n  acknowledged {model}\n  in flight    {inflight}")
            p.kill()
            sys.exit(1)
        model = got
    p.kill()
    print(f"crash drill: {rounds} SIGKILLs, {changes} acknowledged changes, every restart restored the last acknowledged state")

def latency(n):
    rows = []
    for label, sd in [("--state-dir off", "off"), ("--state-dir (fsync per change)", os.path.join(tmp, "lat"))]:
        p = start(sd)
        c = Conn()
        ts = []
        for i in range(n):
            t0 = time.perf_counter()
            rep = c.call({"cmd": "map_update", "key": 1, "qsize": 64 + (i % 2) * 64, "flags": "any"})
            ts.append(time.perf_counter() - t0)
            assert rep["ok"], rep
        p.kill(); p.wait()
        ts.sort()
        rows.append((label, ts[len(ts) // 2] * 1e6, ts[int(len(ts) * 0.99)] * 1e6))
    print("| ctl map update | p50 us | p99 us |\n|---|---:|---:|")
    for label, p50, p99 in rows:
        print(f"| {label} | {p50:.0f} | {p99:.0f} |")

import atexit, shutil
atexit.register(shutil.rmtree, tmp, True)
if args and args[0] == "--latency":
    latency(int(args[1]) if len(args) > 1 else 1000)
else:
    drill(int(args[0]) if args else 100)
PY
