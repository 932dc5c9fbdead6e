// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The trivial XDP program: every packet passes. The floor that benchmarks
 * measure Lethe against, and the program tests attach to veth peers so
 * frames sent back with XDP_TX are received there.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
