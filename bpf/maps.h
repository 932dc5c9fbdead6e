/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Every map of the XDP program. Names are the ABI: the Rust dataplane module
 * opens them by these names, and they are pinned under them. This file's
 * code is part of the pins' layout stamp (build/layout.rs, abi.h). */
#ifndef LETHE_MAPS_H
#define LETHE_MAPS_H

#include "common.h"

/* The record of the settings, pinned, which a restarted control plane
 * adopts; the program reads live_config, its own copy. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lethe_config);
} lb_config SEC(".maps");

/*
 * What the program reads of lb_config and nexthop_ctl: copies in global
 * data, each a load from a fixed address. Read from the one-entry array
 * maps, each cost a key stored to the stack, an inlined lookup and a NULL
 * test: both together ~3 ns a packet to a VIP (dsr repeat N, interleaved
 * A/B, 4 rounds: Δ 84.3-89.2 -> 80.8-83.3 ns). Global data is the
 * program's own and never pinned: a program loaded anew starts with
 * zeroes, and the control plane writes both copies from the pinned
 * records before it attaches the program (Installed::adopt,
 * Dataplane::load_pinned), then every record and its copy together
 * (dataplane::write_record_and_copy). Written whole, as the array entries
 * were.
 */
struct lethe_config live_config SEC(".data.config");
struct lethe_nexthop_ctl live_nexthop_ctl SEC(".data.nexthop_ctl");

/* Every VIP by key: what a restarted control plane adopts, and where the
 * program looks a VIP up that vip_index could not place (see
 * LETHE_VIP_SLOTS in abi.h). No preallocation: an update then replaces the
 * element under RCU, so a packet sees the whole old record or the new one. */
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

/* Tables of LETHE_FIXED_TABLE_SIZE slots, the same way: see abi.h. */
struct maglev_table_fixed {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LETHE_FIXED_TABLE_SIZE);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, LETHE_MAX_TABLES);
	__type(key, __u32);
	__array(values, struct maglev_table_fixed);
} tables_fixed SEC(".maps");

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

/*
 * Next hops of backends, per CPU: what bpf_fib_lookup answered for a
 * backend (egress port, MACs, path MTU), so a packet to a backend whose
 * route and neighbour were just looked up skips the lookup (~200 ns over
 * IPv4, ~400 ns over IPv6 on the benchmark machine). Direct-mapped and
 * tagged with the address: backends at id % LETHE_NEXTHOP_SLOTS (ids are
 * reused), then the clients nat return traffic goes to, by address hash. An entry holds for nexthop_ctl's lifetime, only
 * for the ingress port it was looked up from, and only while nexthop_ctl's
 * gen is the value it was filled under: the daemon bumps it on every
 * route, neighbour and link change it hears of (rtnetlink), and when it
 * changes tx_ports. Only a complete answer is kept: no neighbour, no
 * route, forwarding disabled are asked again every packet.
 */
#define LETHE_NEXTHOP_SLOTS 4096

struct lethe_nexthop {
	__u8 addr[16];	       /* the destination it is for */
	__u64 expires;	       /* bpf_jiffies64() deadline */
	__u32 gen;	       /* nexthop_ctl.gen it was filled under */
	__u32 ingress_ifindex; /* the port the lookup was made from */
	__u32 ifindex;	       /* egress port */
	__u32 mtu;	       /* path MTU (the L3 length that still fits) */
	__u8 macs[12]; /* destination, then source: as on the wire, 8-aligned */
	__u8 family;   /* the destination's; 0 = empty */
	__u8 adjacent; /* the next hop is the destination itself (no gateway) */
	__u8 _pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * LETHE_NEXTHOP_SLOTS);
	__type(key, __u32);
	__type(value, struct lethe_nexthop);
} nexthops SEC(".maps");

/* The generation nexthops entries must carry, and how long they hold: the
 * pinned record; the program reads live_nexthop_ctl. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lethe_nexthop_ctl);
} nexthop_ctl SEC(".maps");

/* See LETHE_FILTER_BITS in abi.h. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * LETHE_FILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} addr_filter SEC(".maps");

/* See LETHE_VIP_SLOTS in abi.h. Written through mmap by the control plane. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * LETHE_VIP_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct lethe_vip_entry);
} vip_index SEC(".maps");

/* Read from the pinned map itself, not from a copy in global data as
 * live_config is (which would save a lookup, ~1.5 ns): which half is live
 * must be one fact for every program on the pins. During an in-place
 * upgrade the old program runs on until its link moves to the new one,
 * and the new daemon flips halves before that; with a copy of its own,
 * the old program would go on reading the half the next flip rewrites. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct lethe_vip_index_ctl);
} vip_index_ctl SEC(".maps");

/* Never read by the program: an update of a map-in-map from user space
 * returns only once every program that was running has finished
 * (synchronize_rcu), which is how the control plane waits out packets
 * that may still read a vip_index half before it rewrites it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct maglev_table);
} rcu_sync SEC(".maps");

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
