// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Lethe's XDP program: parse, find the VIP, hash the flow, pick the backend
 * from the VIP's Maglev table, rewrite in place, send. No per-flow state:
 * the same packet and the same maps give the same decision on every node.
 *
 * The Rust reference model (src/model/) mirrors this file step by step;
 * tests/fixtures.rs and tests/model_vs_kernel.rs hold the two to the same
 * bytes.
 */
#include "common.h"
#include "maps.h"
#include "stats.h"
#include "parse.h"
#include "hash.h"
#include "forward.h"
#include "encap.h"
#include "nat.h"
#include "icmp.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile struct lethe_abi_enums lethe_abi = {};

/* The verdict of a reason that is not a forward: the pass group (NOT_IP
 * up to the first drop reason, and ICMP_INNER), else drop. */
static __always_inline int reason_action(enum lethe_reason why)
{
	if ((why >= LETHE_R_NOT_IP && why < LETHE_R_TRUNC_ETH) || why == LETHE_R_ICMP_INNER ||
	    why == LETHE_R_RETURN_PASSED)
		return XDP_PASS;
	return XDP_DROP;
}

/* Whether `a` may be in the addr_filter bitmap starting at word `base`:
 * false proves it is not (an array lookup, no hashing of a key). */
static __always_inline int addr_maybe(__u32 base, const __u32 *a, __u8 family)
{
	__u32 bit = addr_bit(a, family);
	__u32 word = base + (bit >> 6);
	const __u64 *w = bpf_map_lookup_elem(&addr_filter, &word);

	return w && ((*w >> (bit & 63)) & 1);
}

/* Whether the packet's (dst, dport, proto) or (dst, 0, proto) may be a VIP:
 * false proves neither is. One word of addr_filter (see abi.h): the
 * address's bit first, which answers most traffic to other addresses
 * without hashing the keys, then the two key bits. */
static __always_inline int vip_maybe(const struct packet *p)
{
	__u32 fold = addr_fold(p->dst, p->family);
	__u32 bit = (fold * 0x9E3779B1U) >> 16;
	__u32 word = LETHE_FILTER_VIP + (bit >> 6);
	const __u64 *w = bpf_map_lookup_elem(&addr_filter, &word);
	__u64 x;

	if (!w)
		return 0;
	x = *w;
	if (!((x >> (bit & 63)) & 1))
		return 0;
	return ((x >> key_bit(fold, p->dport, p->proto)) | (x >> key_bit(fold, 0, p->proto))) & 1;
}

/* The record of VIP (dst, port, proto) in vip_index's half at `base`:
 * from the key's home entry on, until the key or an empty entry. */
static __always_inline const struct lethe_vip *index_lookup(const struct packet *p, __be16 port,
							    __u32 base, __u32 seed)
{
	/* The key's last 4 bytes (port, proto, family) as one loaded word. */
	__u32 tail = (__u32)port | ((__u32)p->proto << 16) | ((__u32)p->family << 24);
	__u32 home = vip_slot(p->dst, p->family, port, p->proto, seed);

#pragma unroll
	for (int i = 0; i < LETHE_VIP_PROBES; i++) {
		__u32 idx = base + ((home + i) & (LETHE_VIP_SLOTS - 1));
		const struct lethe_vip_entry *e = bpf_map_lookup_elem(&vip_index, &idx);
		const __u32 *k;

		if (!e)
			return NULL;
		k = (const __u32 *)&e->key;
		/* An IPv4 key's other address words are zero, as the
		 * packet's: its tail (family included) and first word say
		 * it all. */
		if (p->family == LETHE_AF_INET ? !((k[0] ^ p->dst[0]) | (k[4] ^ tail))
					       : !((k[0] ^ p->dst[0]) | (k[1] ^ p->dst[1]) |
						   (k[2] ^ p->dst[2]) | (k[3] ^ p->dst[3]) |
						   (k[4] ^ tail)))
			return &e->vip;
		if (!e->key.family)
			return NULL;
	}
	return NULL;
}

/* The VIP of (destination, port, protocol), else of (destination, 0,
 * protocol): an all-ports VIP. addr_filter answers most packets that are
 * no VIP's with two bits of one word; vip_index the rest, and `vips` the keys the
 * index could not place (LETHE_VIP_HALF_F_OVERFLOW). `filtered`: the first
 * test's port bitmap already found the key's bit set (quick_port_test), so
 * addr_filter, which would test it again, is skipped. */
