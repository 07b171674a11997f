/* A flow sampler in the style of the kernel's samples: per-flow packet and
 * byte counts in a PERCPU_HASH, tunables as libbpf globals (const volatile
 * in .rodata, set before load with --prog-set), a run counter in .bss and
 * a generation in .data. Every sample_every-th IPv4 frame goes to target
 * target_idx; the others pass. Exercises what xdp-bench's objects need
 * beyond cpumapd's own: global data, PERCPU_HASH, max_entries set here. */
#include "common.h"

const volatile __u32 sample_every = 1;
const volatile __u32 target_idx = 0;
__u64 frames_seen;          /* .bss */
__u32 generation = 7;       /* .data */

struct flow {
	__u32 saddr;
	__u32 daddr;
	__u32 proto;
	__u32 pad;
};

struct counts {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct flow);
	__type(value, struct counts);
} flows SEC(".maps");

SEC("xdp")
int sample(struct xdp_md *ctx)
{
	const void *end = (const void *)(long)ctx->data_end;
	const __u8 *p = (const __u8 *)(long)ctx->data;
	struct flow k = {};
	struct counts one, *c;
	__u64 n;

	n = frames_seen;
	frames_seen = n + 1;
	if ((const void *)(p + 34) > end || be16(p + 12) != 0x0800)
		return XDP_PASS;
	k.saddr = *(const __u32 *)(p + 26);
	k.daddr = *(const __u32 *)(p + 30);
	k.proto = p[23];
	c = bpf_map_lookup_elem(&flows, &k);
	if (c) {
		c->packets += 1;
		c->bytes += (const __u8 *)end - p;
	} else {
		one.packets = 1;
		one.bytes = (const __u8 *)end - p;
		bpf_map_update_elem(&flows, &k, &one, BPF_NOEXIST);
	}
	if (sample_every == 0 || n % sample_every != 0)
		return XDP_PASS;
	return to_target(target_idx + generation - 7);
}

char _license[] SEC("license") = "GPL";
