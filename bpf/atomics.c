/* Atomic read-modify-writes on map values, the way real programs count
 * (__sync_* builtins: BPF_ATOMIC add/or/and/xor, their fetch forms, xchg
 * and cmpxchg, on 8 and 4 bytes). Built with -mcpu=v3 for the fetch forms.
 * tests/kernel_diff.rs checks the counters against the kernel's. */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

SEC("xdp")
int count(struct xdp_md *ctx)
{
	const void *data = (const void *)(long)ctx->data;
	const void *end = (const void *)(long)ctx->data_end;
	__u64 len = end - data;
	__u32 k0 = 0, k1 = 1, k2 = 2, k3 = 3;
	__u64 *a = bpf_map_lookup_elem(&counters, &k0);
	__u64 *b = bpf_map_lookup_elem(&counters, &k1);
	__u64 *c = bpf_map_lookup_elem(&counters, &k2);
	__u64 *d = bpf_map_lookup_elem(&counters, &k3);
	__u64 old, prev, seen;
	__u32 *half;

	if (!a || !b || !c || !d)
		return XDP_ABORTED;
	__sync_fetch_and_add(a, 1);
	old = __sync_fetch_and_add(b, len);
	__sync_fetch_and_or(c, 1ULL << (len & 63));
	prev = __sync_lock_test_and_set(d, len);
	seen = __sync_val_compare_and_swap(a, 5, 100);
	__sync_fetch_and_xor(c, old & 0xff);
	__sync_fetch_and_and(b, ~0ULL >> 1);
	half = (__u32 *)d;
	__sync_fetch_and_add(half, 3);
	old = __sync_fetch_and_or(half + 1, (__u32)seen);
	if ((prev ^ old) & 1)
		return XDP_PASS;
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
