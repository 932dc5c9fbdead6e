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
	/* UDP checksum 0: none. IPv6 forbids it but for tunnels (RFC 6935,
	 * 6936), whose receivers accept it: it stays 0, where an update would
	 * turn it into a wrong sum those receivers drop. */
	fix_l4 = !(p->proto == IPPROTO_UDP && *l4csum == 0);

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
		if (fix_l4)
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

/* Updates an inner TCP/UDP checksum for changed words and returns the new
 * value (UDP: 0 stays 0, as in nat_rewrite; a result of 0 is sent as
 * 0xffff). */
static __always_inline __u16 inner_l4_csum(__u16 check, int udp, const __u16 *from,
					   const __u16 *to, int words, __be16 old_port,
					   __be16 new_port)
{
	if (udp && check == 0)
		return 0;
	check = csum_replace(check, from, to, words);
	if (old_port != new_port)
		check = csum_replace16(check, old_port, new_port);
	if (udp && check == 0)
		check = 0xffff;
	return check;
}

/*
 * nat for an ICMP error about a flow.
 *
 * NAT_DST (ingress): the error is addressed to the VIP about a packet the
 * VIP "sent" (that the backend sent and the return path rewrote). The outer
 * destination becomes the backend, and inside, the invoking packet's
 * source becomes backend:port again.
 *
 * NAT_SRC (return): a backend, or a router between it and Lethe, reports
 * to a client about a packet the backend received (client -> backend:port,
 * as the ingress rewrote it). Inside, the destination becomes VIP:port
 * again, the packet the client really sent; the outer source becomes the
 * VIP when the backend itself sent the error (a router's address stays).
 *
 * The IPv4 header checksums, the quoted TCP/UDP checksum when the error
 * carries it, and the ICMP checksum (over the message; for ICMPv6 also the
 * pseudo-header) follow.
 */
static __always_inline int nat_icmp_rewrite(void *data, void *data_end, const struct packet *p,
					    int side, const __u8 *addr, __be16 port)
{
	__u32 l3_off = p->l3_off, l4_off = p->l4_off, inner_off = p->inner_off;
	__u32 ip_end = p->l3_off + p->l3_len;
	int udp = p->proto == IPPROTO_UDP;
	struct udphdr *ports;
	__u16 *icsum, *l4csum = 0;
	__be16 old_port, *port_f;
	void *icmp;

	if (l3_off > ETH_HLEN + VLAN_HLEN || l4_off > ETH_HLEN + VLAN_HLEN + IPV6_HLEN ||
	    inner_off > ETH_HLEN + VLAN_HLEN + IPV6_HLEN + ICMP_HLEN)
		return -1;
	icmp = data + l4_off;
	if (icmp + ICMP_HLEN > data_end)
		return -1;
	icsum = icmp + 2;

	if (p->family == LETHE_AF_INET) {
		struct iphdr *iph = data + l3_off, *ii = data + inner_off;
		__be32 old, new, was, old_check, *outer_f, *inner_f;

		if ((void *)(iph + 1) > data_end || (void *)(ii + 1) > data_end)
			return -1;
		ports = (void *)(ii + 1);
		if ((void *)(ports + 1) > data_end)
			return -1;
		__builtin_memcpy(&new, addr, 4);
		outer_f = side == NAT_DST ? &iph->daddr : &iph->saddr;
		inner_f = side == NAT_DST ? &ii->saddr : &ii->daddr;
		old = *inner_f;
		was = *outer_f;
		if (side == NAT_DST || was == old) {
			*outer_f = new;
			iph->check = csum_replace(iph->check, (__u16 *)&was, (__u16 *)&new, 2);
		}

		*inner_f = new;
		old_check = ii->check;
		ii->check = csum_replace(ii->check, (__u16 *)&old, (__u16 *)&new, 2);
		*icsum = csum_replace(*icsum, (__u16 *)&old, (__u16 *)&new, 2);
		*icsum = csum_replace16(*icsum, old_check, ii->check);

		port_f = side == NAT_DST ? &ports->source : &ports->dest;
		old_port = *port_f;
		if (port && port != old_port) {
			*port_f = port;
			*icsum = csum_replace16(*icsum, old_port, port);
		} else {
			port = old_port;
		}
		if (udp) {
			l4csum = &ports->check;
		} else if (inner_off + IPV4_HLEN + TCP_HLEN <= ip_end) {
			struct tcphdr *th = (void *)(ii + 1);

			if ((void *)(th + 1) > data_end)
				return -1;
			l4csum = &th->check;
		}
		if (l4csum) {
			__u16 before = *l4csum;

			*l4csum = inner_l4_csum(before, udp, (__u16 *)&old, (__u16 *)&new, 2,
						old_port, port);
			*icsum = csum_replace16(*icsum, before, *l4csum);
		}
	} else {
		struct ipv6hdr *ip6h = data + l3_off, *ii = data + inner_off;
		struct in6_addr *outer_f, *inner_f;
		__u32 old[4], new[4], was[4];

		if ((void *)(ip6h + 1) > data_end || (void *)(ii + 1) > data_end)
			return -1;
		ports = (void *)(ii + 1);
		if ((void *)(ports + 1) > data_end)
			return -1;
		__builtin_memcpy(new, addr, 16);
		outer_f = side == NAT_DST ? &ip6h->daddr : &ip6h->saddr;
		inner_f = side == NAT_DST ? &ii->saddr : &ii->daddr;
		__builtin_memcpy(old, inner_f, 16);
		__builtin_memcpy(was, outer_f, 16);
		/* The ICMPv6 checksum covers the outer addresses too. */
		if (side == NAT_DST || !((was[0] ^ old[0]) | (was[1] ^ old[1]) | (was[2] ^ old[2]) |
					 (was[3] ^ old[3]))) {
			__builtin_memcpy(outer_f, new, 16);
			*icsum = csum_replace(*icsum, (__u16 *)was, (__u16 *)new, 8);
		}

		__builtin_memcpy(inner_f, new, 16);
		*icsum = csum_replace(*icsum, (__u16 *)old, (__u16 *)new, 8);

		port_f = side == NAT_DST ? &ports->source : &ports->dest;
		old_port = *port_f;
		if (port && port != old_port) {
			*port_f = port;
			*icsum = csum_replace16(*icsum, old_port, port);
		} else {
			port = old_port;
		}
		if (udp) {
			l4csum = &ports->check;
		} else if (inner_off + IPV6_HLEN + TCP_HLEN <= ip_end) {
			struct tcphdr *th = (void *)(ii + 1);

			if ((void *)(th + 1) > data_end)
				return -1;
			l4csum = &th->check;
		}
		if (l4csum) {
			__u16 before = *l4csum;

			*l4csum = inner_l4_csum(before, udp, (__u16 *)old, (__u16 *)new, 8, old_port,
						port);
			*icsum = csum_replace16(*icsum, before, *l4csum);
		}
	}
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
