/* A cpumap entry's remote program (kernel 5.9's bpf_cpumap_val.bpf_prog):
 * runs on the target lcore before the exception path and drops every
 * second frame it sees (a per-lcore counter), passing the others. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

SEC("xdp/cpumap")
int remote_half(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&seen, &zero);

	if (!n)
		return XDP_ABORTED;
	*n += 1;
	return (*n & 1) ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
