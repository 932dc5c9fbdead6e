/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Header parsing: Ethernet (one 802.1Q tag tolerated), IPv4, IPv6, TCP, UDP.
 *
 * Lethe transforms only packets it fully understands. Structurally broken
 * packets (cut short, impossible lengths) are dropped; well-formed packets
 * it does not balance (options, fragments, extension headers, other
 * protocols) are passed to the kernel untouched. Either way with a reason.
 * The Rust twin of these rules is src/model/parse.rs: keep them in step.
 *
 * Checks a well-formed packet passes are unlikely() (bpf_helpers.h): the
 * compiler then keeps what only a failing packet needs, the reason it
 * returns, off the straight path instead of setting it before every test.
 */
#ifndef LETHE_PARSE_H
#define LETHE_PARSE_H

#include "common.h"

/* Returned by parse() when the packet is a TCP/UDP candidate for a VIP. */
#define PARSE_OK LETHE_R_MAX

#define ICMP_HLEN 8
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2

struct packet {
	__u32 len;    /* frame length on arrival */
	__u16 l3_off; /* ETH_HLEN, or ETH_HLEN + VLAN_HLEN when tagged */
	__u16 l3_len; /* IP header + payload, as the IP header says */
	__u16 l4_off; /* the TCP/UDP header */
	__u16 _pad1;
	__u8 family;   /* enum lethe_family */
	__u8 proto;    /* the flow's protocol: IPPROTO_TCP or IPPROTO_UDP */
	__u8 tos;      /* IPv4 TOS or IPv6 traffic class */
	__u8 ip_proto; /* the packet's own protocol (the flow's, or ICMP) */
	__be16 sport;
	__be16 dport;
	__be32 src[4]; /* IPv4: src[0] */
	__be32 dst[4];
	/* The decision so far, for traced packets (struct lethe_trace) and
	 * decision events. */
	__u32 vip_id;
	__u32 backend_id;
	__u32 hash;
	__u8 mode;
	__u8 sample; /* emit a decision event at the exit */
	__u8 df;     /* IPv4 don't-fragment set */
	/* An ICMP error about a flow: the flow fields above are that flow's,
	 * as the client sent it (the inner packet's, inverted). */
	__u8 icmp;
	__u16 inner_off; /* the inner IP header */
	__u32 ingress;	 /* ctx->ingress_ifindex, read once (the compiler may
			  * otherwise address ctx through a register, which the
			  * verifier refuses) */
};

static __always_inline int ipv6_is_ext_header(__u8 nexthdr)
{
	switch (nexthdr) {
	case 0:   /* hop-by-hop options */
	case 43:  /* routing */
	case 51:  /* authentication header */
	case 60:  /* destination options */
	case 135: /* mobility */
	case 139: /* host identity protocol */
	case 140: /* shim6 */
		return 1;
	}
	return 0;
}

/* Ports of a TCP or UDP header at l4, with l4_len bytes of IP payload. */
static __always_inline enum lethe_reason parse_l4(void *data, void *l4, void *data_end,
						  __u32 l4_len, struct packet *p)
{
	__u32 need = p->proto == IPPROTO_TCP ? TCP_HLEN : UDP_HLEN;
	struct udphdr *ports = l4; /* sport/dport sit first in both headers */

	if (unlikely(l4_len < need || l4 + need > data_end))
		return LETHE_R_TRUNC_L4;
	if (unlikely((void *)(ports + 1) > data_end))
		return LETHE_R_TRUNC_L4;
	p->l4_off = l4 - data;
	p->sport = ports->source;
	p->dport = ports->dest;
	return PARSE_OK;
}

/*
 * The inner packet of an ICMP error (RFC 792 / 4443: the invoking packet's
 * IP header and at least 8 bytes of it), which the error is about: a packet
 * a backend sent as the VIP to a client. The flow it belongs to is that
 * packet inverted: client -> VIP.
 *
 * An error goes to the sender of the packet it quotes: its destination
 * (dst4, or dst6 over IPv6) must be the quoted source — the VIP, or on
 * the nat return path the client. One addressed elsewhere (this host,
 * say) is not the flow's and is passed, as icmp_inner.
 */
