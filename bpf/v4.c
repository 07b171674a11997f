/* BPF ISA v4 (clang -mcpu=v4, kernel 6.6+): signed division and modulo
 * (64 and 32 bits, by 0, -1 and the minimum among the divisors),
 * sign-extending loads (ldsx 1/2/4 bytes) and moves (movsx 8/16/32 bits)
 * and byte swaps (bswap 16/32/64). Every result is written over the
 * frame's first 64 bytes, so tests/kernel_diff.rs compares each one with
 * the kernel's, frame by frame; the action depends on them too. */
#include "common.h"

/* Divisors and dividends that the ISA defines specially. */
static const volatile __s64 edge[8] = {
	0, -1, 1, -0x7fffffffffffffffLL - 1, 0x7fffffffffffffffLL,
	-0x7fffffffLL - 1, -7, 7,
};

SEC("xdp")
int v4(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 out[8];

	if (data + 64 > end)
		return XDP_DROP;
	/* ldsx: 1, 2 and 4 bytes from the packet. */
	__s64 b = *(volatile __s8 *)(data + 13);
	__s64 h = *(volatile __s16 *)(data + 20);
	__s64 w = *(volatile __s32 *)(data + 26);
	__u64 x = *(volatile __u64 *)(data + 30);
	__s64 e = edge[*(__u8 *)(data + 23) & 7];
	__s64 f = edge[*(__u8 *)(data + 35) & 7];
	__s32 e32 = (__s32)e, w32 = (__s32)w;

	out[0] = (__s64)x / (e ? e : b);          /* sdiv64; b may be 0 */
	out[1] = (__s64)x % f;                   /* smod64 by an edge */
	out[2] = (__u32)(w32 / e32);             /* sdiv32 */
	out[3] = (__u32)(w32 % (__s32)f);        /* smod32 */
	out[4] = e / (f | 1) + h;                /* the minimum by -1 */
	/* movsx: 8, 16 and 32 bits of a register. */
	out[5] = (__s64)(__s8)x + ((__s64)(__s16)(x >> 8) << 8) + ((__s64)(__s32)(x >> 3) << 16);
	/* bswap 16/32/64. */
	out[6] = __builtin_bswap64(x) ^ __builtin_bswap32((__u32)w) ^ __builtin_bswap16((__u16)h);
	out[7] = b * h - w;
	__builtin_memcpy(data, out, sizeof(out));
	return (out[0] ^ out[1] ^ out[2] ^ out[3]) & 1 ? XDP_PASS : XDP_TX;
}

char _license[] SEC("license") = "GPL";
