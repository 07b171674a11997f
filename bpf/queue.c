/* QUEUE and STACK maps as programs use them: a queue of the last four
 * frame lengths (pushed with BPF_EXIST, so the oldest makes room) and a
 * stack of tokens: each frame spends the newest (popped into a variable
 * never written before, as the kernel allows) and peeks at the next; with
 * none left the program refills three (a fourth does not fit) and drops
 * the frame. .bss counts what happened. */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 4);
	__type(value, __u32);
} recent SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK);
	__uint(max_entries, 3);
	__type(value, __u64);
} tokens SEC(".maps");

__u64 spent, peek_sum, refills, full;	/* .bss */

static __always_inline void refill(__u64 t)
{
	if (bpf_map_push_elem(&tokens, &t, BPF_ANY) != 0)
		full++;
}

SEC("xdp")
int queue_stack(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;
	__u64 tok, top;

	bpf_map_push_elem(&recent, &len, BPF_EXIST);
	if (bpf_map_pop_elem(&tokens, &tok) == 0) {
		spent += tok;
		if (bpf_map_peek_elem(&tokens, &top) == 0)
			peek_sum += top;
		return XDP_PASS;
	}
	refills++;
	/* Written out: cpumapd's verifier does not follow a loop counter kept
	 * in a stack slot (as one is whose address goes to a helper). */
	refill(1);
	refill(2);
	refill(3);
	refill(4);
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
