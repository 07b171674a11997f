/* cpumapd's view of DPDK: the headers bindgen reads, plus exported
 * wrappers for DPDK's static-inline fast-path functions (shim.c). */
#ifndef CPUMAPD_DPDK_SHIM_H
#define CPUMAPD_DPDK_SHIM_H

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_dev.h>
#include <rte_cycles.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_ethdev.h>

int cpumapd_errno(void);
unsigned cpumapd_lcore_id(void);
/* The CPUs the EAL pinned `lcore` to (its --lcores cpuset), written to
 * cpus[0..max); returns how many there are (may exceed max). */
int cpumapd_lcore_cpus(unsigned lcore, uint32_t *cpus, int max);
uint64_t cpumapd_tsc(void);

uint16_t cpumapd_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t cpumapd_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);

int cpumapd_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **pkts, unsigned n);
struct rte_mbuf *cpumapd_pktmbuf_alloc(struct rte_mempool *mp);
void cpumapd_pktmbuf_free(struct rte_mbuf *m);
uint16_t cpumapd_mempool_priv_size(const struct rte_mempool *mp);

/* RSS over IP addresses and L4 ports (the RTE_ETH_RSS_* macros combine
 * 64-bit constants bindgen does not evaluate). */
uint64_t cpumapd_rss_ip_l4(void);
uint64_t cpumapd_tx_offload_mbuf_fast_free(void);
uint64_t cpumapd_tx_offload_l4_cksum(void);
/* Asks the driver for the TCP/UDP checksum of m: the L2/L3/L4 header
 * lengths and the TX flags (the checksum field holds the pseudo-header
 * sum). net_tap copies l2+l3+l4_len bytes to patch the checksum in, so
 * l4_len must be the L4 header's. */
void cpumapd_mbuf_tx_l4_cksum(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len, uint16_t l4_len, int ipv6, int tcp);

/* TCP segmentation offload on transmit, and chained mbufs (its input). */
uint64_t cpumapd_tx_offload_tcp_tso(void);
uint64_t cpumapd_tx_offload_multi_segs(void);
/* Appends tail to head's chain after dropping tail's first skip bytes (a
 * GRO member's headers): 0, or a negative errno (skip past tail's first
 * segment, too many segments) with both mbufs unchanged. */
int cpumapd_mbuf_chain_payload(struct rte_mbuf *head, struct rte_mbuf *tail, uint16_t skip);
/* Asks the driver to segment m as TCP with segment size mss: L2/L3/L4
 * header lengths and the TX flags; the TCP checksum field holds the
 * pseudo-header sum without the length (DPDK's convention for TSO). */
void cpumapd_mbuf_tx_tso(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len, uint16_t l4_len, int ipv6, uint16_t mss);
uint16_t cpumapd_mbuf_tso_segsz(const struct rte_mbuf *m);
/* rte_pktmbuf_read: len bytes from off across the chain (into buf when
 * they are not contiguous), or NULL past the packet's end. */
const void *cpumapd_mbuf_read(const struct rte_mbuf *m, uint32_t off, uint32_t len, void *buf);

/* rte_ring, for the peer benchmarks (MP enqueue, SC dequeue). */
unsigned cpumapd_ring_mp_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n);
unsigned cpumapd_ring_sc_dequeue_burst(struct rte_ring *r, void **objs, unsigned n);
unsigned cpumapd_ring_sp_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n);

#endif
