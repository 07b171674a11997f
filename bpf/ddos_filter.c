/* A DDoS-style filter: drop UDP to one port (ddos_config key 0, filled by
 * the operator; 0 means 53) and count the dropped frames per IPv4 source in
 * a HASH map; everything else is spread over the targets by l4-hash, like
 * the built-in mode. Read the counts with: cpumapd ctl prog map dump drops */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);	/* IPv4 source, network order */
	__type(value, __u64);	/* frames dropped */
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);	/* UDP port to drop */
} ddos_config SEC(".maps");

SEC("xdp")
int ddos_filter(struct xdp_md *ctx)
{
	const void *end = (const void *)(long)ctx->data_end;
	const __u8 *p = (const __u8 *)(long)ctx->data;
	struct parsed r = parse(ctx);
	__u32 zero = 0, *port, dport = 53, *count;

	if (!r.ok)
		return XDP_PASS;
	port = bpf_map_lookup_elem(&ddos_config, &zero);
	if (port && *port)
		dport = *port;
	if (r.l3 == 4 && r.proto == 17 && r.has_ports && r.dport == dport) {
		__u32 src;
		__u64 one = 1, *n;

		/* The source address again, from a fixed offset (no VLAN). */
		if ((const void *)(p + 30) > end)
			return XDP_DROP;
		src = le32(p + 26);
		n = bpf_map_lookup_elem(&drops, &src);
		if (n)
			*n += 1;
		else
			bpf_map_update_elem(&drops, &src, &one, BPF_NOEXIST);
		return XDP_DROP;
	}
	count = bpf_map_lookup_elem(&cpus_count, &zero);
	if (!count || *count == 0)
		return XDP_ABORTED;
	return to_target(r.l3 ? super_fast_hash4(r.sum, L4_HASH_INITVAL + r.proto) % *count : 0);
}

char _license[] SEC("license") = "GPL";
