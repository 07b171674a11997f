/* A connection table in the style of XDP load balancers and firewalls:
 * IPv4 TCP/UDP flows in an LRU_HASH keyed by the 5-tuple (packets, bytes,
 * the TCP flags seen), a flow deleted when a FIN or RST closes it, and
 * per-source counts in an LRU_PERCPU_HASH. A small LRU_HASH of recent
 * sources (16 entries) is kept full by eviction: an LRU update never
 * fails for lack of room, which `update_failures` (.bss) counts.
 * New flows go to target (sport ^ dport) % targets; the rest pass. */
#include "common.h"

__u64 update_failures;  /* .bss */
__u64 closed;           /* .bss */

struct tuple {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u32 proto;
};

struct conn {
	__u64 packets;
	__u64 bytes;
	__u32 flags;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tuple);
	__type(value, struct conn);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} per_source SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} recent SEC(".maps");

SEC("xdp")
int track(struct xdp_md *ctx)
{
	const void *end = (const void *)(long)ctx->data_end;
	const __u8 *p = (const __u8 *)(long)ctx->data;
	const __u8 *l4;
	struct tuple t = {};
	struct conn fresh = {}, *c;
	__u64 one = 1, *n;
	__u32 ihl, tcp_flags = 0;

	if ((const void *)(p + 34) > end || be16(p + 12) != 0x0800)
		return XDP_PASS;
	ihl = (p[14] & 0x0f) * 4;
	if (ihl < 20 || (be16(p + 20) & 0x3fff) != 0)
		return XDP_PASS; /* a bad header or a fragment */
	t.proto = p[23];
	if (t.proto != 6 && t.proto != 17)
		return XDP_PASS;
	l4 = p + 14 + ihl;
	if ((const void *)(l4 + 14) > end)
		return XDP_PASS;
	t.saddr = *(const __u32 *)(p + 26);
	t.daddr = *(const __u32 *)(p + 30);
	t.sport = *(const __u16 *)l4;
	t.dport = *(const __u16 *)(l4 + 2);
	if (t.proto == 6)
		tcp_flags = l4[13];

	n = bpf_map_lookup_elem(&per_source, &t.saddr);
	if (n)
		*n += 1;
	else if (bpf_map_update_elem(&per_source, &t.saddr, &one, BPF_NOEXIST))
		update_failures++;
	if (bpf_map_update_elem(&recent, &t.saddr, &one, BPF_ANY))
		update_failures++;

	c = bpf_map_lookup_elem(&conns, &t);
	if (c) {
		c->packets += 1;
		c->bytes += (const __u8 *)end - p;
		c->flags |= tcp_flags;
		if (tcp_flags & 0x05) { /* FIN or RST: the connection is over */
			bpf_map_delete_elem(&conns, &t);
			closed++;
		}
		return XDP_PASS;
	}
	fresh.packets = 1;
	fresh.bytes = (const __u8 *)end - p;
	fresh.flags = tcp_flags;
	if (bpf_map_update_elem(&conns, &t, &fresh, BPF_NOEXIST))
		update_failures++;
	return to_target(t.sport ^ t.dport);
}

char _license[] SEC("license") = "GPL";
