/* cpu_set_t (rte_cpuset_t) and its macros are GNU extensions. */
#define _GNU_SOURCE
/* Exported wrappers for DPDK's static-inline functions, so Rust can call
 * them. Each is one call; none adds state. */
#include "shim.h"

int cpumapd_errno(void) { return rte_errno; }

unsigned cpumapd_lcore_id(void) { return rte_lcore_id(); }

int cpumapd_lcore_cpus(unsigned lcore, uint32_t *cpus, int max)
{
	rte_cpuset_t set = rte_lcore_cpuset(lcore);
	int n = 0;
	for (int c = 0; c < CPU_SETSIZE; c++) {
		if (!CPU_ISSET(c, &set))
			continue;
		if (n < max)
			cpus[n] = (uint32_t)c;
		n++;
	}
	return n;
}

uint64_t cpumapd_tsc(void) { return rte_get_tsc_cycles(); }

uint16_t cpumapd_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t cpumapd_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

int cpumapd_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **pkts, unsigned n)
{
	return rte_pktmbuf_alloc_bulk(mp, pkts, n);
}

struct rte_mbuf *cpumapd_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

void cpumapd_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

uint16_t cpumapd_mempool_priv_size(const struct rte_mempool *mp)
{
	return rte_pktmbuf_priv_size((struct rte_mempool *)mp);
}

unsigned cpumapd_ring_mp_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n)
{
	return rte_ring_mp_enqueue_burst(r, objs, n, NULL);
}

unsigned cpumapd_ring_sp_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n)
{
	return rte_ring_sp_enqueue_burst(r, objs, n, NULL);
}

unsigned cpumapd_ring_sc_dequeue_burst(struct rte_ring *r, void **objs, unsigned n)
{
	return rte_ring_sc_dequeue_burst(r, objs, n, NULL);
}

uint64_t cpumapd_rss_ip_l4(void) { return RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP; }

uint64_t cpumapd_tx_offload_mbuf_fast_free(void) { return RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE; }

uint64_t cpumapd_tx_offload_l4_cksum(void) { return RTE_ETH_TX_OFFLOAD_TCP_CKSUM | RTE_ETH_TX_OFFLOAD_UDP_CKSUM; }

void cpumapd_mbuf_tx_l4_cksum(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len, uint16_t l4_len, int ipv6, int tcp)
{
	m->l2_len = l2_len;
	m->l3_len = l3_len;
	m->l4_len = l4_len;
	m->ol_flags &= ~(RTE_MBUF_F_TX_L4_MASK | RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IPV6);
	m->ol_flags |= (ipv6 ? RTE_MBUF_F_TX_IPV6 : RTE_MBUF_F_TX_IPV4) |
		       (tcp ? RTE_MBUF_F_TX_TCP_CKSUM : RTE_MBUF_F_TX_UDP_CKSUM);
}

uint64_t cpumapd_tx_offload_tcp_tso(void) { return RTE_ETH_TX_OFFLOAD_TCP_TSO; }

uint64_t cpumapd_tx_offload_multi_segs(void) { return RTE_ETH_TX_OFFLOAD_MULTI_SEGS; }

int cpumapd_mbuf_chain_payload(struct rte_mbuf *head, struct rte_mbuf *tail, uint16_t skip)
{
	if (skip > tail->data_len)
		return -EINVAL;
	if (head->nb_segs + tail->nb_segs > RTE_MBUF_MAX_NB_SEGS)
		return -EOVERFLOW;
	rte_pktmbuf_adj(tail, skip);
	return rte_pktmbuf_chain(head, tail);
}

void cpumapd_mbuf_tx_tso(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len, uint16_t l4_len, int ipv6, uint16_t mss)
{
	m->l2_len = l2_len;
	m->l3_len = l3_len;
	m->l4_len = l4_len;
	m->tso_segsz = mss;
	m->ol_flags &= ~(RTE_MBUF_F_TX_L4_MASK | RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IPV6 |
			 RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_TX_UDP_SEG);
	m->ol_flags |= RTE_MBUF_F_TX_TCP_SEG | (ipv6 ? RTE_MBUF_F_TX_IPV6 : RTE_MBUF_F_TX_IPV4);
}

uint16_t cpumapd_mbuf_tso_segsz(const struct rte_mbuf *m) { return m->tso_segsz; }

const void *cpumapd_mbuf_read(const struct rte_mbuf *m, uint32_t off, uint32_t len, void *buf)
{
	return rte_pktmbuf_read(m, off, len, buf);
}
