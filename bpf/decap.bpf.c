// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The backend side: strips the encapsulation Lethe's ipip and gue modes add
 * — IPv4-in-IPv4, IPv6-in-IPv6, IPv4-in-IPv6, and GUE variant 1 (IP in UDP
 * to decap_config.gue_port) over IPv4 or IPv6 — when the outer destination
 * is one of this host's addresses (decap_local), and hands the inner packet
 * to the stack: for hosts without the ipip / ip6_tunnel / fou modules.
 *
 * It never drops. What it does not strip it passes untouched, counted. The
 * outer headers are not checked further than needed to strip them: the
 * inner packet's own checksums protect what is delivered. A congestion
 * mark on the outer header is carried onto the inner one (RFC 6040). The Rust twin is
 * src/model/decap.rs; `lethe decap attach IFACE` installs this program.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "common.h"
#include "csum.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Keeps the ABI enums of this program in its BTF. */
const volatile enum lethe_decap_reason lethe_decap_abi = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lethe_decap_config);
} decap_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct lethe_local_addr);
	__type(value, __u8);
} decap_local SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LETHE_D_MAX);
	__type(key, __u32);
	__type(value, struct lethe_counter);
} decap_stats SEC(".maps");

static __always_inline int done(__u64 bytes, enum lethe_decap_reason why)
{
	__u32 idx = why;
	struct lethe_counter *c = bpf_map_lookup_elem(&decap_stats, &idx);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
	return XDP_PASS;
}

static __always_inline int is_local(const void *addr, __u8 family)
{
	struct lethe_local_addr key = { .family = family };

	__builtin_memcpy(key.addr, addr, family == LETHE_AF_INET ? 4 : 16);
	return bpf_map_lookup_elem(&decap_local, &key) != NULL;
}

/*
 * Strips olen bytes after the L2 header (l3_off bytes): the L2 header moves
 * forward over the outer headers, its EtherType becomes the inner one.
 */
static __always_inline int strip(struct xdp_md *ctx, __u32 l3_off, __u32 olen, __be16 inner_proto)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (l3_off == ETH_HLEN) {
		if (data + olen + ETH_HLEN > data_end)
			return -1;
		/* olen >= 20 > 18: the copy never overlaps itself. */
		__builtin_memcpy(data + olen, data, ETH_HLEN);
		((struct ethhdr *)(data + olen))->h_proto = inner_proto;
	} else {
		if (data + olen + ETH_HLEN + VLAN_HLEN > data_end)
			return -1;
		__builtin_memcpy(data + olen, data, ETH_HLEN + VLAN_HLEN);
		((struct vlan_hdr *)(data + olen + ETH_HLEN))->h_vlan_encapsulated_proto = inner_proto;
	}
	return bpf_xdp_adjust_head(ctx, (int)olen);
}

#define ECN_NOT_ECT 0
#define ECN_ECT1 1
#define ECN_ECT0 2
#define ECN_CE 3

/* The ECN field of an IP header: IPv4's TOS, or IPv6's traffic class
 * (the low nibble of its second byte's high half). */
static __always_inline __u8 ecn_of(const __u8 *ip, __be16 type)
{
	return type == bpf_htons(ETH_P_IP) ? ip[1] & 3 : (ip[1] >> 4) & 3;
}

/*
 * RFC 6040 decapsulation, normal mode: a congestion mark (CE) the outer
 * header picked up on the way is carried onto an ECN-capable inner
 * packet, as is ECT(1) onto ECT(0). An inner packet that is not
 * ECN-capable stays as it is: the RFC would drop it under an outer CE,
 * and this program never drops. `inner`: a whole inner IP header.
 */
static __always_inline void ecn_decap(__u8 outer, __u8 *inner, __be16 type)
{
	__u8 in = ecn_of(inner, type), out;

	if (in == ECN_NOT_ECT || in == ECN_CE)
		return;
	if (outer == ECN_CE)
		out = ECN_CE;
	else if (outer == ECN_ECT1 && in == ECN_ECT0)
		out = ECN_ECT1;
	else
		return;
	if (type == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = (void *)inner;
		__u16 before = *(__u16 *)inner;

		inner[1] = (inner[1] & ~3) | out;
		iph->check = csum_replace16(iph->check, before, *(__u16 *)inner);
	} else {
		inner[1] = (inner[1] & ~0x30) | (out << 4);
	}
}

