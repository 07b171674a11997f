/* Truncates frames to `snap` bytes (bpf_xdp_adjust_tail), the way a
 * sampler keeps headers only, and keeps a timestamp and a random number of
 * the last frame in .bss (bpf_ktime_get_boot_ns, bpf_get_prandom_u32). */
#include "common.h"

const volatile __u32 snap = 64;
__u64 last_boot_ns;
__u32 last_rand;
__u32 rand_or;

SEC("xdp")
int trim(struct xdp_md *ctx)
{
	const void *data = (const void *)(long)ctx->data;
	const void *end = (const void *)(long)ctx->data_end;
	__u64 len = end - data;
	__u32 r;

	if (len > snap && bpf_xdp_adjust_tail(ctx, (int)snap - (int)len) < 0)
		return XDP_ABORTED;
	last_boot_ns = bpf_ktime_get_boot_ns();
	r = bpf_get_prandom_u32();
	last_rand = r;
	rand_or |= r;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