static __always_inline enum lethe_reason parse_icmp_inner(void *data, void *data_end,
							  struct packet *p, void *inner,
							  __be32 dst4, const struct in6_addr *dst6)
{
	struct udphdr *ports;

	if (p->family == LETHE_AF_INET) {
		struct iphdr *ii = inner;

		if ((void *)(ii + 1) > data_end)
			return LETHE_R_ICMP_INNER;
		if (ii->version != 4 || ii->ihl != 5 || (ii->frag_off & bpf_htons(IP_OFFSET)))
			return LETHE_R_ICMP_INNER;
		if (ii->saddr != dst4)
			return LETHE_R_ICMP_INNER;
		if (ii->protocol != IPPROTO_TCP && ii->protocol != IPPROTO_UDP)
			return LETHE_R_ICMP_INNER;
		ports = (void *)(ii + 1);
		if ((void *)(ports + 1) > data_end)
			return LETHE_R_ICMP_INNER;
		p->proto = ii->protocol;
		p->src[0] = ii->daddr;
		p->dst[0] = ii->saddr;
	} else {
		struct ipv6hdr *ii = inner;

		if ((void *)(ii + 1) > data_end)
			return LETHE_R_ICMP_INNER;
		if (ii->version != 6)
			return LETHE_R_ICMP_INNER;
		if ((ii->saddr.in6_u.u6_addr32[0] ^ dst6->in6_u.u6_addr32[0]) |
		    (ii->saddr.in6_u.u6_addr32[1] ^ dst6->in6_u.u6_addr32[1]) |
		    (ii->saddr.in6_u.u6_addr32[2] ^ dst6->in6_u.u6_addr32[2]) |
		    (ii->saddr.in6_u.u6_addr32[3] ^ dst6->in6_u.u6_addr32[3]))
			return LETHE_R_ICMP_INNER;
		if (ii->nexthdr != IPPROTO_TCP && ii->nexthdr != IPPROTO_UDP)
			return LETHE_R_ICMP_INNER;
		ports = (void *)(ii + 1);
		if ((void *)(ports + 1) > data_end)
			return LETHE_R_ICMP_INNER;
		p->proto = ii->nexthdr;
		__builtin_memcpy(p->src, &ii->daddr, 16);
		__builtin_memcpy(p->dst, &ii->saddr, 16);
	}
	p->sport = ports->dest;
	p->dport = ports->source;
	p->inner_off = inner - data;
	p->icmp = 1;
	return PARSE_OK;
}

/* An ICMP or ICMPv6 packet: a destination-unreachable (or packet-too-big)
 * error is routed like the flow it is about; anything else is passed. */
static __always_inline enum lethe_reason parse_icmp(void *data, void *data_end, struct packet *p,
						    void *icmp, __u32 l4_len, __be32 dst4,
						    const struct in6_addr *dst6)
{
	__u32 inner_hlen = p->family == LETHE_AF_INET ? IPV4_HLEN : IPV6_HLEN;
	__u8 *type = icmp;

	if (l4_len < ICMP_HLEN || icmp + ICMP_HLEN > data_end)
		return LETHE_R_L4_PROTO;
	if (p->family == LETHE_AF_INET ? *type != ICMP_DEST_UNREACH
				       : *type != ICMPV6_DEST_UNREACH && *type != ICMPV6_PKT_TOOBIG)
		return LETHE_R_L4_PROTO;
	if (l4_len < ICMP_HLEN + inner_hlen + UDP_HLEN)
		return LETHE_R_ICMP_INNER;
	p->l4_off = icmp - data;
	return parse_icmp_inner(data, data_end, p, icmp + ICMP_HLEN, dst4, dst6);
}

/* Why ipv4_unusual() refused an IPv4 header: its rules in order, the
 * first the header breaks (none of the others: the protocol). */