static __always_inline const struct lethe_vip *find_vip(const struct packet *p, int filtered)
{
	const struct lethe_vip_index_ctl *ctl;
	struct lethe_vip_key key = {};
	const struct lethe_vip *vip;
	__u32 zero = 0, active, seed, overflow;

	if (!filtered && !vip_maybe(p))
		return NULL;
	ctl = bpf_map_lookup_elem(&vip_index_ctl, &zero);
	if (!ctl)
		return NULL;
	/* Read once: the half, its seed and its flags belong together. */
	active = *(volatile const __u32 *)&ctl->active & 1;
	seed = ctl->half[active].seed;
	overflow = ctl->half[active].flags & LETHE_VIP_HALF_F_OVERFLOW;

	vip = index_lookup(p, p->dport, active * LETHE_VIP_SLOTS, seed);
	if (vip)
		return vip;
	if (overflow) {
		__builtin_memcpy(key.addr, p->dst, 16);
		key.port = p->dport;
		key.proto = p->proto;
		key.family = p->family;
		vip = bpf_map_lookup_elem(&vips, &key);
		if (vip)
			return vip;
	}
	vip = index_lookup(p, 0, active * LETHE_VIP_SLOTS, seed);
	if (vip || !overflow)
		return vip;
	key.port = 0;
	return bpf_map_lookup_elem(&vips, &key);
}

/* The backend id in the VIP's current table for this hash, or NULL. A
 * table of the fixed size is looked up inline (see LETHE_FIXED_TABLE_SIZE).
 * The verifier inlines a lookup only at a call site that sees one kind of
 * map, so the two lookups must stay apart: the empty asm after the first
 * keeps the compiler from sinking both into one call. */
static __always_inline const __u32 *pick_backend(const struct lethe_vip *vip, __u32 hash)
{
	__u32 table_id = vip->table_id;
	const __u32 *id;
	__u32 slot;
	void *table;

	if (vip->flags & LETHE_VIP_F_FIXED_TABLE) {
		table = bpf_map_lookup_elem(&tables_fixed, &table_id);
		if (!table)
			return NULL;
		slot = maglev_slot(hash, LETHE_FIXED_TABLE_SIZE);
		id = bpf_map_lookup_elem(table, &slot);
		asm volatile("" : "+r"(id));
		return id;
	}
	table = bpf_map_lookup_elem(&tables, &table_id);
	if (!table)
		return NULL;
	slot = maglev_slot(hash, vip->table_size);
	return bpf_map_lookup_elem(table, &slot);
}

/* Backend -> client traffic of a nat VIP: the source becomes the VIP; and
 * ICMP errors to clients about packets a backend received: the quoted
 * packet becomes the one the client sent (nat_icmp_rewrite, NAT_SRC). */
static __always_inline int nat_return_path(struct xdp_md *ctx, struct packet *p)
{
	const struct lethe_nat_return *r = find_nat_return(p);
	struct bpf_fib_lookup fib;
	const __u8 *macs = NULL;
	enum lethe_reason why;
	void *data, *data_end;
	int action;

	if (!r)
		return verdict(ctx, p, XDP_PASS, LETHE_R_NOT_VIP);
	p->ingress = ctx->ingress_ifindex;
	p->vip_id = r->vip_id;
	p->mode = LETHE_MODE_NAT;
	count(&return_stats, r->vip_id, p->len);
	/* What a backend sends that Lethe cannot forward itself — above all
	 * to this host, like the answers to health checks — is the kernel's,
	 * untouched. Towards a client whose next hop is not resolved yet, it is
	 * the kernel's too, but rewritten: the kernel resolves the neighbour
	 * and forwards it, where an untouched reply would reach the client
	 * from the backend's address and be reset. */
	why = client_nexthop(ctx, p, &fib, &macs);
	/* Larger than the path to the client but fragmentable (IPv4 without
	 * DF): rewritten and passed too, for the kernel to fragment; untouched,
	 * the client would get fragments from the backend's address. */
	if (why == LETHE_R_FRAG_NEEDED && p->family == LETHE_AF_INET && !p->df && !p->icmp)
		why = LETHE_R_RETURN_PASSED;
	else if (why != NEXTHOP_OK && why != LETHE_R_NO_NEIGH)
		return verdict(ctx, p, XDP_PASS, LETHE_R_RETURN_PASSED);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (p->icmp ? nat_icmp_rewrite(data, data_end, p, NAT_SRC, r->addr, r->port)
		    : nat_rewrite(data, data_end, p, NAT_SRC, r->addr, r->port))
		return verdict(ctx, p, XDP_DROP, LETHE_R_INTERNAL);
	if (why != NEXTHOP_OK)
		return verdict(ctx, p, XDP_PASS, why);
	if (data + sizeof(struct ethhdr) > data_end)
		return verdict(ctx, p, XDP_DROP, LETHE_R_TRUNC_ETH);
	set_macs(data, macs);
	action = transmit(ctx, &fib, &why);
	return verdict(ctx, p, action, why);
}

