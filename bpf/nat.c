/* Destination NAT in the style of XDP load balancers: every IPv4 TCP/UDP
 * frame's destination moves into 10.99.0.0/16 (its low 16 bits kept), with
 * the IP header checksum and the TCP/UDP checksum updated incrementally by
 * bpf_csum_diff (old and new address from the stack, the old checksum as
 * the seed), as Katran and Cilium do. The raw bpf_csum_diff results go
 * into .bss, so a difference from the kernel's helper shows even where a
 * fold would hide it. Rewritten frames go to target 0; the rest pass. */
#include "common.h"
#include <bpf/bpf_endian.h>

__u64 raw_mix;        /* .bss: every raw bpf_csum_diff result, rotated in */
__u64 raw_sum;        /* .bss: and added */
__u64 rewritten;      /* .bss */

static __always_inline __u16 fold(__u64 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

static __always_inline __u64 note(__s64 r)
{
	raw_mix = ((raw_mix << 7) | (raw_mix >> 57)) ^ (__u64)r;
	raw_sum += (__u64)r;
	return (__u64)r;
}

SEC("xdp")
int dnat(struct xdp_md *ctx)
{
	void *end = (void *)(long)ctx->data_end;
	__u8 *p = (__u8 *)(long)ctx->data;
	__u32 old_addr, new_addr, ihl;
	__u16 *ipsum, *l4sum;
	__u8 *l4;
	__u64 s;

	if ((void *)(p + 34) > end || be16(p + 12) != 0x0800)
		return XDP_PASS;
	ihl = (p[14] & 0x0f) * 4;
	if (ihl < 20 || (p[23] != 6 && p[23] != 17) || (be16(p + 20) & 0x3fff))
		return XDP_PASS;
	l4 = p + 14 + ihl;
	if ((void *)(l4 + 20) > end)
		return XDP_PASS;
	old_addr = *(__u32 *)(p + 30);
	new_addr = (old_addr & bpf_htonl(0x0000ffff)) | bpf_htonl(0x0a630000);
	ipsum = (__u16 *)(p + 24);
	s = note(bpf_csum_diff(&old_addr, 4, &new_addr, 4, ~*ipsum & 0xffff));
	*ipsum = fold(s);
	l4sum = (__u16 *)(l4 + (p[23] == 6 ? 16 : 6));
	if (p[23] == 6 || *l4sum != 0) {
		s = note(bpf_csum_diff(&old_addr, 4, &new_addr, 4, ~*l4sum & 0xffff));
		*l4sum = fold(s);
		if (p[23] == 17 && *l4sum == 0)
			*l4sum = 0xffff;
	}
	*(__u32 *)(p + 30) = new_addr;
	/* Pushing and pulling: the whole new address as data, then removed. */
	note(bpf_csum_diff(0, 0, &new_addr, 4, 0));
	note(bpf_csum_diff(&new_addr, 4, 0, 0, 0x1234));
	rewritten++;
	return to_target(0);
}

char _license[] SEC("license") = "GPL";
