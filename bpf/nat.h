/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Stateless NAT. Ingress (client -> VIP): destination VIP(:port) becomes
 * backend(:port). Return (backend -> client): source backend(:port) becomes
 * VIP(:port), found in nat_returns by (backend, port, protocol) — no flow
 * table anywhere. Checksums are updated incrementally (RFC 1624): the IPv4
 * header checksum, and the TCP/UDP checksum for the pseudo-header address
 * and the port. An IPv4 UDP checksum of 0 means "none" and stays 0; a UDP
 * checksum that comes out 0 is sent as 0xffff. TTL is left alone, as in
 * every mode: Lethe does not show up in traceroute.
 */
#ifndef LETHE_NAT_H
#define LETHE_NAT_H

#include "csum.h"
#include "parse.h"

#define NAT_DST 1 /* rewrite the destination (ingress) */
#define NAT_SRC 0 /* rewrite the source (return) */

static __always_inline int nat_rewrite(void *data, void *data_end, const struct packet *p,
				       int side, const __u8 *addr, __be16 port)
{
	__u32 l3_off = p->l3_off;
	__u32 l4_off = p->l4_off;
	__u16 *l4csum;
	int fix_l4;
	void *l4;

	/* Explicit bounds keep the verifier's pointer ranges checkable. */
	if (l3_off > ETH_HLEN + VLAN_HLEN || l4_off > ETH_HLEN + VLAN_HLEN + IPV6_HLEN)
		return -1;
	l4 = data + l4_off;
	if (l4 + UDP_HLEN > data_end)
		return -1;
	if (p->proto == IPPROTO_TCP) {
		if (l4 + TCP_HLEN > data_end)
			return -1;
		l4csum = &((struct tcphdr *)l4)->check;
	} else {
		l4csum = &((struct udphdr *)l4)->check;
	}
	fix_l4 = !(p->proto == IPPROTO_UDP && p->family == LETHE_AF_INET && *l4csum == 0);

	if (p->family == LETHE_AF_INET) {
		struct iphdr *iph = data + l3_off;
		__be32 old, new;

		if ((void *)(iph + 1) > data_end)
			return -1;
		__builtin_memcpy(&new, addr, 4);
		if (side == NAT_DST) {
			old = iph->daddr;
			iph->daddr = new;
		} else {
			old = iph->saddr;
			iph->saddr = new;
		}
		iph->check = csum_replace(iph->check, (__u16 *)&old, (__u16 *)&new, 2);
		if (fix_l4)
			*l4csum = csum_replace(*l4csum, (__u16 *)&old, (__u16 *)&new, 2);
	} else {
		struct ipv6hdr *ip6h = data + l3_off;
		__u32 old[4], new[4];

		if ((void *)(ip6h + 1) > data_end)
			return -1;
		__builtin_memcpy(new, addr, 16);
		if (side == NAT_DST) {
			__builtin_memcpy(old, &ip6h->daddr, 16);
			__builtin_memcpy(&ip6h->daddr, new, 16);
		} else {
			__builtin_memcpy(old, &ip6h->saddr, 16);
			__builtin_memcpy(&ip6h->saddr, new, 16);
		}
		*l4csum = csum_replace(*l4csum, (__u16 *)old, (__u16 *)new, 8);
	}

	if (port) {
		__be16 *field = side == NAT_DST ? l4 + 2 : l4;
		__be16 old = *field;

		if (old != port) {
			*field = port;
			if (fix_l4)
				*l4csum = csum_replace16(*l4csum, old, port);
		}
	}
	if (p->proto == IPPROTO_UDP && fix_l4 && *l4csum == 0)
		*l4csum = 0xffff;
	return 0;
}

static __always_inline const struct lethe_nat_return *find_nat_return(const struct packet *p)
{
	struct lethe_vip_key key = {};
	const struct lethe_nat_return *r;

	__builtin_memcpy(key.addr, p->src, 16);
	key.port = p->sport;
	key.proto = p->proto;
	key.family = p->family;
	r = bpf_map_lookup_elem(&nat_returns, &key);
	if (r)
		return r;
	key.port = 0;
	return bpf_map_lookup_elem(&nat_returns, &key);
}

#endif /* LETHE_NAT_H */
