/* One map shared by two objects through LIBBPF_PIN_BY_NAME, as programs
 * loaded separately share a map pinned in bpffs: built twice, as
 * pin_rx.o (the RX program, counting into pin_hits[0] and steering to the
 * first target) and pin_remote.o (-DREMOTE: the cpumap entry's program,
 * counting into pin_hits[1]). Each object's `local` map stays its own.
 * pin_seen: what each program saw of where the frame came from
 * (ingress_ifindex, rx_queue_index + 100): [0] [1] the RX program's, [2] [3]
 * the cpumap program's. */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pin_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} local SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pin_seen SEC(".maps");

static __always_inline void seen(struct xdp_md *ctx, __u32 at)
{
	__u32 *v, i = at;

	v = bpf_map_lookup_elem(&pin_seen, &i);
	if (v)
		*v = ctx->ingress_ifindex;
	i = at + 1;
	v = bpf_map_lookup_elem(&pin_seen, &i);
	if (v)
		*v = ctx->rx_queue_index + 100;
}

static __always_inline void bump(void *map, __u32 i)
{
	__u64 *v = bpf_map_lookup_elem(map, &i);

	if (v)
		*v += 1;
}

#ifdef REMOTE
SEC("xdp/cpumap")
int pin_remote(struct xdp_md *ctx)
{
	bump(&pin_hits, 1);
	bump(&local, 0);
	seen(ctx, 2);
	return XDP_DROP;
}
#else
SEC("xdp")
int pin_rx(struct xdp_md *ctx)
{
	bump(&pin_hits, 0);
	bump(&local, 0);
	seen(ctx, 0);
	return to_target(0);
}
#endif

char _license[] SEC("license") = "GPL";
