/* The XDP metadata kfuncs, as a program reads what the NIC knew of a
 * frame: its hash (steering on it when there is one), its stripped VLAN
 * tag and its timestamp. The return values and the last hash are kept in
 * .bss; frames with a hash go to a target by it, the rest pass. */
#include "common.h"

/* The kernel's (include/net/xdp.h, not UAPI). */
enum xdp_rss_hash_type {
	XDP_RSS_TYPE_NONE = 0,
};

extern int bpf_xdp_metadata_rx_hash(const struct xdp_md *ctx, __u32 *hash,
				    enum xdp_rss_hash_type *rss_type) __ksym;
extern int bpf_xdp_metadata_rx_vlan_tag(const struct xdp_md *ctx, __be16 *vlan_proto,
					__u16 *vlan_tci) __ksym;
extern int bpf_xdp_metadata_rx_timestamp(const struct xdp_md *ctx, __u64 *timestamp) __ksym;

__s64 hash_ret, vlan_ret, ts_ret;	/* .bss: the last return values */
__u32 last_hash;			/* .bss: the last hash given */
__u64 hashed;				/* .bss: frames with a hash */

SEC("xdp")
int rx_meta(struct xdp_md *ctx)
{
	enum xdp_rss_hash_type type = XDP_RSS_TYPE_NONE;
	__u32 hash = 0;
	__be16 proto = 0;
	__u16 tci = 0;
	__u64 ts = 0;

	ts_ret = bpf_xdp_metadata_rx_timestamp(ctx, &ts);
	vlan_ret = bpf_xdp_metadata_rx_vlan_tag(ctx, &proto, &tci);
	hash_ret = bpf_xdp_metadata_rx_hash(ctx, &hash, &type);
	if (hash_ret == 0) {
		last_hash = hash;
		hashed++;
		return to_target(hash);
	}
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
