#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 30), seeded from
# fuzz/corpus/<target> (small, in git) plus, for the frame and pcap
# targets, every record / file of ../shared/pcaps. Needs the nightly
# toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Longer runs: scripts/fuzz.sh 3600 frame. A crash leaves its input in
# fuzz/artifacts/<target>/; turn it into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(frame config control pcap ebpf)
work=target/fuzz-corpus
mkdir -p "$work"
# The shipped XDP objects (make -C bpf) seed the loader side of the ebpf
# target (first byte 1).
if make -s -C bpf >/dev/null 2>&1; then
  mkdir -p "$work/ebpf"
  for o in bpf/*.o; do
    { printf '\001'; cat "$o"; } >"$work/ebpf/$(basename "$o")"
  done
fi
if [ -d ../shared/pcaps ]; then
  mkdir -p "$work/frame" "$work/pcap"
  cp ../shared/pcaps/*.pcap "$work/pcap/" 2>/dev/null || true
  python3 - ../shared/pcaps "$work/frame" <<'PY'
import os, struct, sys
src, dst = sys.argv[1], sys.argv[2]
n = 0
for name in sorted(os.listdir(src)):
    if not name.endswith(".pcap"):
        continue
    data = open(os.path.join(src, name), "rb").read()
    if len(data) < 24:
        continue
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    off = 24
    while off + 16 <= len(data) and n < 5000:
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        rec = data[off + 16:off + 16 + min(incl, 65535)]
        off += 16 + incl
        if rec:
            open(os.path.join(dst, f"{name}-{n}"), "wb").write(rec)
            n += 1
print(f"seeded {n} frames from {src}")
PY
fi
cd fuzz
cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "../$work/$t" "corpus/$t"
  echo "== fuzz $t for ${secs}s"
  # A unit slower than 60 s is reported (libFuzzer's default, 10 s, is
  # reached under ASan by a large object's verification, 0.2 s natively,
  # when the host is busy: a slow-unit artifact, not a crash).
  out=$(cargo +nightly fuzz run -O "$t" "../$work/$t" "corpus/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 -report_slow_units=60 2>&1 || true)
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb|Done|ERROR|panicked|SUMMARY" <<<"$out" || true
  # A here-string, not `echo | grep -q`: under pipefail, grep -q leaving
  # early makes echo die of SIGPIPE on a long output and the check lie.
  if ! grep -q "stat::number_of_executed_units" <<<"$out"; then
    echo "FAILED: fuzz target $t did not run:"
    echo "$out" | tail -20
    exit 1
  fi
  if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
    echo "FAILED: fuzz target $t found a crash: fuzz/artifacts/$t"
    exit 1
  fi
done
