/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Encapsulation to the backend: IPIP (IPv4-in-IPv4, IPv6-in-IPv6,
 * IPv4-in-IPv6) and GUE variant 1 (RFC draft-ietf-intarea-gue: the inner IP
 * packet right after a UDP header, no GUE header), over IPv4 or IPv6.
 *
 * The outer IP header: source = the address the kernel would use towards
 * the backend (bpf_fib_lookup with BPF_FIB_LOOKUP_SRC, i.e. the `src` of
 * `ip route get BACKEND`); destination = the backend; TTL/hop limit 64; TOS
 * / traffic class copied from the inner packet; IPv4: DF set, id 0; IPv6:
 * flow label = low 20 bits of the flow hash, so routers on the way spread
 * flows. The L2 header (and an 802.1Q tag) is kept in front.
 *
 * GUE's UDP header: source port 0xc000 | (flow hash & 0x3fff), so receivers
 * spread flows over queues; destination port lb_config.gue_port. Checksum:
 * 0 over IPv4 (allowed); over IPv6 derived from the inner headers without
 * reading the payload — the inner TCP/UDP/ICMP checksum already sums it —
 * so it is valid whenever the inner checksum is (and 0 for an inner IPv4
 * UDP packet without a checksum, or an inner UDP packet shorter than its IP
 * payload). The Rust twin is src/model/rewrite.rs.
 */
#ifndef LETHE_ENCAP_H
#define LETHE_ENCAP_H

#include "csum.h"
#include "forward.h"

#define GUE_SPORT_BASE 0xc000
#define GUE_SPORT_MASK 0x3fff

static __always_inline __u32 encap_len(__u8 backend_family, int gue)
{
	return (backend_family == LETHE_AF_INET ? IPV4_HLEN : IPV6_HLEN) + (gue ? UDP_HLEN : 0);
}

/* Sum of n 16-bit words at p, as loaded. */
static __always_inline __u32 sum_words(const void *p, int n)
{
	const __u16 *w = p;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < n; i++)
		sum += w[i];
	return sum;
}

static __always_inline __u16 fold16(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum;
}

/*
 * One's complement sum of the whole inner IP packet, from its headers
 * only: the IP header's own words, plus the L4 segment's sum, which a valid
 * L4 checksum makes equal to minus the L4 pseudo-header's sum (ICMPv4 has
 * no pseudo-header: its segment sums to -0). Returns -1 when it cannot be
 * known: inner UDP without checksum (IPv4, or IPv6 tunnels), or UDP whose length leaves bytes
 * of the IP payload after it (a surplus area, RFC draft UDP options),
 * which its checksum does not cover.
 */
static __always_inline long inner_sum(void *data, void *data_end, const struct packet *p)
{
	__u32 l3_off = p->l3_off, l4_len, sum, pseudo;

	if (l3_off > ETH_HLEN + VLAN_HLEN)
		return -1;
	if (p->family == LETHE_AF_INET) {
		struct iphdr *iph = data + l3_off;

		if ((void *)(iph + 1) > data_end)
			return -1;
		l4_len = p->l3_len - IPV4_HLEN;
		if (p->ip_proto == IPPROTO_UDP) {
			struct udphdr *udp = (void *)(iph + 1);

			if ((void *)(udp + 1) > data_end)
				return -1;
			if (udp->check == 0 || udp->len != bpf_htons(l4_len))
				return -1;
		}
		sum = sum_words(iph, IPV4_HLEN / 2);
		if (p->ip_proto == IPPROTO_ICMP)
			return fold16(sum + 0xffff);
		pseudo = sum_words(&iph->saddr, 4) + bpf_htons(p->ip_proto) + bpf_htons(l4_len);
	} else {
		struct ipv6hdr *ip6h = data + l3_off;

		if ((void *)(ip6h + 1) > data_end)
			return -1;
		l4_len = p->l3_len - IPV6_HLEN;
		if (p->ip_proto == IPPROTO_UDP) {
			struct udphdr *udp = (void *)(ip6h + 1);

			if ((void *)(udp + 1) > data_end)
				return -1;
			/* 0: no checksum (RFC 6935 tunnels), as over IPv4. */
			if (udp->check == 0 || udp->len != bpf_htons(l4_len))
				return -1;
		}
		sum = sum_words(ip6h, IPV6_HLEN / 2);
		/* 32-bit length and next header: the high words are zero. */
		pseudo = sum_words(&ip6h->saddr, 16) + bpf_htons(l4_len) + bpf_htons(p->ip_proto);
	}
	return fold16(sum + (__u16)~fold16(pseudo));
}

/*
 * The outer IPv4 header, built in registers and written as five 32-bit
 * words, its checksum summed from the same values: written field by field
 * and summed back from memory, the header cost ~8 ns a packet, mostly in
 * loads that had to wait for the narrower stores before them. Values are
 * as they lie in memory (little-endian loads of network-order bytes); the
 * one's complement sum does not care, as long as every word is taken the
 * same way (see csum.h).
 */
