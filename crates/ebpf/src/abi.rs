//! The kernel's BPF ABI numbers, in one place (the crate's uapi `bpf.h`):
//! bpf(2) commands, map types, update flags, program and attach types, XDP
//! actions, helper ids and the pseudo sources of instructions. Layer 0:
//! used by the eBPF loader, verifier, interpreter and JIT, by the bpf(2)
//! edge of the AF_XDP port and by the map's control-plane API; imports
//! nothing.
//!
//! Values are the kernel's (include/uapi/linux/bpf.h); a name here is the
//! uapi name without its `BPF_` prefix where the prefix is the module's.

/// bpf(2) commands (`enum bpf_cmd`).
pub mod cmd {
    /// `BPF_MAP_CREATE`.
    pub const MAP_CREATE: i32 = 0;
    /// `BPF_MAP_LOOKUP_ELEM`.
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    /// `BPF_MAP_UPDATE_ELEM`.
    pub const MAP_UPDATE_ELEM: i32 = 2;
    /// `BPF_PROG_LOAD`.
    pub const PROG_LOAD: i32 = 5;
    /// `BPF_LINK_CREATE`.
    pub const LINK_CREATE: i32 = 28;
}

/// Map types (`enum bpf_map_type`).
pub mod map_type {
    /// `BPF_MAP_TYPE_HASH`.
    pub const HASH: u32 = 1;
    /// `BPF_MAP_TYPE_ARRAY`.
    pub const ARRAY: u32 = 2;
    /// `BPF_MAP_TYPE_PROG_ARRAY`.
    pub const PROG_ARRAY: u32 = 3;
    /// `BPF_MAP_TYPE_PERF_EVENT_ARRAY`.
    pub const PERF_EVENT_ARRAY: u32 = 4;
    /// `BPF_MAP_TYPE_PERCPU_HASH`.
    pub const PERCPU_HASH: u32 = 5;
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`.
    pub const PERCPU_ARRAY: u32 = 6;
    /// `BPF_MAP_TYPE_LRU_HASH`.
    pub const LRU_HASH: u32 = 9;
    /// `BPF_MAP_TYPE_LRU_PERCPU_HASH`.
    pub const LRU_PERCPU_HASH: u32 = 10;
    /// `BPF_MAP_TYPE_LPM_TRIE`.
    pub const LPM_TRIE: u32 = 11;
    /// `BPF_MAP_TYPE_DEVMAP`.
    pub const DEVMAP: u32 = 14;
    /// `BPF_MAP_TYPE_CPUMAP`.
    pub const CPUMAP: u32 = 16;
    /// `BPF_MAP_TYPE_XSKMAP`.
    pub const XSKMAP: u32 = 17;
    /// `BPF_MAP_TYPE_QUEUE`.
    pub const QUEUE: u32 = 22;
    /// `BPF_MAP_TYPE_STACK`.
    pub const STACK: u32 = 23;
    /// `BPF_MAP_TYPE_DEVMAP_HASH`.
    pub const DEVMAP_HASH: u32 = 25;
    /// `BPF_MAP_TYPE_RINGBUF`.
    pub const RINGBUF: u32 = 27;

    /// The lower-case name of a map type, for messages ("unknown" if none).
    pub fn name(t: u32) -> &'static str {
        match t {
            HASH => "hash",
            ARRAY => "array",
            PROG_ARRAY => "prog_array",
            PERF_EVENT_ARRAY => "perf_event_array",
            PERCPU_HASH => "percpu_hash",
            PERCPU_ARRAY => "percpu_array",
            LRU_HASH => "lru_hash",
            LRU_PERCPU_HASH => "lru_percpu_hash",
            LPM_TRIE => "lpm_trie",
            DEVMAP => "devmap",
            CPUMAP => "cpumap",
            XSKMAP => "xskmap",
            QUEUE => "queue",
            STACK => "stack",
            DEVMAP_HASH => "devmap_hash",
            RINGBUF => "ringbuf",
            _ => "unknown",
        }
    }
}

/// `bpf_map_update_elem` flags.
pub mod update {
    /// `BPF_ANY`: create or replace.
    pub const ANY: u64 = 0;
    /// `BPF_NOEXIST`: create only.
    pub const NOEXIST: u64 = 1;
    /// `BPF_EXIST`: replace only.
    pub const EXIST: u64 = 2;
}

/// `BPF_PROG_TYPE_XDP`.
pub const PROG_TYPE_XDP: u32 = 6;

/// `BPF_PROG_TYPE_SOCKET_FILTER` (also a TAP's queue-steering program).
pub const PROG_TYPE_SOCKET_FILTER: u32 = 1;

/// `BPF_PROG_TYPE_SCHED_CLS` (a tc/tcx program).
pub const PROG_TYPE_SCHED_CLS: u32 = 3;

/// Offset of `hash` in `struct __sk_buff` (uapi bpf.h: len, pkt_type, mark,
/// queue_mapping, protocol, vlan_present, vlan_tci, vlan_proto, priority,
/// ingress_ifindex, ifindex, tc_index, `cb[5]`, then hash).
pub const SK_BUFF_HASH: i16 = 68;

/// Offsets of `data` and `data_end` in `struct __sk_buff` (after hash and
/// tc_classid).
pub const SK_BUFF_DATA: i16 = 76;
/// See [`SK_BUFF_DATA`].
pub const SK_BUFF_DATA_END: i16 = 80;

/// `BPF_F_RDONLY_PROG`: programs may only read the map (libbpf's
/// `.rodata`).
pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;
/// `BPF_F_WRONLY_PROG`: programs may only write the map.
pub const BPF_F_WRONLY_PROG: u32 = 1 << 8;

/// The `map_flags` bits by name (uapi bpf.h), for messages.
pub const MAP_FLAGS: &[(u32, &str)] = &[
    (1 << 0, "BPF_F_NO_PREALLOC"),
    (1 << 1, "BPF_F_NO_COMMON_LRU"),
    (1 << 2, "BPF_F_NUMA_NODE"),
    (1 << 3, "BPF_F_RDONLY"),
    (1 << 4, "BPF_F_WRONLY"),
    (1 << 5, "BPF_F_STACK_BUILD_ID"),
    (1 << 6, "BPF_F_ZERO_SEED"),
    (1 << 7, "BPF_F_RDONLY_PROG"),
    (1 << 8, "BPF_F_WRONLY_PROG"),
    (1 << 9, "BPF_F_CLONE"),
    (1 << 10, "BPF_F_MMAPABLE"),
    (1 << 11, "BPF_F_PRESERVE_ELEMS"),
    (1 << 12, "BPF_F_INNER_MAP"),
    (1 << 13, "BPF_F_LINK"),
    (1 << 14, "BPF_F_PATH_FD"),
    (1 << 15, "BPF_F_VTYPE_BTF_OBJ_FD"),
    (1 << 16, "BPF_F_TOKEN_FD"),
    (1 << 17, "BPF_F_SEGV_ON_FAULT"),
    (1 << 18, "BPF_F_NO_USER_CONV"),
];

/// The `map_flags` cpumapd honours: what changes nothing a program or
/// cpumapd's maps can observe (preallocation, LRU lists, NUMA placement,
/// hash seeding, mmap-ability), and the program-side access flags its
/// verifier enforces. The syscall-side BPF_F_RDONLY/WRONLY and the rest
/// are refused by name.
pub const MAP_FLAGS_HONOURED: u32 =
    1 | (1 << 1) | (1 << 2) | (1 << 6) | BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG | (1 << 10);

/// Attach types (`enum bpf_attach_type`).
pub mod attach {
    /// `BPF_XDP_CPUMAP`: the expected attach type of a cpumap entry's program.
    pub const XDP_CPUMAP: u32 = 35;
    /// `BPF_XDP`: an XDP program linked to an interface.
    pub const XDP: u32 = 37;
    /// `BPF_TCX_INGRESS`: a tc program linked to an interface's ingress
    /// (Linux 6.6).
    pub const TCX_INGRESS: u32 = 46;
}

/// A tcx program's verdicts (`enum tcx_action_base`).
pub mod tcx {
    /// `TCX_NEXT`: on to the next program, or the stack.
    pub const NEXT: i32 = -1;
    /// `TCX_DROP`.
    pub const DROP: i32 = 2;
}

/// `XDP_FLAGS_*` of an XDP attachment.
pub mod xdp_flags {
    /// `XDP_FLAGS_SKB_MODE`: generic XDP.
    pub const SKB_MODE: u32 = 1 << 1;
    /// `XDP_FLAGS_DRV_MODE`: the driver's native XDP.
    pub const DRV_MODE: u32 = 1 << 2;
}

/// XDP actions (`enum xdp_action`): what a program's r0 means.
pub mod xdp {
    /// `XDP_ABORTED`.
    pub const ABORTED: u32 = 0;
    /// `XDP_DROP`.
    pub const DROP: u32 = 1;
    /// `XDP_PASS`.
    pub const PASS: u32 = 2;
    /// `XDP_TX`.
    pub const TX: u32 = 3;
    /// `XDP_REDIRECT`.
    pub const REDIRECT: u32 = 4;
}

/// Helper function ids (`enum bpf_func_id`), as a `call` instruction's imm.
pub mod helper {
    /// `bpf_map_lookup_elem`.
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    /// `bpf_map_update_elem`.
    pub const MAP_UPDATE_ELEM: i32 = 2;
    /// `bpf_map_delete_elem`.
    pub const MAP_DELETE_ELEM: i32 = 3;
    /// `bpf_probe_read`.
    pub const PROBE_READ: i32 = 4;
    /// `bpf_ktime_get_ns`.
    pub const KTIME_GET_NS: i32 = 5;
    /// `bpf_trace_printk`.
    pub const TRACE_PRINTK: i32 = 6;
    /// `bpf_get_prandom_u32`.
    pub const GET_PRANDOM_U32: i32 = 7;
    /// `bpf_get_smp_processor_id`.
    pub const GET_SMP_PROCESSOR_ID: i32 = 8;
    /// `bpf_tail_call`.
    pub const TAIL_CALL: i32 = 12;
    /// `bpf_redirect`.
    pub const REDIRECT: i32 = 23;
    /// `bpf_perf_event_output`.
    pub const PERF_EVENT_OUTPUT: i32 = 25;
    /// `bpf_csum_diff`.
    pub const CSUM_DIFF: i32 = 28;
    /// `bpf_xdp_adjust_head`.
    pub const XDP_ADJUST_HEAD: i32 = 44;
    /// `bpf_redirect_map`.
    pub const REDIRECT_MAP: i32 = 51;
    /// `bpf_xdp_adjust_meta`.
    pub const XDP_ADJUST_META: i32 = 54;
    /// `bpf_xdp_adjust_tail`.
    pub const XDP_ADJUST_TAIL: i32 = 65;
    /// `bpf_fib_lookup`.
    pub const FIB_LOOKUP: i32 = 69;
    /// `bpf_map_push_elem` (QUEUE, STACK).
    pub const MAP_PUSH_ELEM: i32 = 87;
    /// `bpf_map_pop_elem` (QUEUE, STACK).
    pub const MAP_POP_ELEM: i32 = 88;
    /// `bpf_map_peek_elem` (QUEUE, STACK).
    pub const MAP_PEEK_ELEM: i32 = 89;
    /// `bpf_ktime_get_boot_ns`.
    pub const KTIME_GET_BOOT_NS: i32 = 125;
    /// `bpf_loop` (expanded at load into a loop around its callback).
    pub const LOOP: i32 = 181;
    /// bpf_loop's largest iteration count (the kernel's BPF_MAX_LOOPS).
    pub const MAX_LOOPS: i32 = 1 << 23;
    /// The kfunc `bpf_xdp_metadata_rx_timestamp` (cpumapd's own id: the
    /// loader rewrites the object's calls of the kfunc into this helper).
    pub const XDP_RX_TIMESTAMP: i32 = 0x7f00_0001;
    /// The kfunc `bpf_xdp_metadata_rx_hash` (cpumapd's own id).
    pub const XDP_RX_HASH: i32 = 0x7f00_0002;
    /// The kfunc `bpf_xdp_metadata_rx_vlan_tag` (cpumapd's own id).
    pub const XDP_RX_VLAN_TAG: i32 = 0x7f00_0003;
    /// The kfuncs cpumapd provides, by name.
    pub const KFUNCS: [(&str, i32); 3] = [
        ("bpf_xdp_metadata_rx_timestamp", XDP_RX_TIMESTAMP),
        ("bpf_xdp_metadata_rx_hash", XDP_RX_HASH),
        ("bpf_xdp_metadata_rx_vlan_tag", XDP_RX_VLAN_TAG),
    ];

    /// The helper's C name, for messages ("unknown" if none).
    pub fn name(id: i32) -> &'static str {
        match id {
            MAP_LOOKUP_ELEM => "bpf_map_lookup_elem",
            MAP_UPDATE_ELEM => "bpf_map_update_elem",
            MAP_DELETE_ELEM => "bpf_map_delete_elem",
            PROBE_READ => "bpf_probe_read",
            KTIME_GET_NS => "bpf_ktime_get_ns",
            TRACE_PRINTK => "bpf_trace_printk",
            GET_PRANDOM_U32 => "bpf_get_prandom_u32",
            GET_SMP_PROCESSOR_ID => "bpf_get_smp_processor_id",
            TAIL_CALL => "bpf_tail_call",
            REDIRECT => "bpf_redirect",
            PERF_EVENT_OUTPUT => "bpf_perf_event_output",
            CSUM_DIFF => "bpf_csum_diff",
            XDP_ADJUST_HEAD => "bpf_xdp_adjust_head",
            REDIRECT_MAP => "bpf_redirect_map",
            XDP_ADJUST_META => "bpf_xdp_adjust_meta",
            XDP_ADJUST_TAIL => "bpf_xdp_adjust_tail",
            FIB_LOOKUP => "bpf_fib_lookup",
            KTIME_GET_BOOT_NS => "bpf_ktime_get_boot_ns",
            MAP_PUSH_ELEM => "bpf_map_push_elem",
            MAP_POP_ELEM => "bpf_map_pop_elem",
            MAP_PEEK_ELEM => "bpf_map_peek_elem",
            LOOP => "bpf_loop",
            XDP_RX_TIMESTAMP => "bpf_xdp_metadata_rx_timestamp",
            XDP_RX_HASH => "bpf_xdp_metadata_rx_hash",
            XDP_RX_VLAN_TAG => "bpf_xdp_metadata_rx_vlan_tag",
            _ => "unknown",
        }
    }
}

/// Pseudo sources of instructions.
pub mod pseudo {
    /// `BPF_PSEUDO_MAP_FD`: an `ld_imm64` whose imm is a map fd.
    pub const MAP_FD: u8 = 1;
    /// `BPF_PSEUDO_MAP_VALUE`: an `ld_imm64` of the address of a map's
    /// value (element 0) plus the offset in the second half: global data.
    pub const MAP_VALUE: u8 = 2;
    /// `BPF_PSEUDO_CALL`: a `call` to a bpf-to-bpf function.
    pub const CALL: u8 = 1;
    /// `BPF_PSEUDO_FUNC`: an `ld_imm64` of a function's address (a
    /// callback for `bpf_loop` and the like).
    pub const FUNC: u8 = 4;
}

/// Kernel error numbers helpers return (negated).
pub mod errno {
    /// `ENOENT`.
    pub const ENOENT: i64 = 2;
    /// `E2BIG`.
    pub const E2BIG: i64 = 7;
    /// `EEXIST`.
    pub const EEXIST: i64 = 17;
    /// `EINVAL`.
    pub const EINVAL: i64 = 22;
    /// `ENODATA`.
    pub const ENODATA: i64 = 61;
    /// `EOPNOTSUPP`.
    pub const EOPNOTSUPP: i64 = 95;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_every_listed_number() {
        for t in [1, 2, 3, 4, 5, 6, 9, 10, 11, 14, 16, 17, 25, 27] {
            assert_ne!(map_type::name(t), "unknown", "map type {t}");
        }
        assert_eq!(map_type::name(99), "unknown");
        assert_eq!(helper::name(helper::REDIRECT_MAP), "bpf_redirect_map");
        assert_eq!(helper::name(-1), "unknown");
    }
}
