/* What Flint binds from DPDK (kept narrow: packed and bitfield structs
 * elsewhere in rte_* break a full binding). */
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_version.h>
#include "shim.h"
