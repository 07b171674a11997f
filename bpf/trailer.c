/* Tags every frame with a 6-byte trailer, a 32-bit sequence number and the
 * frame's original length, the way in-band telemetry and capture taps mark
 * frames: bpf_xdp_adjust_tail growing the frame into its tailroom. Frames
 * over 1400 bytes pass untagged; a growth the frame has no room for is
 * counted in .bss and the frame passes as it was. */
#include "common.h"

__u32 seq;		/* .bss: frames tagged */
__u64 no_room;		/* .bss: growths refused */

SEC("xdp")
int trailer(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;
	__u8 *data, *t;
	void *end;

	if (len > 1400)
		return XDP_PASS;
	if (bpf_xdp_adjust_tail(ctx, 6) < 0) {
		no_room++;
		return XDP_PASS;
	}
	data = (__u8 *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	/* The bound the verifier needs, kept from clang's folding (it knows
	 * len <= 1400, the verifiers do not carry that through the copy). */
	asm volatile("" : "+r"(len));
	t = data + (len & 0x7ff);
	if ((void *)(t + 6) > end)
		return XDP_ABORTED;
	seq++;
	t[0] = seq >> 24;
	t[1] = seq >> 16;
	t[2] = seq >> 8;
	t[3] = seq;
	t[4] = len >> 8;
	t[5] = len;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
