#!/usr/bin/env bash
# Reserves hugepages per NUMA node and mounts hugetlbfs for DPDK. Idempotent:
# a node that already has the count is left alone, a mount that exists is
# kept. Exits non-zero when the kernel grants fewer pages than asked
# (memory too fragmented: reserve at boot instead, see README.md here).
#
#   setup-hugepages.sh [--pages-2m N] [--pages-1g N] [--node N|all]
#                      [--mount DIR | --no-mount] [--dry-run]
#
#   --pages-2m N   2 MB pages per node (default 1024 = 2 GB)
#   --pages-1g N   1 GB pages per node (default: leave as is)
#   --node N|all   which NUMA node(s) (default all)
#   --mount DIR    hugetlbfs mount point for 2 MB pages (default
#                  /dev/hugepages); 1 GB pages get DIR-1G
#   --no-mount     reserve only (the EAL finds hugepages through a
#                  hugetlbfs mount; systemd's dev-hugepages.mount usually
#                  provides /dev/hugepages)
#   --dry-run      print what would change, change nothing
#   --sysfs ROOT   sysfs root (default /sys; tests use a fake tree)
#   --mounts FILE  mount table to consult (default /proc/mounts)
set -euo pipefail

pages_2m=1024
pages_1g=""
node=all
mount_dir=/dev/hugepages
do_mount=1
dry=0
sysfs=/sys
mounts=/proc/mounts

die() { echo "setup-hugepages: $*" >&2; exit 1; }
num() { [[ $2 =~ ^[0-9]+$ ]] || die "$1 '$2': expected a number"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --pages-2m) [ $# -ge 2 ] || die "$1 needs a value"; num "$1" "$2"; pages_2m=$2; shift 2 ;;
        --pages-1g) [ $# -ge 2 ] || die "$1 needs a value"; num "$1" "$2"; pages_1g=$2; shift 2 ;;
        --node) [ $# -ge 2 ] || die "$1 needs a value"
            [ "$2" = all ] || num "$1" "$2"; node=$2; shift 2 ;;
        --mount) [ $# -ge 2 ] || die "$1 needs a value"; mount_dir=$2; shift 2 ;;
        --no-mount) do_mount=0; shift ;;
        --dry-run) dry=1; shift ;;
        --sysfs) [ $# -ge 2 ] || die "$1 needs a value"; sysfs=$2; shift 2 ;;
        --mounts) [ $# -ge 2 ] || die "$1 needs a value"; mounts=$2; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (--help lists them)" ;;
    esac
done

# The nodes' hugepage directories; a kernel without NUMA has only the
# global one.
nodes=()
if [ -d "$sysfs/devices/system/node/node0" ]; then
    for d in "$sysfs"/devices/system/node/node[0-9]*; do
        n=${d##*/node}
        if [ "$node" = all ] || [ "$node" = "$n" ]; then nodes+=("$n"); fi
    done
    [ ${#nodes[@]} -gt 0 ] || die "NUMA node $node does not exist (have: $(ls -d "$sysfs"/devices/system/node/node[0-9]* | sed 's|.*/node||' | tr '\n' ' '))"
else
    [ "$node" = all ] || [ "$node" = 0 ] || die "this kernel has no NUMA nodes: use --node all"
    nodes=(global)
fi

hp_dir() { # node size_kb
    if [ "$1" = global ]; then echo "$sysfs/kernel/mm/hugepages/hugepages-$2kB"
    else echo "$sysfs/devices/system/node/node$1/hugepages/hugepages-$2kB"; fi
}

reserve() { # size_kb count label
    local size_kb=$1 want=$2 label=$3 n dir have got
    for n in "${nodes[@]}"; do
        dir=$(hp_dir "$n" "$size_kb")
        if [ ! -d "$dir" ]; then
            if [ "$size_kb" = 1048576 ]; then
                die "node $n: no 1 GB hugepages (the CPU lacks pdpe1gb, or the kernel needs hugepagesz=1G on its command line)"
            fi
            die "node $n: no $label hugepages in $dir"
        fi
        have=$(cat "$dir/nr_hugepages")
        if [ "$have" = "$want" ]; then
            echo "node $n: $want x $label pages already reserved"
            continue
        fi
        if [ $dry = 1 ]; then
            echo "node $n: would set $label pages $have -> $want ($dir/nr_hugepages)"
            continue
        fi
        echo "$want" > "$dir/nr_hugepages" || die "node $n: cannot write $dir/nr_hugepages (root?)"
        got=$(cat "$dir/nr_hugepages")
        if [ "$got" -lt "$want" ]; then
            die "node $n: asked for $want x $label pages, the kernel granted $got (memory fragmented: reserve at boot, see deploy/hugepages/README.md)"
        fi
        echo "node $n: $label pages $have -> $got"
    done
}

reserve 2048 "$pages_2m" 2M
[ -z "$pages_1g" ] || reserve 1048576 "$pages_1g" 1G

mount_one() { # dir pagesize
    local dir=$1 ps=$2
    if awk -v d="$dir" '$2 == d && $3 == "hugetlbfs" { found = 1 } END { exit !found }' "$mounts"; then
        echo "hugetlbfs ($ps) already mounted on $dir"
        return
    fi
    if [ $dry = 1 ]; then
        echo "would mount hugetlbfs pagesize=$ps on $dir"
        return
    fi
    mkdir -p "$dir"
    mount -t hugetlbfs -o "pagesize=$ps" nodev "$dir" || die "cannot mount hugetlbfs on $dir"
    echo "mounted hugetlbfs pagesize=$ps on $dir"
}

if [ $do_mount = 1 ]; then
    mount_one "$mount_dir" 2M
    [ -z "$pages_1g" ] || mount_one "$mount_dir-1G" 1G
fi
[ $dry = 1 ] && echo "dry run: nothing changed"
exit 0
