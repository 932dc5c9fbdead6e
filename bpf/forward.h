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
	fib->ifindex = ctx->ingress_ifindex;
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
	if (fib->ifindex != ctx->ingress_ifindex && !bpf_map_lookup_elem(&tx_ports, &fib->ifindex))
		return LETHE_R_NO_TX_PORT;
	return NEXTHOP_OK;
}

/* After the fib lookup, the destination field holds the next hop: the
 * backend itself when it is on-link, its gateway otherwise. */
static __always_inline int nexthop_is_backend(const struct bpf_fib_lookup *fib,
					      const struct lethe_backend *be)
{
	const __u32 *addr = (const __u32 *)be->addr;


	if (fib->family == AF_INET)
		return fib->ipv4_dst == addr[0];
	return !((fib->ipv6_dst[0] ^ addr[0]) | (fib->ipv6_dst[1] ^ addr[1]) |
		 (fib->ipv6_dst[2] ^ addr[2]) | (fib->ipv6_dst[3] ^ addr[3]));
}

static __always_inline void set_macs(struct ethhdr *eth, const struct bpf_fib_lookup *fib)
{
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
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
