/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Every map of the XDP program. Names are the ABI: the Rust dataplane module
 * opens them by these names, and they are pinned under them. */
#ifndef LETHE_MAPS_H
#define LETHE_MAPS_H

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lethe_config);
} lb_config SEC(".maps");

/* No preallocation: an update then replaces the element under RCU, so a
 * packet sees the whole old VIP record or the whole new one. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LETHE_MAX_VIPS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lethe_vip_key);
	__type(value, struct lethe_vip);
} vips SEC(".maps");

/*
 * A Maglev table: slot -> backend id. Each real table is created by the
 * control plane with max_entries = its size M (BPF_F_INNER_MAP allows sizes
 * to differ from this template), filled through mmap while unpublished, then
 * published with one update of the outer map: an atomic pointer swap.
 */
struct maglev_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_INNER_MAP | BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, LETHE_MAX_TABLES);
	__type(key, __u32);
	__array(values, struct maglev_table);
} tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LETHE_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct lethe_backend);
} backends SEC(".maps");

/* Egress ports other than the ingress one, keyed by ifindex. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, LETHE_MAX_TX_PORTS);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LETHE_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct lethe_counter);
} vip_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LETHE_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct lethe_counter);
} backend_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LETHE_R_MAX);
	__type(key, __u32);
	__type(value, struct lethe_counter);
} reason_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LETHE_MAX_BACKENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lethe_vip_key);
	__type(value, struct lethe_nat_return);
} nat_returns SEC(".maps");

/* See LETHE_BACKEND_F_SRC in abi.h. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LETHE_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct lethe_backend_src);
} backend_srcs SEC(".maps");

/* See LETHE_FILTER_BITS in abi.h. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * LETHE_FILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} addr_filter SEC(".maps");

/* Per VIP: packets of the nat return path (backend -> client). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LETHE_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct lethe_counter);
} return_stats SEC(".maps");

/* Sampled decision events (struct lethe_event), read by the daemon. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, LETHE_EVENTS_RING_BYTES);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct lethe_counter);
} event_stats SEC(".maps");

#endif /* LETHE_MAPS_H */