/* The inner packet's EtherType from its version nibble, or 0. */
static __always_inline __be16 inner_type(void *inner, void *data_end)
{
	__u8 *v = inner;

	if ((void *)(v + 1) > data_end)
		return 0;
	if ((*v >> 4) == 4)
		return bpf_htons(ETH_P_IP);
	if ((*v >> 4) == 6)
		return bpf_htons(ETH_P_IPV6);
	return 0;
}

SEC("xdp")
int lethe_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	const struct lethe_decap_config *cfg;
	struct ethhdr *eth = data;
	__u32 l3_off = ETH_HLEN, olen, zero = 0;
	enum lethe_decap_reason why;
	__be16 proto, want;
	__u8 next, outer_ecn;
	void *l4;

	if ((void *)(eth + 1) > data_end)
		return done(len, LETHE_D_MALFORMED);
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		struct vlan_hdr *vlan = (void *)(eth + 1);

		if ((void *)(vlan + 1) > data_end)
			return done(len, LETHE_D_MALFORMED);
		proto = vlan->h_vlan_encapsulated_proto;
		l3_off = ETH_HLEN + VLAN_HLEN;
	}
	cfg = bpf_map_lookup_elem(&decap_config, &zero);
	if (!cfg)
		return done(len, LETHE_D_MALFORMED);

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = data + l3_off;

		if ((void *)(iph + 1) > data_end)
			return done(len, LETHE_D_MALFORMED);
		if (iph->version != 4 || iph->ihl < 5)
			return done(len, LETHE_D_MALFORMED);
		next = iph->protocol;
		if (next != IPPROTO_IPIP && next != IPPROTO_UDP)
			return done(len, LETHE_D_NOT_ENCAP);
		if (iph->ihl != 5 || (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
			return done(len, LETHE_D_FRAGMENT);
		if (!is_local(&iph->daddr, LETHE_AF_INET))
			return done(len, LETHE_D_NOT_LOCAL);
		olen = IPV4_HLEN;
		l4 = iph + 1;
		outer_ecn = ecn_of((void *)iph, proto);
		why = LETHE_D_IPIP;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = data + l3_off;

		if ((void *)(ip6h + 1) > data_end)
			return done(len, LETHE_D_MALFORMED);
		if (ip6h->version != 6)
			return done(len, LETHE_D_MALFORMED);
		next = ip6h->nexthdr;
		if (next != IPPROTO_IPIP && next != IPPROTO_IPV6 && next != IPPROTO_UDP)
			return done(len, LETHE_D_NOT_ENCAP);
		if (!is_local(&ip6h->daddr, LETHE_AF_INET6))
			return done(len, LETHE_D_NOT_LOCAL);
		olen = IPV6_HLEN;
		l4 = ip6h + 1;
		outer_ecn = ecn_of((void *)ip6h, proto);
		why = next == IPPROTO_IPV6 ? LETHE_D_IP6IP6 : LETHE_D_IP4IN6;
	} else {
		return done(len, LETHE_D_NOT_ENCAP);
	}

	if (next == IPPROTO_UDP) {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return done(len, LETHE_D_MALFORMED);
		if (!cfg->gue_port || udp->dest != cfg->gue_port)
			return done(len, LETHE_D_NOT_ENCAP);
		olen += UDP_HLEN;
		l4 = udp + 1;
		why = proto == bpf_htons(ETH_P_IP) ? LETHE_D_GUE4 : LETHE_D_GUE6;
		want = inner_type(l4, data_end);
	} else {
		want = bpf_htons(next == IPPROTO_IPV6 ? ETH_P_IPV6 : ETH_P_IP);
	}
	/* The inner header must be there and say what the outer one said. */
	if (!want || inner_type(l4, data_end) != want)
		return done(len, LETHE_D_MALFORMED);
	if (want == bpf_htons(ETH_P_IP)) {
		if (l4 + IPV4_HLEN > data_end)
			return done(len, LETHE_D_MALFORMED);
	} else if (l4 + IPV6_HLEN > data_end) {
		return done(len, LETHE_D_MALFORMED);
	}
	ecn_decap(outer_ecn, l4, want);
	if (strip(ctx, l3_off, olen, want))
		return done(len, LETHE_D_MALFORMED);
	return done(len, why);
}
