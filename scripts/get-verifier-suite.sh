#!/usr/bin/env bash
# Builds the kernel's own verifier tests for tests/verifier_suite.rs:
#   scripts/get-verifier-suite.sh [DIR]
# DIR defaults to $CPUMAPD_CACHE/verifier-suite (/var/cache/cpumapd/...),
# outside the clone: built once per kernel and source version, then reused.
#
# From Debian's linux-source-6.12 (apt-get download, ~150 MB, not kept):
# tools/testing/selftests/bpf/progs/verifier_*.c, every program's section
# made SEC("xdp") so both verifiers judge each as an XDP program, compiled
# with clang-19 -mcpu=v4 (their ISA v4 asm needs clang 18 or newer) against
# this kernel's BTF (vmlinux.h); and kverdict (scripts/verifier-suite/
# kverdict.c), built against the libbpf of the same tree, which asks the
# running kernel for its verdict on each program.
#
# Needs: apt-get install clang-19 libelf-dev zlib1g-dev bpftool make gcc
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-${CPUMAPD_VERIFIER_SUITE:-${CPUMAPD_CACHE:-/var/cache/cpumapd}/verifier-suite}}
pkg=linux-source-6.12
clang=${CLANG:-clang-19}
stamp="$pkg $(uname -r) $(cat "$0" "$here/verifier-suite/kverdict.c" | sha256sum | cut -c1-16)"
if [[ -x $dir/kverdict && -f $dir/stamp && $(cat "$dir/stamp") == "$stamp" ]]; then
    echo "verifier suite: $dir is current ($(ls "$dir"/obj/*.o | wc -l) objects)"
    exit 0
fi
command -v "$clang" >/dev/null || { echo "get-verifier-suite: $clang missing (apt-get install clang-19)" >&2; exit 1; }
command -v bpftool >/dev/null || { echo "get-verifier-suite: bpftool missing (apt-get install bpftool)" >&2; exit 1; }
[[ -r /sys/kernel/btf/vmlinux ]] || { echo "get-verifier-suite: the kernel has no BTF (/sys/kernel/btf/vmlinux)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work" # apt-get download runs as _apt
cd "$work"
apt-get download "$pkg" >/dev/null
dpkg-deb -x "$pkg"_*.deb x
src=$pkg
tar -xf x/usr/src/$pkg.tar.xz \
    "$src/tools/testing/selftests/bpf" "$src/tools/lib/bpf" "$src/tools/include" \
    "$src/tools/build" "$src/tools/scripts" "$src/tools/arch/x86" "$src/include/uapi" "$src/scripts"
rm -rf x "$pkg"_*.deb

echo "verifier suite: libbpf from $pkg"
make -s -C "$src/tools/lib/bpf" -j"$(nproc)" BUILD_STATIC_ONLY=1 OBJDIR="$work/libbpf" \
    DESTDIR="$work/libbpf-inst" prefix= install >/dev/null

sel=$src/tools/testing/selftests/bpf
mkdir -p inc/gnu obj
bpftool btf dump file /sys/kernel/btf/vmlinux format c > inc/vmlinux.h
# The BPF target defines no __x86_64__, so glibc's headers ask for the
# 32-bit stubs (gcc-multilib has them); none of them matters here.
: > inc/gnu/stubs-32.h
echo "verifier suite: compiling $(ls "$sel"/progs/verifier_*.c | wc -l) files with $clang -mcpu=v4"
fail=0
for f in "$sel"/progs/verifier_*.c; do
    b=$(basename "$f" .c)
    sed -E '/SEC\("license"\)/!s/SEC\("\??[a-z][^"]*"\)/SEC("xdp")/' "$f" > "$sel/progs/xdp_$b.c"
    if ! "$clang" -O2 -g -target bpf -mcpu=v4 -std=gnu11 -fno-strict-aliasing -w \
        -D__TARGET_ARCH_x86 -I"$sel" -I"$sel/progs" -Iinc -I"$work/libbpf-inst/include" \
        -I"$src/tools/include/uapi" -idirafter /usr/include/x86_64-linux-gnu -idirafter /usr/include \
        -c "$sel/progs/xdp_$b.c" -o "obj/$b.o" 2> err; then
        echo "verifier suite: $b does not compile:" >&2
        head -5 err >&2
        fail=1
    fi
done
((fail == 0)) || exit 1
gcc -O2 -Wall -o kverdict "$here/verifier-suite/kverdict.c" -I"$work/libbpf-inst/include" \
    "$work/libbpf-inst/lib64/libbpf.a" -lelf -lz

rm -rf "$dir"
mkdir -p "$dir"
mv obj kverdict "$dir/"
echo "$stamp" > "$dir/stamp"
echo "verifier suite: $(ls "$dir"/obj/*.o | wc -l) objects and kverdict in $dir"