/* See LETHE_QUICK_BITS in abi.h. */
__u64 quick_filter[LETHE_QUICK_MAPS * LETHE_QUICK_WORDS] SEC(".data.quick");

/* Whether bit `bit` of the quick_filter bitmap at word `base` is set. `bit`
 * is below 2^16: the verifier sees the index in bounds, no test needed. */
static __always_inline __u64 quick_has(__u32 base, __u32 bit)
{
	return (quick_filter[base + (bit >> 6)] >> (bit & 63)) & 1;
}

/* What the first test leaves to what follows: the full path for
 * everything, the full path for a packet the port bitmap says may be a
 * VIP's (its address filter test is then skipped: see find_vip), or the
 * second stage (quick_port_test). */
#define QUICK_FULL -1
#define QUICK_MAYBE_VIP -2
#define QUICK_PORT -3

/* Passes a packet that is no VIP's, counted not_vip. */
static __always_inline int quick_pass(struct xdp_md *ctx, void *data, void *data_end)
{
	/* What verdict() reads: constants but the length, folded away. */
	struct packet p = {
		.len = data_end - data,
		.vip_id = LETHE_NONE,
		.backend_id = LETHE_NONE,
	};

	return verdict(ctx, &p, XDP_PASS, LETHE_R_NOT_VIP);
}

/*
 * The first test (Rust twin: model::quick_not_vip), before parse(): an
 * IPv4 header without options or an IPv6 header, carrying anything but
 * ICMP, whose destination's bit in the VIP bitmap and source's bit in the
 * nat bitmap are clear (quick_filter) is passed untouched, counted not_vip
 * — its lengths and transport header unread: Lethe does not vet traffic it
 * does not balance, the kernel does. ICMP goes the full way, since an
 * error is routed by the flow it quotes. Returns the verdict, QUICK_FULL
 * for the full path (another EtherType, a VLAN tag, a frame too short for
 * the header, a nat bit set, an all-ports mark), or QUICK_PORT when only
 * the destination's bit is set: a VIP's address, or one sharing its bit
 * (quick_port_test).
 */
static __always_inline int quick_not_vip(struct xdp_md *ctx, void *data, void *data_end)
{
	struct ethhdr *eth = data;
	__u32 dst_bit, src_bit;

	/* The IPv4 header's end first: one test for the common case. */
	if (data + ETH_HLEN + IPV4_HLEN > data_end)
		return QUICK_FULL;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = (void *)(eth + 1);

		if (*(__u8 *)iph != 0x45 || iph->protocol == IPPROTO_ICMP)
			return QUICK_FULL;
		dst_bit = quick_bit4(iph->daddr);
		src_bit = quick_bit4(iph->saddr);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = (void *)(eth + 1);

		if ((void *)(ip6h + 1) > data_end)
			return QUICK_FULL;
		if (ip6h->version != 6 || ip6h->nexthdr == IPPROTO_ICMPV6)
			return QUICK_FULL;
		/* saddr then daddr, as 4 words from the header's 8th byte. */
		const __u64 *addrs = (void *)ip6h + 8;

		src_bit = quick_bit6(addrs);
		dst_bit = quick_bit6(addrs + 2);
	} else {
		return QUICK_FULL;
	}
	/* One branch for both bits: `|`, not `||`. */
	if (quick_has(LETHE_QUICK_VIP, dst_bit) | quick_has(LETHE_QUICK_NAT, src_bit)) {
		/* The neighbour bit: an all-ports VIP may be there. */
		if (quick_has(LETHE_QUICK_NAT, src_bit) | quick_has(LETHE_QUICK_VIP, dst_bit ^ 1))
			return QUICK_FULL;
		return QUICK_PORT;
	}
	return quick_pass(ctx, data, data_end);
}

