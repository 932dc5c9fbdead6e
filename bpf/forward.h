/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Next hop and transmission. The next hop comes from the kernel's own
 * routes and neighbours (bpf_fib_lookup): no MAC is ever configured by hand.
 * Out of the ingress port: XDP_TX; out of another: bpf_redirect_map through
 * tx_ports, which lists the ports the control plane allows.
 */
#ifndef LETHE_FORWARD_H
#define LETHE_FORWARD_H

#include "parse.h"
#include "maps.h"
#include "hash.h"

#define NEXTHOP_OK LETHE_R_MAX

/*
 * Route towards the backend. tot_len is the L3 length the packet will have
 * on the wire (the kernel checks it against the path MTU). With want_src the
 * kernel also picks the source address it would use towards the backend:
 * the outer source address of encapsulated packets.
 */
static __always_inline enum lethe_reason nexthop(struct xdp_md *ctx, const struct packet *p,
						 const __u8 *dst, __u8 family, __u32 tot_len,
						 int want_src, struct bpf_fib_lookup *fib)
{
	__u32 flags = want_src ? BPF_FIB_LOOKUP_SRC : 0;
	long rc;

	__builtin_memset(fib, 0, sizeof(*fib));
	fib->ifindex = p->ingress;
	fib->l4_protocol = p->proto;
	fib->sport = p->sport;
	fib->dport = p->dport;
	fib->tot_len = tot_len;
	/* The source stays zero: the route to a backend must not depend on
	 * the client (a martian client source would fail the lookup). */
	if (family == LETHE_AF_INET) {
		fib->family = AF_INET;
		fib->tos = p->tos;
		__builtin_memcpy(&fib->ipv4_dst, dst, 4);
	} else {
		fib->family = AF_INET6;
		__builtin_memcpy(fib->ipv6_dst, dst, 16);
	}

	rc = bpf_fib_lookup(ctx, fib, sizeof(*fib), flags);
	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		break;
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		return LETHE_R_NO_NEIGH;
	case BPF_FIB_LKUP_RET_FWD_DISABLED:
		return LETHE_R_FWD_DISABLED;
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
		return LETHE_R_FRAG_NEEDED;
	case BPF_FIB_LKUP_RET_NO_SRC_ADDR:
		return LETHE_R_NO_SRC_ADDR;
	default: /* blackhole, unreachable, prohibit, not forwarded, lwt, errors */
		return LETHE_R_NO_ROUTE;
	}
	if (want_src && fib->family == AF_INET && !fib->ipv4_src)
		return LETHE_R_NO_SRC_ADDR;
	if (fib->ifindex != p->ingress && !bpf_map_lookup_elem(&tx_ports, &fib->ifindex))
		return LETHE_R_NO_TX_PORT;
	return NEXTHOP_OK;
}

/* After the fib lookup, the destination field holds the next hop: the
 * destination itself when it is on-link, its gateway otherwise. */
static __always_inline int nexthop_is(const struct bpf_fib_lookup *fib, const __u32 *addr)
{
	if (fib->family == AF_INET)
		return fib->ipv4_dst == addr[0];
	return !((fib->ipv6_dst[0] ^ addr[0]) | (fib->ipv6_dst[1] ^ addr[1]) |
		 (fib->ipv6_dst[2] ^ addr[2]) | (fib->ipv6_dst[3] ^ addr[3]));
}

/* fib's MACs as set_macs takes them, into buf (12 bytes, 8-aligned). */
static __always_inline const __u8 *fib_macs(const struct bpf_fib_lookup *fib, __u8 *buf)
{
	__builtin_memcpy(buf, fib->dmac, ETH_ALEN);
	__builtin_memcpy(buf + ETH_ALEN, fib->smac, ETH_ALEN);
	return buf;
}

/* Whether nh is a live answer for (addr, family) arriving on this port.
 * addr: 16 bytes, 4-aligned (IPv4: the first 4, the rest zero). */
static __always_inline int nexthop_fresh(const struct lethe_nexthop *nh, const __u32 *addr,
					 __u8 family, __u32 gen, __u32 ingress_ifindex)
{
	const __u32 *a = (const __u32 *)nh->addr;

	/* IPv4: the other address words are zero on both sides. */
	return nh->family == family && nh->gen == gen && nh->ingress_ifindex == ingress_ifindex &&
	       (family == LETHE_AF_INET ? a[0] == addr[0]
					: !((a[0] ^ addr[0]) | (a[1] ^ addr[1]) | (a[2] ^ addr[2]) |
					    (a[3] ^ addr[3]))) &&
	       bpf_jiffies64() < nh->expires;
}

/*
 * The next hop towards `addr` (16 bytes, 4-aligned; IPv4 in the first 4,
 * the rest zero) for a packet of L3 length tot_len on the wire: from this
 * CPU's nexthops[slot] when it holds a fresh answer for addr, else from
 * the route lookup, whose complete answer is then kept there (see nexthops
 * in maps.h). With `adjacent` the next hop must be addr itself (dsr).
 * Returns NEXTHOP_OK with fib's ifindex set and *macs pointing at the new
 * MACs (the entry's, see set_macs), LETHE_R_FRAG_NEEDED
 * with fib->mtu_result set, or why the packet cannot be forwarded:
 * exactly what nexthop() answers, the routes and neighbours unchanged.
 */
