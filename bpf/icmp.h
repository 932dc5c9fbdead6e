/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Answering "too big": when a VIP packet cannot go on because the path to
 * the backend (with the encapsulation's overhead) is narrower than it, the
 * client gets an ICMP fragmentation-needed (IPv4, DF set) or ICMPv6
 * packet-too-big carrying the MTU it can use, sent back out of the ingress
 * port from the VIP's address — instead of a silent drop. The message
 * quotes the packet's IP header and its first 8 bytes of payload: what a
 * client needs to find its socket. The Rust twin is src/model/icmp.rs.
 */
#ifndef LETHE_ICMP_H
#define LETHE_ICMP_H

#include "csum.h"
#include "encap.h"
#include "parse.h"
#include "stats.h"

#define TOO_BIG_QUOTE 8      /* payload bytes quoted after the IP header */
#define IPV4_MIN_MTU 68
#define IPV6_MIN_MTU 1280

/* Turns the packet into the answer, in place, for a constant L2 length and
 * family (so every packet pointer has a constant offset the verifier can
 * check). Returns 0, or -1 when it cannot (the caller drops it). */
static __always_inline int make_too_big_at(struct xdp_md *ctx, __u32 mtu, const __u32 l3_off,
					   const int v4)
{
	const __u32 grow = v4 ? IPV4_HLEN + ICMP_HLEN : IPV6_HLEN + ICMP_HLEN;
	const __u32 quote = (v4 ? IPV4_HLEN : IPV6_HLEN) + TOO_BIG_QUOTE;
	void *data, *data_end;
	struct ethhdr *eth, *old;

	if (bpf_xdp_adjust_head(ctx, -(int)grow))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	/* The old frame now starts at data + grow; its IP header is where the
	 * quote goes, right after the new IP and ICMP headers. */
	if (data + grow + l3_off + quote > data_end)
		return -1;
	eth = data;
	old = data + grow;
	/* EtherType (and a tag) as they were; the MACs swapped. */
	__builtin_memcpy(data + ETH_ALEN * 2, (void *)old + ETH_ALEN * 2, l3_off - ETH_ALEN * 2);
	__builtin_memcpy(eth->h_dest, old->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, old->h_dest, ETH_ALEN);

	if (v4) {
		struct iphdr *ip = data + l3_off;
		struct icmphdr *ic = (void *)(ip + 1);
		struct iphdr *quoted = (void *)(ic + 1);

		ip->version = 4;
		ip->ihl = 5;
		ip->tos = 0;
		ip->tot_len = bpf_htons(IPV4_HLEN + ICMP_HLEN + quote);
		ip->id = 0;
		ip->frag_off = 0;
		ip->ttl = LETHE_OUTER_TTL;
		ip->protocol = IPPROTO_ICMP;
		ip->saddr = quoted->daddr;
		ip->daddr = quoted->saddr;
		ipv4_set_csum(ip);
		ic->type = ICMP_DEST_UNREACH;
		ic->code = ICMP_FRAG_NEEDED;
		ic->checksum = 0;
		ic->un.frag.__unused = 0;
		ic->un.frag.mtu = bpf_htons(mtu < IPV4_MIN_MTU ? IPV4_MIN_MTU : mtu);
		ic->checksum = csum_fold(sum_words(ic, (ICMP_HLEN + IPV4_HLEN + TOO_BIG_QUOTE) / 2));
	} else {
		struct ipv6hdr *ip6 = data + l3_off;
		struct icmp6hdr *ic = (void *)(ip6 + 1);
		struct ipv6hdr *quoted = (void *)(ic + 1);
		__u32 len = ICMP_HLEN + IPV6_HLEN + TOO_BIG_QUOTE, sum;

		*(__be32 *)ip6 = bpf_htonl(6U << 28);
		ip6->payload_len = bpf_htons(len);
		ip6->nexthdr = IPPROTO_ICMPV6;
		ip6->hop_limit = LETHE_OUTER_TTL;
		__builtin_memcpy(&ip6->saddr, &quoted->daddr, 16);
		__builtin_memcpy(&ip6->daddr, &quoted->saddr, 16);
		ic->icmp6_type = ICMPV6_PKT_TOOBIG;
		ic->icmp6_code = 0;
		ic->icmp6_cksum = 0;
		ic->icmp6_dataun.un_data32[0] = bpf_htonl(mtu < IPV6_MIN_MTU ? IPV6_MIN_MTU : mtu);
		sum = sum_words(&ip6->saddr, 16) + bpf_htons(len) + bpf_htons(IPPROTO_ICMPV6) +
		      sum_words(ic, (ICMP_HLEN + IPV6_HLEN + TOO_BIG_QUOTE) / 2);
		ic->icmp6_cksum = csum_fold(sum);
	}
	/* Cut what follows the quote. */
	return bpf_xdp_adjust_tail(ctx, (int)(l3_off + grow + quote) - (int)(data_end - data));
}

static __always_inline int make_too_big(struct xdp_md *ctx, const struct packet *p, __u32 mtu)
{
	if (p->family == LETHE_AF_INET)
		return p->l3_off == ETH_HLEN ? make_too_big_at(ctx, mtu, ETH_HLEN, 1)
					     : make_too_big_at(ctx, mtu, ETH_HLEN + VLAN_HLEN, 1);
	return p->l3_off == ETH_HLEN ? make_too_big_at(ctx, mtu, ETH_HLEN, 0)
				     : make_too_big_at(ctx, mtu, ETH_HLEN + VLAN_HLEN, 0);
}

/*
 * The path to the backend is too narrow for this packet: answer the client
 * with the MTU it can use (the path's, less what encapsulation adds), or,
 * where no answer is due or would help (an ICMP error, IPv4 without DF,
 * IPv6 of at most 1280 bytes on a narrower path), drop it.
 */
static __always_inline int answer_too_big(struct xdp_md *ctx, struct packet *p,
					  const struct bpf_fib_lookup *fib, __u32 overhead)
{
	__u32 mtu = fib->mtu_result > overhead ? fib->mtu_result - overhead : 0;

	/*
	 * IPv6 below its minimum MTU: the answer would say 1280, and a packet
	 * of 1280 or less would be answered again and again (a tunnel would
	 * fragment the outer packet; XDP cannot). Dropped, and counted.
	 */
	if (p->icmp || (p->family == LETHE_AF_INET && !p->df) ||
	    (p->family != LETHE_AF_INET && mtu < IPV6_MIN_MTU && p->l3_len <= IPV6_MIN_MTU))
		return verdict(ctx, p, XDP_DROP, LETHE_R_FRAG_NEEDED);
	if (make_too_big(ctx, p, mtu))
		return verdict(ctx, p, XDP_DROP, LETHE_R_FRAG_NEEDED);
	return verdict(ctx, p, XDP_TX, LETHE_R_TOO_BIG);
}

#endif /* LETHE_ICMP_H */