/*
 * The first test's second stage, for a packet to a VIP's address (its VIP
 * bit set; its nat bit and its VIP bit's neighbour, the all-ports mark,
 * clear): TCP or UDP, not an IPv4 fragment, the destination port in the
 * frame — if (dst, dport, proto) has no bit in the port bitmap, it is no
 * VIP's, passed here rather than parsed in full: traffic to a VIP's
 * address on another port costs little more than other traffic. Returns the verdict,
 * QUICK_FULL, or QUICK_MAYBE_VIP. The header is read again from the frame
 * rather than kept from the first stage: kept, it took a register the
 * first stage's own exit needs, and the context went to the stack on
 * every packet's way.
 */
static __always_inline int quick_port_test(struct xdp_md *ctx, void *data, void *data_end)
{
	struct ethhdr *eth = data;
	void *l4;
	__u64 fold;
	__u8 proto;

	/* Both ports of an IPv4 header without options. */
	if (data + ETH_HLEN + IPV4_HLEN + 4 > data_end)
		return QUICK_FULL;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = (void *)(eth + 1);

		if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
			return QUICK_FULL;
		proto = iph->protocol;
		fold = iph->daddr;
		l4 = iph + 1;
	} else {
		struct ipv6hdr *ip6h = (void *)(eth + 1);
		const __u64 *addrs = (void *)ip6h + 8;

		if ((void *)(ip6h + 1) + 4 > data_end)
			return QUICK_FULL;
		proto = ip6h->nexthdr;
		fold = addrs[2] ^ addrs[3];
		l4 = ip6h + 1;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return QUICK_FULL;
	if (quick_has(LETHE_QUICK_PORT, quick_port_bit(fold, ((__be16 *)l4)[1], proto)))
		return QUICK_MAYBE_VIP;
	return quick_pass(ctx, data, data_end);
}

/* Everything after quick_not_vip. Inlined: called as a function of its
 * own (a smaller frame for the entry), it cost packets to VIPs ~5 ns more
 * and saved those that leave at the first test nothing measurable. */
