/* A source-prefix firewall: IPv4 frames whose source address falls in a
 * blocked prefix (an LPM_TRIE, filled with `cpumapd ctl prog map update
 * blocked KEY VALUE`, KEY = prefix length (u32 LE) then the address) are
 * dropped and counted in the prefix's value; everything else passes. */
#include "common.h"

struct lpm_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4);
	__type(value, __u64);
} blocked SEC(".maps");

SEC("xdp")
int firewall(struct xdp_md *ctx)
{
	const void *end = (const void *)(long)ctx->data_end;
	const __u8 *p = (const __u8 *)(long)ctx->data;
	struct lpm_v4 k = { .prefixlen = 32 };
	__u64 *hits;

	if ((const void *)(p + 34) > end || be16(p + 12) != 0x0800)
		return XDP_PASS;
	__builtin_memcpy(k.addr, p + 26, 4);
	hits = bpf_map_lookup_elem(&blocked, &k);
	if (!hits)
		return XDP_PASS;
	*hits += 1;
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
