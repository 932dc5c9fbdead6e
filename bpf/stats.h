/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Per-CPU counters, and the one exit every verdict goes through. */
#ifndef LETHE_STATS_H
#define LETHE_STATS_H

#include "maps.h"

static __always_inline void count(void *map, __u32 idx, __u64 bytes)
{
	struct lethe_counter *c = bpf_map_lookup_elem(map, &idx);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* The single exit: counts why, returns what. `bytes` is the frame length
 * as the packet arrived. */
static __always_inline int verdict(__u64 bytes, int action, enum lethe_reason why)
{
	count(&reason_stats, why, bytes);
	return action;
}

#endif /* LETHE_STATS_H */