static __always_inline enum lethe_reason ipv4_reason(__u8 version_ihl, __u32 tot_len,
						     __be16 frag_off, const struct packet *p)
{
	__u32 ihl = version_ihl & 0xf;

	if ((version_ihl >> 4) != 4)
		return LETHE_R_BAD_IP_VERSION;
	if (ihl < 5)
		return LETHE_R_BAD_IHL;
	if (tot_len < ihl * 4 || p->l3_off + tot_len > p->len)
		return LETHE_R_BAD_IP_LEN;
	if (ihl != 5)
		return LETHE_R_IPV4_OPTIONS;
	if (frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return LETHE_R_FRAGMENT;
	return LETHE_R_L4_PROTO;
}

/* Non-zero unless the header is the usual one — version 4 without options,
 * a length that fits the frame, not a fragment, TCP, UDP or ICMP — in
 * arithmetic and no branch: one test on the way instead of six, each of
 * which had the compiler set the reason it would return before it. */
static __always_inline __u32 ipv4_unusual(__u8 version_ihl, __u32 tot_len, __be16 frag_off,
					  __u8 proto, const struct packet *p)
{
	const __u64 known = (1ULL << IPPROTO_TCP) | (1ULL << IPPROTO_UDP) | (1ULL << IPPROTO_ICMP);

	/* tot_len and the frame length are below 2^17: a difference that
	 * wraps sets bit 31. */
	return (version_ihl ^ 0x45) | (frag_off & bpf_htons(IP_MF | IP_OFFSET)) |
	       ((tot_len - IPV4_HLEN) >> 31) | ((p->len - (p->l3_off + tot_len)) >> 31) |
	       (proto >> 6) | (((known >> (proto & 63)) & 1) ^ 1);
}

static __always_inline enum lethe_reason parse_ipv4(void *data, void *data_end,
						    struct packet *p)
{
	struct iphdr *iph = data + p->l3_off;
	__be32 saddr, daddr;
	__u8 version_ihl, proto, tos;
	__be16 frag_off;
	__u32 tot_len;

	if (unlikely((void *)(iph + 1) > data_end))
		return LETHE_R_TRUNC_IP;
	/* Every field read once, before anything is written to p: a store
	 * through p may alias the packet as far as the compiler knows, and
	 * makes it read the header again. */
	version_ihl = *(__u8 *)iph;
	tos = iph->tos;
	tot_len = bpf_ntohs(iph->tot_len);
	frag_off = iph->frag_off;
	proto = iph->protocol;
	saddr = iph->saddr;
	daddr = iph->daddr;
	if (unlikely(ipv4_unusual(version_ihl, tot_len, frag_off, proto, p)))
		return ipv4_reason(version_ihl, tot_len, frag_off, p);

	p->family = LETHE_AF_INET;
	p->proto = proto;
	p->ip_proto = proto;
	p->tos = tos;
	p->df = !!(frag_off & bpf_htons(IP_DF));
	p->l3_len = tot_len;
	if (proto == IPPROTO_ICMP)
		return parse_icmp(data, data_end, p, iph + 1, tot_len - IPV4_HLEN, daddr, 0);
	p->src[0] = saddr;
	p->dst[0] = daddr;
	return parse_l4(data, iph + 1, data_end, tot_len - IPV4_HLEN, p);
}

static __always_inline enum lethe_reason parse_ipv6(void *data, void *data_end,
						    struct packet *p)
{
	struct ipv6hdr *ip6h = data + p->l3_off;
	__u32 payload_len;

	if (unlikely((void *)(ip6h + 1) > data_end))
		return LETHE_R_TRUNC_IP;
	if (unlikely(ip6h->version != 6))
		return LETHE_R_BAD_IP_VERSION;
	payload_len = bpf_ntohs(ip6h->payload_len);
	if (unlikely(p->l3_off + IPV6_HLEN + payload_len > p->len))
		return LETHE_R_BAD_IP_LEN;
	/* The usual protocols first: one test each, not the list of
	 * extension headers. */
	if (unlikely(ip6h->nexthdr != IPPROTO_TCP && ip6h->nexthdr != IPPROTO_UDP &&
		     ip6h->nexthdr != IPPROTO_ICMPV6)) {
		if (ip6h->nexthdr == 44)
			return LETHE_R_FRAGMENT;
		if (ipv6_is_ext_header(ip6h->nexthdr))
			return LETHE_R_IPV6_EXT;
		return LETHE_R_L4_PROTO;
	}

	p->family = LETHE_AF_INET6;
	p->proto = ip6h->nexthdr;
	p->ip_proto = ip6h->nexthdr;
	p->tos = (ip6h->priority << 4) | (ip6h->flow_lbl[0] >> 4);
	p->l3_len = IPV6_HLEN + payload_len;
	if (ip6h->nexthdr == IPPROTO_ICMPV6)
		return parse_icmp(data, data_end, p, ip6h + 1, payload_len, 0, &ip6h->daddr);
	__builtin_memcpy(p->src, &ip6h->saddr, 16);
	__builtin_memcpy(p->dst, &ip6h->daddr, 16);
	return parse_l4(data, ip6h + 1, data_end, payload_len, p);
}

static __always_inline enum lethe_reason parse(void *data, void *data_end, struct packet *p)
{
	struct ethhdr *eth = data;
	__be16 proto;

	p->len = data_end - data;
	if (unlikely((void *)(eth + 1) > data_end))
		return LETHE_R_TRUNC_ETH;
	proto = eth->h_proto;
	p->l3_off = ETH_HLEN;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		struct vlan_hdr *vlan = (void *)(eth + 1);

		if (unlikely((void *)(vlan + 1) > data_end))
			return LETHE_R_TRUNC_VLAN;
		proto = vlan->h_vlan_encapsulated_proto;
		p->l3_off = ETH_HLEN + VLAN_HLEN;
	}
	if (proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(data, data_end, p);
	if (proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(data, data_end, p);
	return LETHE_R_NOT_IP;
}

#endif /* LETHE_PARSE_H */
