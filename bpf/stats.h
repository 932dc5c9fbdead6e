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

/* Writes a decision event; a full ring loses the event, counted, and never
 * holds the packet up. */
static __noinline void emit_event(struct xdp_md *ctx, const struct packet *p, int action,
				  enum lethe_reason why)
{
	struct lethe_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		count(&event_stats, LETHE_EVENTS_DROPPED, 0);
		return;
	}
	e->time_ns = bpf_ktime_get_boot_ns();
	e->version = LETHE_EVENT_VERSION;
	e->verdict = action;
	e->reason = why;
	e->mode = p->mode;
	e->family = p->family;
	e->proto = p->proto;
	e->sport = p->sport;
	e->dport = p->dport;
	e->_pad0 = 0;
	e->vip_id = p->vip_id;
	e->backend_id = p->backend_id;
	e->ifindex = ctx->ingress_ifindex;
	__builtin_memcpy(e->src, p->src, 16);
	__builtin_memcpy(e->dst, p->dst, 16);
	bpf_ringbuf_submit(e, 0);
	count(&event_stats, LETHE_EVENTS_SENT, 0);
}

/* The single exit: counts why (bytes: the frame length on arrival), fills
 * a trace record if asked, emits a sampled event, returns what. With
 * sampling off, events cost this one branch. */
static __always_inline int verdict(struct xdp_md *ctx, const struct packet *p, int action,
				   enum lethe_reason why)
{
	count(&reason_stats, why, p->len);
	trace(ctx, p, why);
	if (p->sample)
		emit_event(ctx, p, action, why);
	return action;
}

#endif /* LETHE_STATS_H */
