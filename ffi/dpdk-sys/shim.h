/* C shim for DPDK's static-inline functions and macros, which bindgen
 * cannot bind: each is a one-line wrapper. */
#pragma once
#include <stddef.h>
#include <stdint.h>
struct rte_mbuf;
struct rte_mempool;
uint16_t flint_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t flint_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *flint_pktmbuf_alloc(struct rte_mempool *mp);
void flint_pktmbuf_free(struct rte_mbuf *m);
void *flint_pktmbuf_mtod(struct rte_mbuf *m);
char *flint_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
uint32_t flint_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t flint_pktmbuf_data_len(const struct rte_mbuf *m);
uint16_t flint_pktmbuf_nb_segs(const struct rte_mbuf *m);
int flint_rte_errno(void);
uint64_t flint_offload_ipv4_cksum(void);
void flint_mbuf_tx_ipv4_cksum(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len);
int flint_mbuf_rx_ip_cksum(const struct rte_mbuf *m);
uint64_t flint_offload_multi_segs(void);
int flint_pktmbuf_attach_ext(struct rte_mbuf *m, void *addr, uint64_t iova, uint16_t len,
                             void (*release)(void *), void *owner);
int flint_pktmbuf_chain(struct rte_mbuf *head, struct rte_mbuf *tail);
uint64_t flint_virt2iova(const void *addr);
