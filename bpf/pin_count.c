/* One map shared by two objects through LIBBPF_PIN_BY_NAME, as programs
 * loaded separately share a map pinned in bpffs: built twice, as
 * pin_rx.o (the RX program, counting into pin_hits[0] and steering to the
 * first target) and pin_remote.o (-DREMOTE: the cpumap entry's program,
 * counting into pin_hits[1]). Each object's `local` map stays its own. */
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
	return XDP_DROP;
}
#else
SEC("xdp")
int pin_rx(struct xdp_md *ctx)
{
	bump(&pin_hits, 0);
	bump(&local, 0);
	return to_target(0);
}
#endif

char _license[] SEC("license") = "GPL";
