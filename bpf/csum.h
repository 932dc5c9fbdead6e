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

#endif /* LETHE_CSUM_H */