static __always_inline enum lethe_reason cached_nexthop(struct xdp_md *ctx, const struct packet *p,
							__u32 slot, const __u32 *addr, __u8 family,
							__u32 tot_len, int adjacent,
							struct bpf_fib_lookup *fib, const __u8 **macs)
{
	struct lethe_nexthop *nh = bpf_map_lookup_elem(&nexthops, &slot);
	__u32 mtu, gen, ttl;
	enum lethe_reason why;

	if (!nh)
		return LETHE_R_INTERNAL;
	/* The generation before the lookup: a change the daemon announces
	 * while this packet looks the route up leaves the entry stale. */
	gen = *(volatile const __u32 *)&live_nexthop_ctl.gen;
	if (nexthop_fresh(nh, addr, family, gen, p->ingress)) {
		if (tot_len > nh->mtu) {
			fib->mtu_result = nh->mtu;
			return LETHE_R_FRAG_NEEDED;
		}
		if (adjacent && !nh->adjacent)
			return LETHE_R_NOT_ADJACENT;
		fib->ifindex = nh->ifindex;
		*macs = nh->macs;
		return NEXTHOP_OK;
	}

	/* Asked for the largest length, the lookup answers the path MTU
	 * (it checks the MTU before the neighbour); then for this packet. */
	why = nexthop(ctx, p, (const __u8 *)addr, family, 0xffff, 0, fib);
	if (why == NEXTHOP_OK)
		mtu = 0xffff;
	else if (why == LETHE_R_FRAG_NEEDED)
		mtu = fib->mtu_result;
	else
		return why;
	if (tot_len > mtu) {
		fib->mtu_result = mtu;
		return LETHE_R_FRAG_NEEDED;
	}
	why = nexthop(ctx, p, (const __u8 *)addr, family, tot_len, 0, fib);
	if (why != NEXTHOP_OK)
		return why;

	__builtin_memcpy(nh->addr, addr, 16);
	ttl = live_nexthop_ctl.ttl_jiffies ?: LETHE_NEXTHOP_TTL_JIFFIES;
	nh->expires = bpf_jiffies64() + ttl;
	nh->gen = gen;
	nh->ingress_ifindex = p->ingress;
	nh->ifindex = fib->ifindex;
	nh->mtu = mtu;
	*macs = fib_macs(fib, nh->macs);
	nh->adjacent = nexthop_is(fib, addr);
	nh->family = family;
	if (adjacent && !nh->adjacent)
		return LETHE_R_NOT_ADJACENT;
	return NEXTHOP_OK;
}

/* The next hop towards backend `id` (record be): its own slot. */
static __always_inline enum lethe_reason backend_nexthop(struct xdp_md *ctx, const struct packet *p,
							 const struct lethe_backend *be, __u32 id,
							 __u32 tot_len, int adjacent,
							 struct bpf_fib_lookup *fib, const __u8 **macs)
{
	return cached_nexthop(ctx, p, id & (LETHE_NEXTHOP_SLOTS - 1), (const __u32 *)be->addr,
			      be->family, tot_len, adjacent, fib, macs);
}

/* The next hop towards a client (nat return traffic): a slot by the
 * client's address, after the backends'. */
static __always_inline enum lethe_reason client_nexthop(struct xdp_md *ctx, const struct packet *p,
							struct bpf_fib_lookup *fib, const __u8 **macs)
{
	__u32 slot = LETHE_NEXTHOP_SLOTS + (addr_bit(p->dst, p->family) & (LETHE_NEXTHOP_SLOTS - 1));

	return cached_nexthop(ctx, p, slot, p->dst, p->family, p->l3_len, 0, fib, macs);
}

/* The frame's new MACs from `macs` (destination, then source; 12 bytes,
 * 8-aligned): two stores. Copied as two 6-byte arrays from the fib answer
 * they took ~20 instructions of 2-byte moves, twice on the way. */
static __always_inline void set_macs(void *eth, const __u8 *macs)
{
	*(__u64 *)eth = *(const __u64 *)macs;
	*(__u32 *)(eth + 8) = *(const __u32 *)(macs + 8);
}

/* XDP_TX or XDP_REDIRECT; nexthop() has checked the port is allowed. */
static __always_inline int transmit(struct xdp_md *ctx, const struct bpf_fib_lookup *fib,
				    enum lethe_reason *why)
{
	if (fib->ifindex == ctx->ingress_ifindex) {
		*why = LETHE_R_FWD_TX;
		return XDP_TX;
	}
	*why = LETHE_R_FWD_REDIRECT;
	return bpf_redirect_map(&tx_ports, fib->ifindex, XDP_DROP);
}

#endif /* LETHE_FORWARD_H */
