/* A layer-4 load balancer in the shape Cilium's and Katran's take: a small
 * entry program parses the frame, leaves what it found in the metadata area
 * (bpf_xdp_adjust_meta) and tail-calls the program for its protocol through
 * a PROG_ARRAY; each protocol program reads the metadata, applies its policy
 * and picks a target by hashing the flow. A protocol without a program in
 * the array (ICMP, anything else) falls through and passes. The cpumap
 * entry's program counts what reached the targets in the same object's
 * lb_stats, and reads the RX program's metadata. lb_chain tail-calls itself
 * until the kernel's limit (33 calls) stops it. lb_redirect (a cpumap
 * entry's program) sends every frame out of lb_tx[0], whose egress program
 * lb_egress records the interface and drops UDP/TCP from odd source ports.
 * Loader: jmp_table 0 = lb_tcp, 1 = lb_udp; chain_table 0 = lb_chain;
 * lb_tx 0 = an interface with lb_egress. */
#include "common.h"

enum {
	ST_RX, ST_TCP, ST_UDP, ST_FALLTHROUGH, ST_REMOTE, ST_REMOTE_META,
	ST_EGRESS, ST_EGRESS_IF, ST_MAX
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ST_MAX);
	__type(key, __u32);
	__type(value, __u64);
} lb_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} jmp_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} chain_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} lb_tx SEC(".maps");

/* What the entry program found, in front of the frame. */
struct lb_meta {
	__u32 hash;
	__u16 dport;
	__u8 proto;
	__u8 magic;
};

#define LB_MAGIC 0x4c

__u64 chain_runs;	/* .bss: lb_chain runs, over every frame */

static __always_inline void count(__u32 i)
{
	__u64 *v = bpf_map_lookup_elem(&lb_stats, &i);

	if (v)
		*v += 1;
}

SEC("xdp")
int lb_entry(struct xdp_md *ctx)
{
	struct parsed r = parse(ctx);
	struct lb_meta *m;

	count(ST_RX);
	if (!r.ok || !r.l3)
		return XDP_PASS;
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(*m)))
		return XDP_ABORTED;
	m = (void *)(long)ctx->data_meta;
	if ((void *)(m + 1) > (void *)(long)ctx->data)
		return XDP_ABORTED;
	m->hash = super_fast_hash4(r.sum ^ (((__u32)r.sport << 16) | r.dport), L4_HASH_INITVAL);
	m->dport = r.dport;
	m->proto = r.proto;
	m->magic = LB_MAGIC;
	bpf_tail_call(ctx, &jmp_table, r.proto == 6 ? 0 : r.proto == 17 ? 1 : 2);
	count(ST_FALLTHROUGH);
	return XDP_PASS;
}

static __always_inline struct lb_meta *meta(struct xdp_md *ctx)
{
	struct lb_meta *m = (void *)(long)ctx->data_meta;

	if ((void *)(m + 1) > (void *)(long)ctx->data)
		return 0;
	return m;
}

SEC("xdp")
int lb_tcp(struct xdp_md *ctx)
{
	struct lb_meta *m = meta(ctx);

	if (!m)
		return XDP_ABORTED;
	count(ST_TCP);
	if (m->dport == 23)	/* no telnet */
		return XDP_DROP;
	return to_target(m->hash);
}

SEC("xdp")
int lb_udp(struct xdp_md *ctx)
{
	struct lb_meta *m = meta(ctx);

	if (!m)
		return XDP_ABORTED;
	count(ST_UDP);
	if (m->dport == 53)	/* DNS stays on the first target */
		return to_target(0);
	return to_target(m->hash >> 1);
}

SEC("xdp")
int lb_chain(struct xdp_md *ctx)
{
	chain_runs++;
	bpf_tail_call(ctx, &chain_table, 0);
	return XDP_PASS;
}

SEC("xdp/cpumap")
int lb_remote(struct xdp_md *ctx)
{
	struct lb_meta *m = meta(ctx);

	count(ST_REMOTE);
	if (m && m->magic == LB_MAGIC)
		count(ST_REMOTE_META);
	return XDP_PASS;
}

SEC("xdp/cpumap")
int lb_redirect(struct xdp_md *ctx)
{
	count(ST_REMOTE);
	return bpf_redirect_map(&lb_tx, 0, 0);
}

SEC("xdp/devmap")
int lb_egress(struct xdp_md *ctx)
{
	struct parsed r = parse(ctx);
	__u32 i = ST_EGRESS_IF;
	__u64 *v = bpf_map_lookup_elem(&lb_stats, &i);

	if (v)
		*v = ctx->egress_ifindex;
	count(ST_EGRESS);
	if (r.has_ports && (r.sport & 1))
		return XDP_DROP;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
