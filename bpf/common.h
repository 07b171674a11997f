/* Shared by cpumapd's XDP programs: the maps xdp-bench's redirect-cpu uses
 * (cpus_available, cpus_count, cpus_iterator, cpu_map) and the header walk
 * cpumapd's built-in modes do (src/wire/mod.rs), so both classify every
 * frame the same way. Build: make -C bpf (clang -O2 -g -target bpf). */
#ifndef CPUMAPD_BPF_COMMON_H
#define CPUMAPD_BPF_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#define MAX_CPUS 128

/* Target lcores, filled by cpumapd at load: index -> lcore. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CPUS);
	__type(key, __u32);
	__type(value, __u32);
} cpus_available SEC(".maps");

/* Number of targets, filled by cpumapd at load (key 0). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cpus_count SEC(".maps");

/* The cpumap itself: cpumapd's map, keyed by target lcore. */
struct {
	__uint(type, BPF_MAP_TYPE_CPUMAP);
	__uint(max_entries, MAX_CPUS);
	__type(key, __u32);
	__type(value, struct bpf_cpumap_val);
} cpu_map SEC(".maps");

/* Redirect to target number idx (mod the target count), as the built-in
 * modes' to(idx) does. */
static __always_inline int to_target(__u32 idx)
{
	__u32 zero = 0, *count, *cpu, key;

	count = bpf_map_lookup_elem(&cpus_count, &zero);
	if (!count || *count == 0)
		return XDP_ABORTED;
	key = idx % *count;
	cpu = bpf_map_lookup_elem(&cpus_available, &key);
	if (!cpu)
		return XDP_ABORTED;
	return bpf_redirect_map(&cpu_map, *cpu, 0);
}

static __always_inline __u16 be16(const __u8 *p)
{
	return ((__u16)p[0] << 8) | p[1];
}

/* What src/wire/mod.rs's parse() finds. */
struct parsed {
	int ok;		/* 0: not parseable (runt, 802.3 length, cut VLAN) */
	int l3;		/* 4, 6, or 0 for other / malformed IP */
	__u8 proto;	/* IPv4 protocol / IPv6 next header */
	__u32 sum;	/* l4-hash input: sum of address words (LE) */
	int has_ports;
	__u16 sport, dport;
};

static __always_inline __u32 le32(const __u8 *p)
{
	return (__u32)p[0] | ((__u32)p[1] << 8) | ((__u32)p[2] << 16) | ((__u32)p[3] << 24);
}

static __always_inline void l4_ports(struct parsed *r, const __u8 *l4, const void *end)
{
	if (r->proto == 6 && (const void *)(l4 + 20) <= end) {
		r->has_ports = 1;
	} else if (r->proto == 17 && (const void *)(l4 + 8) <= end) {
		r->has_ports = 1;
	} else {
		return;
	}
	r->sport = be16(l4);
	r->dport = be16(l4 + 2);
}

static __always_inline struct parsed parse(struct xdp_md *ctx)
{
	const void *end = (const void *)(long)ctx->data_end;
	const __u8 *p = (const __u8 *)(long)ctx->data;
	struct parsed r = {};
	__u16 type;

	if ((const void *)(p + 14) > end)
		return r;
	type = be16(p + 12);
	if (type < 0x0600)
		return r;
	p += 14;
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (type != 0x8100 && type != 0x88a8)
			break;
		if ((const void *)(p + 4) > end)
			return r;
		type = be16(p + 2);
		p += 4;
	}
	r.ok = 1;
	if (type == 0x0800) {
		__u32 ihl, total;

		if ((const void *)(p + 20) > end || (p[0] >> 4) != 4)
			return r;
		ihl = (p[0] & 0x0f) * 4;
		total = be16(p + 2);
		if (ihl < 20 || total < ihl)
			return r;
		const __u8 *l4 = p + ihl;
		if ((const void *)l4 > end)
			return r;
		r.l3 = 4;
		r.proto = p[9];
		r.sum = le32(p + 12) + le32(p + 16);
		if ((be16(p + 6) & 0x3fff) == 0)
			l4_ports(&r, l4, end);
	} else if (type == 0x86dd) {
		if ((const void *)(p + 40) > end || (p[0] >> 4) != 6)
			return r;
		r.l3 = 6;
		r.proto = p[6];
#pragma unroll
		for (int w = 0; w < 4; w++)
			r.sum += le32(p + 8 + w * 4) + le32(p + 24 + w * 4);
		l4_ports(&r, p + 40, end);
	}
	return r;
}

/* Paul Hsieh's SuperFastHash of 4 bytes, xdp-bench's hash_func01.h. */
static __always_inline __u32 super_fast_hash4(__u32 data, __u32 hash)
{
	__u32 tmp;

	hash += data & 0xffff;
	tmp = ((data >> 16) << 11) ^ hash;
	hash = (hash << 16) ^ tmp;
	hash += hash >> 11;
	hash ^= hash << 3;
	hash += hash >> 5;
	hash ^= hash << 4;
	hash += hash >> 17;
	hash ^= hash << 25;
	hash += hash >> 6;
	return hash;
}

#define L4_HASH_INITVAL 15485863

static __always_inline __u32 l4_proto_index(const struct parsed *r)
{
	if (!r->l3)
		return 0;
	if (r->proto == 17)
		return 1;
	if (r->proto == 1 || r->proto == 58)
		return 2;
	return 0;
}

#endif
