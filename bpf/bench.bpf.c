// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Programs of the throughput benchmark (benches/throughput.rs), never
 * loaded by the daemon:
 *
 * - bench_gen: a traffic generator for BPF_PROG_TEST_RUN in live-frames
 *   mode (BPF_F_TEST_XDP_LIVE_FRAMES). Each frame is rewritten from the
 *   template — the kernel recycles pages with whatever bytes the last
 *   receiver left (Lethe rewrites and encapsulates in place) — given a
 *   random source port, so flows spread over backends, and sent with
 *   XDP_TX: out of the run's ingress device, a veth.
 * - bench_drop: the sink at the end of the path (and the trivial receiver
 *   of "the generator alone"); veth counts its drops per queue.
 * - bench_tx: the trivial forwarder: every frame back out, untouched.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define GEN_MAX_LEN 128

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct gen_template {
	__u32 len;	 /* bytes of frame to write, 14..=GEN_MAX_LEN */
	__u32 sport_off; /* offset of the TCP/UDP source port */
	__u8 frame[GEN_MAX_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_template);
} gen_template SEC(".maps");

SEC("xdp")
int bench_gen(struct xdp_md *ctx)
{
	struct gen_template *t;
	__u32 zero = 0, len, off;
	void *data, *data_end;
	__u16 *sport;

	t = bpf_map_lookup_elem(&gen_template, &zero);
	if (!t)
		return XDP_ABORTED;
	len = t->len;
	if (len < 14 || len > GEN_MAX_LEN)
		return XDP_ABORTED;
	if (bpf_xdp_store_bytes(ctx, 0, t->frame, len))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	off = t->sport_off & (GEN_MAX_LEN - 1);
	sport = data + off;
	if ((void *)(sport + 1) > data_end)
		return XDP_ABORTED;
	/* Ports 1024..65535; checksums are left stale: nobody on the path
	 * verifies them, and Lethe's NAT updates them incrementally anyway. */
	*sport = (__u16)(1024 + bpf_get_prandom_u32() % 64512);
	return XDP_TX;
}

SEC("xdp")
int bench_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

SEC("xdp")
int bench_tx(struct xdp_md *ctx)
{
	return XDP_TX;
}