static __always_inline void write_outer_ipv4(struct iphdr *outer, const struct packet *p,
					     const struct lethe_backend *be,
					     const struct bpf_fib_lookup *fib, int gue)
{
	__u32 w0 = 0x45 | ((__u32)p->tos << 8) |
		   ((__u32)bpf_htons(p->l3_len + encap_len(LETHE_AF_INET, gue)) << 16);
	__u32 w1 = (__u32)bpf_htons(IP_DF) << 16; /* id 0, DF */
	__u32 w2 = LETHE_OUTER_TTL | ((gue ? IPPROTO_UDP : IPPROTO_IPIP) << 8);
	__u32 saddr = fib->ipv4_src, daddr = *(const __u32 *)be->addr;
	__u32 *w = (__u32 *)outer;
	__u32 sum;

	sum = (w0 & 0xffff) + (w0 >> 16) + (w1 >> 16) + w2 + (saddr & 0xffff) + (saddr >> 16) +
	      (daddr & 0xffff) + (daddr >> 16);
	w[0] = w0;
	w[1] = w1;
	w[2] = w2 | ((__u32)csum_fold(sum) << 16);
	w[3] = saddr;
	w[4] = daddr;
}

static __always_inline void write_outer_ipv6(struct ipv6hdr *outer, const struct packet *p,
					     const struct lethe_backend *be,
					     const struct bpf_fib_lookup *fib, __u32 hash, int gue)
{
	*(__be32 *)outer = bpf_htonl((6U << 28) | ((__u32)p->tos << 20) | (hash & 0xFFFFF));
	outer->payload_len = bpf_htons(p->l3_len + (gue ? UDP_HLEN : 0));
	if (gue)
		outer->nexthdr = IPPROTO_UDP;
	else
		outer->nexthdr = p->family == LETHE_AF_INET ? IPPROTO_IPIP : IPPROTO_IPV6;
	outer->hop_limit = LETHE_OUTER_TTL;
	__builtin_memcpy(&outer->saddr, fib->ipv6_src, 16);
	__builtin_memcpy(&outer->daddr, be->addr, 16);
}

/* Opens olen bytes in front of the L3 header. The new L2 header needs only
 * what the caller does not rewrite: an 802.1Q tag is carried over (TPID
 * and TCI); the MACs and the EtherType are set from fib afterwards.
 * Returns the new L2 header's address, with l3_off + olen bytes known to
 * be in the packet, or NULL. */
static __always_inline void *push_outer(struct xdp_md *ctx, const struct packet *p, __u32 olen)
{
	void *data, *data_end;

	if (bpf_xdp_adjust_head(ctx, -(int)olen))
		return NULL;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (p->l3_off == ETH_HLEN) {
		if (data + olen + ETH_HLEN > data_end)
			return NULL;
	} else {
		/* The old tag sits olen bytes further: olen >= 20, no overlap. */
		if (data + olen + ETH_HLEN + VLAN_HLEN > data_end)
			return NULL;
		__builtin_memcpy(data + ETH_HLEN - 2, data + olen + ETH_HLEN - 2, 4);
	}
	return data;
}

/*
 * Encapsulates the packet to the backend (gue_port 0: IPIP; else GUE to
 * that port) and sets the L2 header: `macs` (see set_macs), the outer
 * source from fib. Returns 0, or -1 when the head cannot be moved.
 */
static __always_inline int encap(struct xdp_md *ctx, const struct packet *p,
				 const struct lethe_backend *be, const struct bpf_fib_lookup *fib,
				 const __u8 *macs, __u32 hash, __be16 gue_port)
{
	int gue = gue_port != 0;
	__u32 olen = encap_len(be->family, gue);
	__be16 outer_proto = bpf_htons(be->family == LETHE_AF_INET ? ETH_P_IP : ETH_P_IPV6);
	/* 14 or 18; the explicit bound keeps the verifier's range of the
	 * outer header pointer small enough to be checked against data_end. */
	__u32 l3_off = p->l3_off;
	__be16 sport = bpf_htons(GUE_SPORT_BASE | (hash & GUE_SPORT_MASK));
	__be16 udp_len = bpf_htons(p->l3_len + UDP_HLEN);
	long inner = 0;
	void *data_end, *l2;
	struct ethhdr *eth;
	struct udphdr *udp;

	if (l3_off > ETH_HLEN + VLAN_HLEN)
		return -1;
	if (gue && be->family == LETHE_AF_INET6)
		inner = inner_sum((void *)(long)ctx->data, (void *)(long)ctx->data_end, p);

	l2 = push_outer(ctx, p, olen);
	if (!l2)
		return -1;
	data_end = (void *)(long)ctx->data_end;
	eth = l2;
	set_macs(eth, macs);

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
		write_outer_ipv4(outer, p, be, fib, gue);
		if (!gue)
			return 0;
		udp = (void *)(outer + 1);
		if ((void *)(udp + 1) > data_end)
			return -1;
		udp->source = sport;
		udp->dest = gue_port;
		udp->len = udp_len;
		udp->check = 0;
	} else {
		struct ipv6hdr *outer = l2 + l3_off;
		__u32 sum;

		if ((void *)(outer + 1) > data_end)
			return -1;
		write_outer_ipv6(outer, p, be, fib, hash, gue);
		if (!gue)
			return 0;
		udp = (void *)(outer + 1);
		if ((void *)(udp + 1) > data_end)
			return -1;
		udp->source = sport;
		udp->dest = gue_port;
		udp->len = udp_len;
		udp->check = 0;
		if (inner < 0)
			return 0;
		/* Pseudo-header (addresses, UDP length, next header 17), the
		 * UDP header, the inner packet. */
		sum = sum_words(&outer->saddr, 16) + udp_len + bpf_htons(IPPROTO_UDP) + sport +
		      gue_port + udp_len + (__u32)inner;
		udp->check = csum_fold(sum) ?: 0xffff;
	}
	return 0;
}

#endif /* LETHE_ENCAP_H */
