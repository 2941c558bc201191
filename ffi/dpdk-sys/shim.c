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

/* The offload bit for transmitting chained (multi-segment) mbufs. */
uint64_t flint_offload_multi_segs(void) { return RTE_ETH_TX_OFFLOAD_MULTI_SEGS; }

/* An external buffer's shared info, with the owner's release hook. */
struct flint_ext {
    struct rte_mbuf_ext_shared_info sh;
    void (*release)(void *);
    void *owner;
};

static void flint_ext_free(void *addr, void *opaque)
{
    struct flint_ext *e = opaque;
    (void)addr;
    e->release(e->owner);
}

/* Makes `m` carry `len` bytes at `addr` (not copied): when the last mbuf
 * referring to them is freed, `release(owner)` is called. The shared info
 * lives in `m`'s own data room, unused while the mbuf carries an external
 * buffer and still `m`'s when DPDK calls the hook on detaching it, so
 * attaching allocates nothing. Returns 0, or -1 when `m`'s room is too
 * small to hold it (nothing attached). */
int flint_pktmbuf_attach_ext(struct rte_mbuf *m, void *addr, uint64_t iova, uint16_t len,
                             void (*release)(void *), void *owner)
{
    if (RTE_MBUF_HAS_EXTBUF(m) || m->buf_len < sizeof(struct flint_ext))
        return -1;
    struct flint_ext *e = (struct flint_ext *)RTE_PTR_ALIGN_CEIL(m->buf_addr, 8);
    e->sh.free_cb = flint_ext_free;
    e->sh.fcb_opaque = e;
    rte_mbuf_ext_refcnt_set(&e->sh, 1);
    e->release = release;
    e->owner = owner;
    rte_pktmbuf_attach_extbuf(m, addr, iova, len, &e->sh);
    m->data_len = len;
    m->pkt_len = len;
    return 0;
}

/* Chains `tail` after `head`; 0, or a negative errno (too many segments). */
int flint_pktmbuf_chain(struct rte_mbuf *head, struct rte_mbuf *tail)
{
    return rte_pktmbuf_chain(head, tail);
}

/* The IO address of `addr` (its virtual address in IOVA-as-VA mode). */
uint64_t flint_virt2iova(const void *addr) { return rte_mem_virt2iova(addr); }
