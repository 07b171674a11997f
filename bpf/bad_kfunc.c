/* Calls a kfunc cpumapd does not provide (bpf_dynptr_from_xdp): the load
 * must fail naming it. */
#include "common.h"

struct bpf_dynptr;
extern int bpf_dynptr_from_xdp(struct xdp_md *xdp, __u64 flags, struct bpf_dynptr *ptr) __ksym;

SEC("xdp")
int bad_kfunc(struct xdp_md *ctx)
{
	__u64 d[2] = {};

	if (bpf_dynptr_from_xdp(ctx, 0, (struct bpf_dynptr *)d))
		return XDP_DROP;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
