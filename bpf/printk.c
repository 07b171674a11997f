/* bpf_trace_printk as programs use it (bpf_printk, the format in .rodata):
 * one line per frame with its length, protocol and destination port. The
 * helper's return values (the formatted length, computed alike by the
 * kernel and by cpumapd) are summed in .bss, and a format both refuse
 * (-EINVAL) is counted there. Every frame passes. */
#include "common.h"

__u64 printed;	/* .bss: the sum of the lengths returned */
__u64 refused;	/* .bss: formats refused */

SEC("xdp")
int trace(struct xdp_md *ctx)
{
	struct parsed r = parse(ctx);
	__u32 len = ctx->data_end - ctx->data;
	long n;

	n = bpf_printk("len %5u proto %-3u dport %04x", len, r.proto, r.dport);
	if (n > 0)
		printed += n;
	n = bpf_printk("signed %d %lld%%", -(int)len, -(long long)r.sport);
	if (n > 0)
		printed += n;
	if (bpf_printk("bad %q", len) < 0)
		refused++;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
