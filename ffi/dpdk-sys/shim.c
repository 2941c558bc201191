#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include "shim.h"

uint16_t flint_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
    return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t flint_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
    return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *flint_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
void flint_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
void *flint_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }
char *flint_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
uint32_t flint_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }
uint16_t flint_pktmbuf_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }
uint16_t flint_pktmbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }
int flint_rte_errno(void) { return rte_errno; }

/* The offload bit for IPv4 header checksums (the same bit on rx and tx). */
uint64_t flint_offload_ipv4_cksum(void) { return RTE_ETH_TX_OFFLOAD_IPV4_CKSUM; }

/* Asks the NIC to fill in the IPv4 header checksum of this mbuf. */
void flint_mbuf_tx_ipv4_cksum(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len)
{
    m->l2_len = l2_len;
    m->l3_len = l3_len;
    m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM;
}

/* What the NIC found of a received IPv4 checksum: 1 good, -1 bad, 0 not checked. */
int flint_mbuf_rx_ip_cksum(const struct rte_mbuf *m)
{
    uint64_t f = m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK;
    if (f == RTE_MBUF_F_RX_IP_CKSUM_GOOD)
        return 1;
    if (f == RTE_MBUF_F_RX_IP_CKSUM_BAD)
        return -1;
    return 0;
}
