/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The seeded flow hash, and the Maglev slot it selects.
 *
 * Word by word, the short-input path of XXH32: cheap in BPF (a multiply and
 * a rotate per 32-bit word), good avalanche from the final mix. Words are
 * the header bytes loaded little-endian: [src, dst, ports, proto] with 1 or
 * 4 words per address. With LETHE_VIP_F_STICKY the source port is zero, so
 * one client keeps one backend across connections. The bit-exact Rust twin
 * is src/flow_hash.rs.
 *
 * The VIP filter bits and vip_index slots below decide where the daemon
 * writes pinned entries: this file's code is part of the pins' layout stamp
 * (build/layout.rs, abi.h).
 */
#ifndef LETHE_HASH_H
#define LETHE_HASH_H

#include "parse.h"

#define LH_PRIME2 0x85EBCA77U
#define LH_PRIME3 0xC2B2AE3DU
#define LH_PRIME4 0x27D4EB2FU
#define LH_PRIME5 0x165667B1U

static __always_inline __u32 lh_rotl(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 lh_round(__u32 h, __u32 word)
{
	h += word * LH_PRIME3;
	return lh_rotl(h, 17) * LH_PRIME4;
}

static __always_inline __u32 lh_final(__u32 h)
{
	h ^= h >> 15;
	h *= LH_PRIME2;
	h ^= h >> 13;
	h *= LH_PRIME3;
	h ^= h >> 16;
	return h;
}

/* An address's 32-bit words (as loaded, little-endian) folded into one.
 * Rust twin: flow_hash::addr_fold. */
static __always_inline __u32 addr_fold(const __u32 *a, __u8 family)
{
	__u32 x = a[0];

	if (family != LETHE_AF_INET)
		x ^= lh_rotl(a[1], 8) ^ lh_rotl(a[2], 16) ^ lh_rotl(a[3], 24);
	return x;
}

/* The bit of an address in an addr_filter bitmap: the folded address, then
 * a multiplicative hash to 16 bits. Rust twin: flow_hash::addr_bit. */
static __always_inline __u32 addr_bit(const __u32 *a, __u8 family)
{
	return (addr_fold(a, family) * 0x9E3779B1U) >> 16;
}

/* The bit of an address in a quick_filter bitmap (see LETHE_QUICK_BITS in
 * abi.h): the address's 4 bytes as one little-endian word, or the XOR of
 * its two 8-byte halves, times a 64-bit odd constant (XXH64's second
 * prime), top 16 bits. Rust twin: quick_filter::quick_bit. */
#define LH_QUICK 0xC2B2AE3D27D4EB4FULL

static __always_inline __u32 quick_bit4(__u32 a)
{
	return ((__u64)a * LH_QUICK) >> 48;
}

static __always_inline __u32 quick_bit6(const __u64 *a)
{
	return ((a[0] ^ a[1]) * LH_QUICK) >> 48;
}

/* The bit of a VIP key in quick_filter's port bitmap: the address word as
 * quick_bit's (the 4 bytes, or the halves' XOR), the port's two bytes as
 * loaded (little-endian) at bit 32 and the protocol at bit 48, XORed, then
 * as quick_bit. Rust twin: quick_filter::quick_port_bit. */
static __always_inline __u32 quick_port_bit(__u64 fold, __be16 port, __u8 proto)
{
	return ((fold ^ ((__u64)port << 32) ^ ((__u64)proto << 48)) * LH_QUICK) >> 48;
}

/* The bit of a VIP key (folded address, port as in the header, protocol)
 * in its address's addr_filter word (see LETHE_FILTER_BITS in abi.h).
 * Rust twin: flow_hash::key_bit. */
static __always_inline __u32 key_bit(__u32 fold, __be16 port, __u8 proto)
{
	return ((fold ^ ((__u32)port << 16) ^ ((__u32)proto << 8)) * 0x9E3779B1U) >> 26;
}

/* The home entry of a VIP key (address, port as in the header, protocol)
 * in a vip_index half under `seed`. Rust twin: flow_hash::vip_slot. */
static __always_inline __u32 vip_slot(const __u32 *a, __u8 family, __be16 port, __u8 proto,
				      __u32 seed)
{
	__u32 x = addr_fold(a, family) ^ (((__u32)port << 16) | ((__u32)proto << 8) | family);

	return ((x ^ (seed * LH_PRIME2)) * 0x9E3779B1U) >> (32 - LETHE_VIP_SLOT_BITS);
}

static __always_inline __u32 flow_hash(const struct packet *p, __u32 seed, int sticky)
{
	__u32 ports = (sticky ? 0 : (__u32)p->sport) | ((__u32)p->dport << 16);
	__u32 h;

	if (p->family == LETHE_AF_INET) {
		h = seed + LH_PRIME5 + 16;
		h = lh_round(h, p->src[0]);
		h = lh_round(h, p->dst[0]);
	} else {
		h = seed + LH_PRIME5 + 40;
#pragma unroll
		for (int i = 0; i < 4; i++)
			h = lh_round(h, p->src[i]);
#pragma unroll
		for (int i = 0; i < 4; i++)
			h = lh_round(h, p->dst[i]);
	}
	h = lh_round(h, ports);
	h = lh_round(h, p->proto);
	return lh_final(h);
}

/* hash -> slot in [0, M): a multiply and shift instead of a division. */
static __always_inline __u32 maglev_slot(__u32 hash, __u32 table_size)
{
	return ((__u64)hash * table_size) >> 32;
}

#endif /* LETHE_HASH_H */
