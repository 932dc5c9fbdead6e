/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * IPIP encapsulation: IPv4-in-IPv4, IPv6-in-IPv6 and IPv4-in-IPv6.
 *
 * The outer header: source = the address the kernel would use towards the
 * backend (bpf_fib_lookup with BPF_FIB_LOOKUP_SRC, i.e. the `src` of
 * `ip route get BACKEND`); destination = the backend; TTL/hop limit 64; TOS
 * / traffic class copied from the inner packet; IPv4 outer: DF set, id 0;
 * IPv6 outer: flow label = low 20 bits of the flow hash, so routers on the
 * way spread flows. The L2 header (and an 802.1Q tag) is kept in front.
 */
#ifndef LETHE_ENCAP_H
#define LETHE_ENCAP_H

#include "csum.h"
#include "forward.h"

static __always_inline __u32 ipip_outer_len(__u8 backend_family)
{
	return backend_family == LETHE_AF_INET ? IPV4_HLEN : IPV6_HLEN;
}

static __always_inline void write_outer_ipv4(struct iphdr *outer, const struct packet *p,
					     const struct lethe_backend *be,
					     const struct bpf_fib_lookup *fib)
{
	outer->version = 4;
	outer->ihl = 5;
	outer->tos = p->tos;
	outer->tot_len = bpf_htons(p->l3_len + IPV4_HLEN);
	outer->id = 0;
	outer->frag_off = bpf_htons(IP_DF);
	outer->ttl = LETHE_OUTER_TTL;
	outer->protocol = IPPROTO_IPIP;
	outer->saddr = fib->ipv4_src;
	__builtin_memcpy(&outer->daddr, be->addr, 4);
	ipv4_set_csum(outer);
}

static __always_inline void write_outer_ipv6(struct ipv6hdr *outer, const struct packet *p,
					     const struct lethe_backend *be,
					     const struct bpf_fib_lookup *fib, __u32 hash)
{
	*(__be32 *)outer = bpf_htonl((6U << 28) | ((__u32)p->tos << 20) | (hash & 0xFFFFF));
	outer->payload_len = bpf_htons(p->l3_len);
	outer->nexthdr = p->family == LETHE_AF_INET ? IPPROTO_IPIP : IPPROTO_IPV6;
	outer->hop_limit = LETHE_OUTER_TTL;
	__builtin_memcpy(&outer->saddr, fib->ipv6_src, 16);
	__builtin_memcpy(&outer->daddr, be->addr, 16);
}

/* Moves the L2 header olen bytes forward. Returns the new L2 header's
 * address, with l3_off + olen bytes known to be in the packet, or NULL. */
static __always_inline void *push_outer(struct xdp_md *ctx, const struct packet *p, __u32 olen)
{
	void *data, *data_end;

	if (bpf_xdp_adjust_head(ctx, -(int)olen))
		return NULL;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	/* The old L2 header now starts at data + olen; olen >= 20 > 18, so
	 * the copies below never overlap. */
	if (p->l3_off == ETH_HLEN) {
		if (data + olen + ETH_HLEN > data_end)
			return NULL;
		__builtin_memcpy(data, data + olen, ETH_HLEN);
	} else {
		if (data + olen + ETH_HLEN + VLAN_HLEN > data_end)
			return NULL;
		__builtin_memcpy(data, data + olen, ETH_HLEN + VLAN_HLEN);
	}
	return data;
}

/*
 * Encapsulates the packet to the backend and sets the L2 header from fib.
 * Returns 0, or -1 when the head cannot be moved.
 */
static __always_inline int ipip_encap(struct xdp_md *ctx, const struct packet *p,
				      const struct lethe_backend *be,
				      const struct bpf_fib_lookup *fib, __u32 hash)
{
	__u32 olen = ipip_outer_len(be->family);
	__be16 outer_proto = bpf_htons(be->family == LETHE_AF_INET ? ETH_P_IP : ETH_P_IPV6);
	/* 14 or 18; the explicit bound keeps the verifier's range of the
	 * outer header pointer small enough to be checked against data_end. */
	__u32 l3_off = p->l3_off;
	void *data_end, *l2;
	struct ethhdr *eth;

	if (l3_off > ETH_HLEN + VLAN_HLEN)
		return -1;

	l2 = push_outer(ctx, p, olen);
	if (!l2)
		return -1;
	data_end = (void *)(long)ctx->data_end;
	eth = l2;
	set_macs(eth, fib);

	if (l3_off == ETH_HLEN) {
		eth->h_proto = outer_proto;
	} else {
		struct vlan_hdr *vlan = (void *)(eth + 1);

		vlan->h_vlan_encapsulated_proto = outer_proto;
	}

	if (be->family == LETHE_AF_INET) {
		struct iphdr *outer = l2 + l3_off;

		if ((void *)(outer + 1) > data_end)
			return -1;
		write_outer_ipv4(outer, p, be, fib);
	} else {
		struct ipv6hdr *outer = l2 + l3_off;

		if ((void *)(outer + 1) > data_end)
			return -1;
		write_outer_ipv6(outer, p, be, fib, hash);
	}
	return 0;
}

#endif /* LETHE_ENCAP_H */
