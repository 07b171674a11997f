/* One object, two programs: pass_all uses no map; log_events writes each
 * frame's length into a RINGBUF, a map type cpumapd does not have. As
 * libbpf and the kernel judge each program, pass_all must load and
 * log_events be refused naming the map (tests/ebpf.rs). */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

SEC("xdp")
int pass_all(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int log_events(struct xdp_md *ctx)
{
	__u64 len = ctx->data_end - ctx->data;

	bpf_ringbuf_output(&events, &len, sizeof(len), 0);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
