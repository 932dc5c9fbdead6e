/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Internet checksums. */
#ifndef LETHE_CSUM_H
#define LETHE_CSUM_H

#include "common.h"

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Header checksum of a 20-byte IPv4 header (no options), set in place. */
static __always_inline void ipv4_set_csum(struct iphdr *iph)
{
	__u16 *word = (__u16 *)iph;
	__u32 sum = 0;

	iph->check = 0;
#pragma unroll
	for (int i = 0; i < IPV4_HLEN / 2; i++)
		sum += word[i];
	iph->check = csum_fold(sum);
}

/*
 * Incremental update (RFC 1624, eqn. 3): HC' = ~(~HC + ~m + m') over the
 * 16-bit words that change. Words are loaded as they lie in the packet;
 * one's complement sums do not care about byte order as long as every
 * word is read the same way. The Rust twin is src/model/csum.rs.
 */
static __always_inline __u16 csum_replace(__u16 check, const __u16 *from, const __u16 *to,
					  int words)
{
	__u32 sum = (__u16)~check;

#pragma unroll
	for (int i = 0; i < words; i++)
		sum += (__u16)~from[i] + to[i];
	return csum_fold(sum);
}

static __always_inline __u16 csum_replace16(__u16 check, __u16 from, __u16 to)
{
	return csum_replace(check, &from, &to, 1);
}

#endif /* LETHE_CSUM_H */
