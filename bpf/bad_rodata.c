/* Refused at load, by cpumapd's verifier as by the kernel's: a program may
 * not write its .rodata (libbpf freezes it; BPF_F_RDONLY_PROG). */
#include "common.h"

const volatile __u32 sample_every = 1;

SEC("xdp")
int writes_rodata(struct xdp_md *ctx)
{
	*(volatile __u32 *)&sample_every = 2;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
