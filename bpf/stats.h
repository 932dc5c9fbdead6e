/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Per-CPU counters, and the one exit every verdict goes through. */
#ifndef LETHE_STATS_H
#define LETHE_STATS_H

#include "maps.h"
#include "parse.h"

static __always_inline void count(void *map, __u32 idx, __u64 bytes)
{
	struct lethe_counter *c = bpf_map_lookup_elem(map, &idx);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* Fills the caller's decision record when BPF_PROG_TEST_RUN put one in the
 * metadata area (see struct lethe_trace); real packets have none. */
static __always_inline void trace(struct xdp_md *ctx, const struct packet *p,
				  enum lethe_reason why)
{
	struct lethe_trace *t = (void *)(long)ctx->data_meta;

	if ((void *)(t + 1) > (void *)(long)ctx->data || t->magic != LETHE_TRACE_MAGIC)
		return;
	t->reason = why;
	t->vip_id = p->vip_id;
	t->backend_id = p->backend_id;
	t->hash = p->hash;
}

/* The single exit: counts why (bytes: the frame length on arrival), fills
 * a trace record if asked, returns what. */
static __always_inline int verdict(struct xdp_md *ctx, const struct packet *p, int action,
				   enum lethe_reason why)
{
	count(&reason_stats, why, p->len);
	trace(ctx, p, why);
	return action;
}

#endif /* LETHE_STATS_H */
