/* The eight xdp-bench redirect-cpu modes as XDP programs for cpumapd, one
 * per function (pick with --prog bpf/redirect_cpu.o:NAME). Each classifies
 * exactly as the built-in mode of the same name (tests check it frame by
 * frame over real captures). */
#include "common.h"

/* Per-lcore round-robin position (xdp-bench's cpus_iterator). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cpus_iterator SEC(".maps");

SEC("xdp")
int no_touch(struct xdp_md *ctx)
{
	return to_target(0);
}

SEC("xdp")
int touch(struct xdp_md *ctx)
{
	const void *end = (const void *)(long)ctx->data_end;
	const __u8 *p = (const __u8 *)(long)ctx->data;

	if ((const void *)(p + 14) > end)
		return XDP_ABORTED;
	if (be16(p + 12) < 0x0600)
		return XDP_DROP;
	return to_target(0);
}

SEC("xdp")
int round_robin(struct xdp_md *ctx)
{
	__u32 zero = 0, *it, *count, cur;

	it = bpf_map_lookup_elem(&cpus_iterator, &zero);
	count = bpf_map_lookup_elem(&cpus_count, &zero);
	if (!it || !count)
		return XDP_ABORTED;
	cur = *it;
	*it = cur + 1 >= *count ? 0 : cur + 1;
	return to_target(cur);
}

SEC("xdp")
int l4_proto(struct xdp_md *ctx)
{
	struct parsed r = parse(ctx);

	if (!r.ok)
		return XDP_PASS;
	return to_target(l4_proto_index(&r));
}

SEC("xdp")
int l4_filter(struct xdp_md *ctx)
{
	struct parsed r = parse(ctx);

	if (!r.ok)
		return XDP_PASS;
	if (r.l3 && r.proto == 17 && r.has_ports && r.dport == 9)
		return XDP_DROP;
	return to_target(l4_proto_index(&r));
}

SEC("xdp")
int l4_hash(struct xdp_md *ctx)
{
	struct parsed r = parse(ctx);
	__u32 zero = 0, *count, h = 0;

	if (!r.ok)
		return XDP_PASS;
	if (r.l3)
		h = super_fast_hash4(r.sum, L4_HASH_INITVAL + r.proto);
	count = bpf_map_lookup_elem(&cpus_count, &zero);
	if (!count || *count == 0)
		return XDP_ABORTED;
	return to_target(h % *count);
}

SEC("xdp")
int l4_sport(struct xdp_md *ctx)
{
	struct parsed r = parse(ctx);

	if (!r.ok)
		return XDP_PASS;
	return to_target(r.has_ports ? r.sport : 0);
}

SEC("xdp")
int l4_dport(struct xdp_md *ctx)
{
	struct parsed r = parse(ctx);

	if (!r.ok)
		return XDP_PASS;
	return to_target(r.has_ports ? r.dport : 0);
}

char _license[] SEC("license") = "GPL";