static __always_inline int full_path(struct xdp_md *ctx, int filtered)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	const struct lethe_config *cfg = &live_config;
	const struct lethe_backend *be;
	const struct lethe_vip *vip;
	struct bpf_fib_lookup fib;
	/* The new MACs (set_macs): a nexthops entry's, or fib_mac_buf's. */
	const __u8 *macs = NULL;
	__u8 fib_mac_buf[12] __attribute__((aligned(8)));
	enum lethe_reason why;
	struct packet p = { .vip_id = LETHE_NONE, .backend_id = LETHE_NONE };
	const __u32 *backend_id;
	__u32 hash;
	int action;

	why = parse(data, data_end, &p);
	if (unlikely(why != PARSE_OK))
		return verdict(ctx, &p, reason_action(why), why);

	vip = find_vip(&p, filtered);
	if (!vip) {
		if ((cfg->flags & LETHE_CFG_F_NAT) && addr_maybe(LETHE_FILTER_NAT, p.src, p.family))
			return nat_return_path(ctx, &p);
		return verdict(ctx, &p, XDP_PASS, LETHE_R_NOT_VIP);
	}
	/* Read only on the paths that need it (next hop, transmit): it is
	 * three dependent loads (rxq, device, ifindex), a measurable part of
	 * the cost of a packet that is no VIP's. */
	p.ingress = ctx->ingress_ifindex;
	p.vip_id = vip->vip_id;
	p.mode = vip->mode;
	if (vip->event_sample_rate)
		p.sample = bpf_get_prandom_u32() % vip->event_sample_rate == 0;
	count(&vip_stats, vip->vip_id, p.len);

	hash = flow_hash(&p, cfg->hash_seed, vip->flags & LETHE_VIP_F_STICKY);
	p.hash = hash;

	backend_id = pick_backend(vip, hash);
	if (!backend_id)
		return verdict(ctx, &p, XDP_DROP, LETHE_R_NO_BACKEND);
	be = bpf_map_lookup_elem(&backends, backend_id);
	if (!be)
		return verdict(ctx, &p, XDP_DROP, LETHE_R_NO_BACKEND);
	p.backend_id = *backend_id;

	switch (vip->mode) {
	case LETHE_MODE_DSR:
		if (be->family != p.family)
			return verdict(ctx, &p, XDP_DROP, LETHE_R_BAD_BACKEND);
		why = backend_nexthop(ctx, &p, be, *backend_id, p.l3_len, 1, &fib, &macs);
		if (why == LETHE_R_FRAG_NEEDED)
			return answer_too_big(ctx, &p, &fib, 0);
		if (why != NEXTHOP_OK)
			return verdict(ctx, &p, reason_action(why), why);
		if (data + sizeof(struct ethhdr) > data_end)
			return verdict(ctx, &p, XDP_DROP, LETHE_R_TRUNC_ETH);
		set_macs(data, macs);
		break;
	case LETHE_MODE_IPIP:
	case LETHE_MODE_GUE: {
		__be16 gue_port = vip->mode == LETHE_MODE_GUE ? cfg->gue_port : 0;
		const struct lethe_backend_src *src = NULL;

		if (be->family == LETHE_AF_INET && p.family == LETHE_AF_INET6)
			return verdict(ctx, &p, XDP_DROP, LETHE_R_BAD_BACKEND);
		if (be->flags & LETHE_BACKEND_F_SRC)
			src = bpf_map_lookup_elem(&backend_srcs, backend_id);
		/* Without a cached source the route lookup picks one, every
		 * packet (only when the control plane could not resolve it). */
		if (src)
			why = backend_nexthop(ctx, &p, be, *backend_id,
					      p.l3_len + encap_len(be->family, gue_port != 0), 0,
					      &fib, &macs);
		else
			why = nexthop(ctx, &p, be->addr, be->family,
				      p.l3_len + encap_len(be->family, gue_port != 0), 1, &fib);
		if (why == LETHE_R_FRAG_NEEDED)
			return answer_too_big(ctx, &p, &fib, encap_len(be->family, gue_port != 0));
		if (why != NEXTHOP_OK)
			return verdict(ctx, &p, reason_action(why), why);
		if (src) {
			if (be->family == LETHE_AF_INET)
				__builtin_memcpy(&fib.ipv4_src, src->addr, 4);
			else
				__builtin_memcpy(fib.ipv6_src, src->addr, 16);
		}
		if (!src)
			macs = fib_macs(&fib, fib_mac_buf);
		if (encap(ctx, &p, be, &fib, macs, hash, gue_port))
			return verdict(ctx, &p, XDP_DROP, LETHE_R_ENCAP_FAILED);
		break;
	}
	case LETHE_MODE_NAT:
		if (be->family != p.family)
			return verdict(ctx, &p, XDP_DROP, LETHE_R_BAD_BACKEND);
		why = backend_nexthop(ctx, &p, be, *backend_id, p.l3_len, 0, &fib, &macs);
		if (why == LETHE_R_FRAG_NEEDED)
			return answer_too_big(ctx, &p, &fib, 0);
		if (why != NEXTHOP_OK && why != LETHE_R_NO_NEIGH)
			return verdict(ctx, &p, reason_action(why), why);
		if (p.icmp ? nat_icmp_rewrite(data, data_end, &p, NAT_DST, be->addr, be->port)
			   : nat_rewrite(data, data_end, &p, NAT_DST, be->addr, be->port))
			return verdict(ctx, &p, XDP_DROP, LETHE_R_INTERNAL);
		/* Rewritten, the packet is an ordinary one to the backend: the
		 * kernel resolves the neighbour and forwards it (untouched, it
		 * would be routed to the VIP, back where it came from). */
		if (why == LETHE_R_NO_NEIGH)
			return verdict(ctx, &p, XDP_PASS, LETHE_R_NO_NEIGH);
		if (data + sizeof(struct ethhdr) > data_end)
			return verdict(ctx, &p, XDP_DROP, LETHE_R_TRUNC_ETH);
		set_macs(data, macs);
		break;
	default:
		return verdict(ctx, &p, XDP_DROP, LETHE_R_MODE_UNSUPPORTED);
	}

	action = transmit(ctx, &fib, &why);
	count(&backend_stats, *backend_id, p.len);
	return verdict(ctx, &p, action, why);
}

SEC("xdp")
int lethe_xdp(struct xdp_md *ctx)
{
	int action = quick_not_vip(ctx, (void *)(long)ctx->data, (void *)(long)ctx->data_end);

	if (action == QUICK_PORT)
		action = quick_port_test(ctx, (void *)(long)ctx->data,
					 (void *)(long)ctx->data_end);
	if (action >= 0)
		return action;
	return full_path(ctx, action == QUICK_MAYBE_VIP);
}
