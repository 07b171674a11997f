/* bpf-to-bpf calls as real programs make them (__noinline functions, which
 * clang emits as `call` instructions the kernel verifies frame by frame):
 *
 * - a header cursor on the program's stack, holding packet pointers, that
 *   called functions read, bounds-check and advance (pointers into the
 *   caller's frame, packet pointers spilled there);
 * - calls three deep (classify -> parse_ip -> flow_ports), functions with
 *   stack of their own (a map key), values kept in r6-r9 across calls;
 * - a global function (count), which the kernel verifies on its own
 *   with only its argument types known;
 * - bpf_loop with a callback that reads the frame through pointers in the
 *   caller's frame.
 *
 * Verdicts: runts and cut headers drop, non-IP passes, UDP/TCP port 9
 * drops, port 53 goes to a target by flow hash, the rest passes. Each
 * verdict and each flow's frames are counted. */
#include "common.h"

#define __noinline __attribute__((noinline))

struct cursor {
	const __u8 *pos;
	const void *end;
};

struct flow {
	__u32 saddr, daddr;
	__u16 sport, dport;
	__u8 proto;
	__u8 pad[3];
};

/* Frames per verdict (0..4, index = XDP action). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 5);
	__type(key, __u32);
	__type(value, __u64);
} verdicts SEC(".maps");

/* Frames per flow hash. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2048);
	__type(key, __u32);
	__type(value, __u64);
} flows SEC(".maps");

__u64 deepest;	/* .bss: frames that reached flow_ports */
__u64 loop_sum;	/* .bss: the words bpf_loop's callback summed */
__u64 loop_runs;	/* .bss: bpf_loop's return values, summed */

/* Ethernet and up to two VLAN tags; the EtherType in *type. */
static __noinline int parse_eth(struct cursor *c, __u16 *type)
{
	const __u8 *p = c->pos;

	if ((const void *)(p + 14) > c->end)
		return -1;
	*type = be16(p + 12);
	p += 14;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (*type != 0x8100 && *type != 0x88a8)
			break;
		if ((const void *)(p + 4) > c->end)
			return -1;
		*type = be16(p + 2);
		p += 4;
	}
	c->pos = p;
	return 0;
}

static __noinline int flow_ports(struct cursor *c, struct flow *f)
{
	const __u8 *p = c->pos;

	deepest++;
	if (f->proto != 6 && f->proto != 17)
		return 0;
	if ((const void *)(p + 4) > c->end)
		return -1;
	f->sport = be16(p);
	f->dport = be16(p + 2);
	return 0;
}

static __noinline int parse_ip(struct cursor *c, struct flow *f)
{
	const __u8 *p = c->pos;
	__u32 ihl;

	if ((const void *)(p + 20) > c->end || (p[0] >> 4) != 4)
		return -1;
	ihl = (p[0] & 0x0f) * 4;
	if (ihl < 20)
		return -1;
	f->proto = p[9];
	f->saddr = le32(p + 12);
	f->daddr = le32(p + 16);
	if (ihl > 60 || (const void *)(p + ihl) > c->end)
		return -1;
	c->pos = p + ihl;
	if (be16(p + 6) & 0x3fff)
		return 0; /* a fragment: no ports */
	return flow_ports(c, f);
}

static __noinline __u32 flow_hash(const struct flow *f)
{
	__u32 h = L4_HASH_INITVAL;

	h = super_fast_hash4(f->saddr, h);
	h = super_fast_hash4(f->daddr, h);
	h = super_fast_hash4(((__u32)f->sport << 16) | f->dport, h);
	return super_fast_hash4(f->proto, h);
}

/* One more frame for flow key `key` (a key on this function's own stack). */
static __noinline void bump(__u32 key)
{
	__u64 one = 1, *n;

	n = bpf_map_lookup_elem(&flows, &key);
	if (n)
		*n += 1;
	else
		bpf_map_update_elem(&flows, &key, &one, BPF_NOEXIST);
}

/* Counts flow `h` under four keys, which it keeps in r6-r9 across its
 * calls (so the caller's r6-r9 must survive it). */
static __noinline void count_flow(__u32 h)
{
	__u32 a = h & 0xff, b = (h >> 8) & 0xff, c = (h >> 16) & 0xff, d = h >> 24;

	bump(a);
	bump(0x100 | b);
	bump(0x200 | c);
	bump(0x300 | d);
	bump(0x400 | ((a ^ b ^ c ^ d) & 0xff));
}

static __noinline int classify(struct cursor *c)
{
	struct flow f = {};
	__u32 h;

	if (parse_ip(c, &f) < 0)
		return XDP_DROP;
	h = flow_hash(&f);
	count_flow(h);
	if (f.dport == 9)
		return XDP_DROP;
	if (f.dport == 53 || f.sport == 53)
		return to_target(h);
	return XDP_PASS;
}

struct words {
	const __u8 *data;
	const void *end;
	__u64 sum;
};

/* bpf_loop's callback: adds 16-bit word i of the frame; stops (1) at the
 * frame's end. */
static int add_word(__u32 i, void *arg)
{
	struct words *w = arg;
	const __u8 *p = w->data + (i & 63) * 2;

	if ((const void *)(p + 2) > w->end)
		return 1;
	w->sum += be16(p);
	return 0;
}

/* Global: the kernel verifies it once, for any verdict. */
__noinline int count(__u32 verdict)
{
	__u32 key = verdict;
	__u64 *n = bpf_map_lookup_elem(&verdicts, &key);

	if (!n)
		return 0;
	*n += 1;
	return 1;
}

SEC("xdp")
int calls(struct xdp_md *ctx)
{
	struct cursor c = {
		.pos = (const __u8 *)(long)ctx->data,
		.end = (const void *)(long)ctx->data_end,
	};
	__u16 type = 0;
	int act;

	if (parse_eth(&c, &type) < 0)
		act = XDP_DROP;
	else if (type != 0x0800)
		act = XDP_PASS;
	else
		act = classify(&c);
	count(act);
	/* The frame's first 24 words (fewer in a shorter frame). */
	struct words w = {
		.data = (const __u8 *)(long)ctx->data,
		.end = (const void *)(long)ctx->data_end,
	};
	loop_runs += bpf_loop(24, add_word, &w, 0);
	loop_sum += w.sum;
	return act;
}

char _license[] SEC("license") = "GPL";
