/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The ABI between the XDP program and the Rust control plane: every struct
 * and constant that crosses the boundary lives here and nowhere else.
 *
 * Rust uses the skeleton's generated types for these structs (their BTF
 * comes from the maps below), and tests/abi.rs checks sizes, offsets and
 * enum values against src/dataplane/abi.rs, so neither side can drift.
 *
 * Multi-byte address and port fields are in network byte order; everything
 * else is host order.
 *
 * This file's code (not its comments) is part of the pins' layout stamp
 * (build/layout.rs): change it and the next daemon moves an instance to
 * fresh maps instead of adopting the pinned ones (README, "Upgrades that
 * change the maps").
 */
#ifndef LETHE_ABI_H
#define LETHE_ABI_H

#define LETHE_ABI_VERSION 1

#define LETHE_MAX_VIPS 1024
/* Each VIP owns two table slots (2 * vip_id, 2 * vip_id + 1), so a table of
 * a new size can be filled in the spare slot and published by one VIP update. */
#define LETHE_MAX_TABLES (2 * LETHE_MAX_VIPS)
/*
 * Tables of this size (the default M) live in `tables_fixed`, whose inner
 * maps all have exactly this many entries: the verifier then inlines the
 * slot lookup (an indexed load). Other sizes live in `tables`, whose inner
 * maps may differ in size, which makes every lookup a call into the kernel
 * (~25 ns a packet on the benchmark machine, where each call and return
 * goes through the SRSO return thunk). The VIP record says which
 * (LETHE_VIP_F_FIXED_TABLE); a table id names one table in one of them.
 */
#define LETHE_FIXED_TABLE_SIZE 65537
/* Backend records are per (VIP, backend) pair, so their counters are too. */
#define LETHE_MAX_BACKENDS 65536
#define LETHE_MAX_TX_PORTS 64

enum lethe_family {
	LETHE_AF_INET = 4,
	LETHE_AF_INET6 = 6,
};

enum lethe_mode {
	LETHE_MODE_DSR = 1,  /* L2 DSR: rewrite MACs only */
	LETHE_MODE_IPIP = 2, /* L3 DSR: IPv4/IPv6 in IPv4/IPv6 */
	LETHE_MODE_GUE = 3,  /* L3 DSR: IP in UDP (GUE variant 1) */
	LETHE_MODE_NAT = 4,  /* stateless NAT both ways */
};

/* VIP flag bits (struct lethe_vip.flags). */
#define LETHE_VIP_F_STICKY (1 << 0) /* hash leaves the source port out */
#define LETHE_VIP_F_FIXED_TABLE (1 << 1) /* table_id is in tables_fixed */

/* Key of the vips map. IPv4 addresses use addr[0..4], the rest is zero. */
struct lethe_vip_key {
	__u8 addr[16];
	__be16 port; /* 0: all ports of this address and protocol */
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 family; /* enum lethe_family */
};

struct lethe_vip {
	__u32 vip_id;     /* index into vip_stats */
	__u32 table_id;   /* index into tables or tables_fixed (flags) */
	__u32 table_size; /* M of that table: slots, a prime */
	__u8 mode;        /* enum lethe_mode */
	__u8 flags;       /* LETHE_VIP_F_* */
	__u16 _pad0;
	__u32 event_sample_rate; /* reserved for decision events */
	__u32 _pad1;
};

/* backends[id]: the target of a table slot. Never rewritten while a table
 * that references it is published; the control plane allocates a new id.
 * family 0 marks a free id; vip_id says whose backend it is, so a restarted
 * control plane can adopt the maps as they are. */
struct lethe_backend {
	__u8 addr[16]; /* IPv4: addr[0..4] */
	__be16 port;   /* nat: destination port; 0 = keep */
	__u8 family;   /* enum lethe_family; 0 = free */
	__u8 flags;    /* LETHE_BACKEND_F_* */
	__u32 vip_id;
};

/* backend_srcs[id] holds the outer source address for encapsulating to
 * this backend: the one the kernel chooses (`ip route get BACKEND` → src),
 * resolved by the control plane when it writes the record. Without it the
 * program asks the route lookup for a source on every packet, which over
 * IPv6 scores every address of the host (~1.2 µs). Written before the
 * record, never rewritten while a table names the id. */
#define LETHE_BACKEND_F_SRC (1 << 0)

struct lethe_backend_src {
	__u8 addr[16]; /* IPv4: addr[0..4] */
};

/* nexthop_ctl[0] (the program reads its copy, live_nexthop_ctl): the
 * program caches next hops of backends (nexthops in maps.h); an entry
 * holds while gen is unchanged, for ttl_jiffies at most. Jiffies, because
 * reading them is one load (the verifier inlines bpf_jiffies64) where a
 * clock read costs ~20 ns a packet. The default is 25 ms to 250 ms, as
 * the kernel's HZ is 1000 to 100; the daemon makes entries stale at once
 * on every change it hears of, so the lifetime only matters while no
 * daemon runs. */
#define LETHE_NEXTHOP_TTL_JIFFIES 25 /* when ttl_jiffies is 0 */

struct lethe_nexthop_ctl {
	__u32 gen;	   /* bumped by the control plane: every entry is stale */
	__u32 ttl_jiffies; /* 0: LETHE_NEXTHOP_TTL_JIFFIES */
};

/*
 * The decision record of a traced packet. BPF_PROG_TEST_RUN callers put it
 * in the XDP metadata area in front of the frame with magic set; the program
 * fills in the rest at its exit. Real packets carry no such metadata.
 */
#define LETHE_TRACE_MAGIC 0x4c455448 /* "LETH" */
#define LETHE_EVENTS_RING_BYTES (1 << 20)
#define LETHE_NONE 0xffffffff

struct lethe_trace {
	__u32 magic;
	__u32 reason;     /* enum lethe_reason */
	__u32 vip_id;     /* LETHE_NONE: no VIP matched */
	__u32 backend_id; /* LETHE_NONE: no backend chosen */
	__u32 hash;       /* the flow hash, when a VIP matched */
	__u32 _pad;
};

/* lb_config[0] (the program reads its copy, live_config): settings that
 * are identical on every node of a cluster. */
struct lethe_config {
	__u32 hash_seed;
	__u32 flags;     /* LETHE_CFG_F_* */
	__be16 gue_port; /* GUE destination port */
	__u16 _pad0;
	__u32 _reserved;
};

/* lethe_config.flags. (1 << 1) was vip_filter's, which vip_index
 * replaced: never set again. */
#define LETHE_CFG_F_NAT (1 << 0) /* some VIP is nat: look return traffic up */

/*
 * vip_index: every VIP's key and record in an open-addressed array, which
 * the program reads without hashing a key the way a hash map does (a
 * `vips` lookup cost ~35 ns of every VIP packet, the largest single part).
 * Two halves of LETHE_VIP_SLOTS entries; vip_index_ctl.active says which
 * one is live. The control plane writes the whole index into the other
 * half (after a grace period: no packet still reads it), then flips
 * `active` with one aligned store: a packet sees the old index or the new
 * one, never a mix, and with it every VIP record, which lives in the entry.
 * A key sits at most LETHE_VIP_PROBES entries after its home entry
 * (vip_slot in hash.h, under the half's seed); when the control plane
 * cannot place every key so, it sets LETHE_VIP_HALF_F_OVERFLOW and a
 * packet no entry matches is looked up in `vips`, which holds every VIP
 * (and is what a restarted control plane adopts).
 */
#define LETHE_VIP_SLOT_BITS 12
#define LETHE_VIP_SLOTS (1 << LETHE_VIP_SLOT_BITS)
#define LETHE_VIP_PROBES 8
#define LETHE_VIP_HALF_F_OVERFLOW (1 << 0)

struct lethe_vip_entry {
	struct lethe_vip_key key; /* family 0: empty, and the end of a probe */
	__u32 _pad;
	struct lethe_vip vip;
};

struct lethe_vip_half {
	__u32 seed;  /* of vip_slot */
	__u32 flags; /* LETHE_VIP_HALF_F_* */
};

struct lethe_vip_index_ctl {
	__u32 active; /* the live half: entries [active * LETHE_VIP_SLOTS, ...) */
	__u32 _pad;
	struct lethe_vip_half half[2];
};

/* addr_filter: two bitmaps of LETHE_FILTER_BITS bits (u64 words), one bit
 * per address hash (addr_bit in hash.h): the VIP addresses (looked up by
 * destination) and the nat backends (looked up by source). A clear bit
 * proves the address is none of them, so traffic that is no VIP's skips
 * every VIP lookup. The control plane sets a bit before anything that
 * needs it and clears it after.
 *
 * In the VIP bitmap, the word of a VIP's address (addr_bit / 64) also
 * holds a bit per VIP key (key_bit in hash.h: address, port, protocol),
 * and the program reads only those: the key's bit or its all-ports key's
 * bit, one word for both. Packets to a VIP address on a port no VIP has
 * are answered there, without probing vip_index twice. The address's own
 * bit (addr_bit % 64) stays set too, for a program from a build before
 * the key bits: the daemon applies its configuration before it replaces
 * the attached program. */
#define LETHE_FILTER_BITS 65536
#define LETHE_FILTER_WORDS (LETHE_FILTER_BITS / 64)
#define LETHE_FILTER_VIP 0
#define LETHE_FILTER_NAT LETHE_FILTER_WORDS

/*
 * quick_filter: the program's first test, before it parses anything. Three
 * bitmaps of LETHE_QUICK_BITS bits. Two have one bit per address hash
 * (quick_bit in hash.h): the VIP addresses (tested with a packet's
 * destination) and the nat backends (tested with its source). A packet
 * whose two bits are clear is no VIP's and no nat backend's: it is passed
 * at once (see quick_not_vip in lethe.bpf.c). An address with an
 * all-ports VIP also sets its bit's neighbour (bit ^ 1) in the VIP bitmap,
 * the all-ports mark. The third has one bit per VIP key with a port
 * (quick_port_bit: address, port, protocol): TCP or UDP to a VIP's address
 * whose mark is clear (no all-ports VIP there, and no other VIP address's
 * bit on the neighbour) and whose (dport) bit is clear is passed too,
 * without the full parse (quick_port_test). Hashes of their own, cheaper
 * than addr_bit's fold for IPv6 and free to differ from it, because the
 * bitmaps are global data (the .data.quick section): the program reads
 * them with loads, not map lookups, and each loaded program has its own.
 * They are not pinned; the control plane fills them from the
 * configuration it adopts before it attaches the program, and after that
 * like addr_filter: a bit is set before anything needs it and cleared
 * after.
 */
#define LETHE_QUICK_BITS 65536
#define LETHE_QUICK_WORDS (LETHE_QUICK_BITS / 64)
#define LETHE_QUICK_VIP 0
#define LETHE_QUICK_NAT LETHE_QUICK_WORDS
#define LETHE_QUICK_PORT (2 * LETHE_QUICK_WORDS)
#define LETHE_QUICK_MAPS 3

/*
 * nat_returns: the stateless return path of nat VIPs. Keyed like a VIP
 * (struct lethe_vip_key) by backend address, backend port (0: the VIP takes
 * every port, ports are kept) and protocol; says which VIP address and port
 * the backend's replies must come from.
 */
struct lethe_nat_return {
	__u8 addr[16]; /* the VIP */
	__be16 port;   /* the VIP's port; 0 = keep the source port */
	__u8 family;
	__u8 _pad0;
	__u32 vip_id;
};

/*
 * A decision event: one record per sampled packet in the `events` ring
 * buffer (struct lethe_vip.event_sample_rate: 1 in N packets of the VIP).
 * Fixed size and versioned: readers check `version` first.
 */
#define LETHE_EVENT_VERSION 1

struct lethe_event {
	__u64 time_ns;    /* bpf_ktime_get_boot_ns() */
	__u8 version;     /* LETHE_EVENT_VERSION */
	__u8 verdict;     /* XDP action */
	__u8 reason;      /* enum lethe_reason */
	__u8 mode;        /* enum lethe_mode */
	__u8 family;      /* enum lethe_family */
	__u8 proto;
	__be16 sport;
	__be16 dport;
	__u16 _pad0;
	__u32 vip_id;
	__u32 backend_id; /* LETHE_NONE: no backend chosen */
	__u32 ifindex;    /* ingress */
	__u8 src[16];     /* IPv4: first 4 bytes */
	__u8 dst[16];
};

/* event_stats indexes: events written, events lost to a full ring. */
#define LETHE_EVENTS_SENT 0
#define LETHE_EVENTS_DROPPED 1

/*
 * The backend-side decap program (bpf/decap.bpf.c): what it did with a
 * packet. It never drops: what it does not strip, it passes untouched.
 * Append only.
 */
enum lethe_decap_reason {
	LETHE_D_IPIP = 0,        /* IPv4 in IPv4, stripped */
	LETHE_D_IP6IP6 = 1,      /* IPv6 in IPv6, stripped */
	LETHE_D_IP4IN6 = 2,      /* IPv4 in IPv6, stripped */
	LETHE_D_GUE4 = 3,        /* GUE over IPv4, stripped */
	LETHE_D_GUE6 = 4,        /* GUE over IPv6, stripped */
	LETHE_D_NOT_ENCAP = 5,   /* not an encapsulation it strips: passed */
	LETHE_D_NOT_LOCAL = 6,   /* outer destination not this host's: passed */
	LETHE_D_FRAGMENT = 7,    /* outer fragment or IPv4 options: passed */
	LETHE_D_MALFORMED = 8,   /* cut short or inconsistent: passed */
	LETHE_D_MAX = 9,
};

/* decap_config[0] */
struct lethe_decap_config {
	__be16 gue_port; /* 0: GUE not stripped */
	__u16 _pad0;
	__u32 _reserved;
};

/* Key of decap_local: an address of this host (IPv4: addr[0..4]). */
struct lethe_local_addr {
	__u8 addr[16];
	__u8 family;
	__u8 _pad[3];
};

/* Value of the per-CPU counter arrays (per VIP, per backend, per reason). */
struct lethe_counter {
	__u64 packets;
	__u64 bytes;
};

/*
 * Why a packet left the program the way it did. Every exit counts exactly one
 * reason; the names (lowercase, without the prefix) are the metric labels.
 * Append only: the values are part of the ABI.
 */
enum lethe_reason {
	/* forwarded */
	LETHE_R_FWD_TX = 0,       /* rewritten, sent back out of the ingress port */
	LETHE_R_FWD_REDIRECT = 1, /* rewritten, redirected to another port */
	/* passed to the kernel, untouched */
	LETHE_R_NOT_IP = 2,        /* EtherType is neither IPv4 nor IPv6 */
	LETHE_R_NOT_VIP = 3,       /* no VIP for (address, port, protocol) */
	LETHE_R_L4_PROTO = 4,      /* IP protocol other than TCP/UDP */
	LETHE_R_IPV4_OPTIONS = 5,  /* IHL > 5: not load balanced */
	LETHE_R_FRAGMENT = 6,      /* IPv4 MF/offset or IPv6 fragment header */
	LETHE_R_IPV6_EXT = 7,      /* IPv6 extension header before L4 */
	LETHE_R_NO_NEIGH = 8,      /* next hop has no resolved neighbour */
	LETHE_R_FWD_DISABLED = 9,  /* forwarding disabled on the ingress port */
	/* dropped */
	LETHE_R_TRUNC_ETH = 10,    /* shorter than an Ethernet header */
	LETHE_R_TRUNC_VLAN = 11,   /* 802.1Q tag cut short */
	LETHE_R_TRUNC_IP = 12,     /* shorter than the fixed IP header */
	LETHE_R_BAD_IP_VERSION = 13,
	LETHE_R_BAD_IHL = 14,      /* IPv4 IHL < 5 */
	LETHE_R_BAD_IP_LEN = 15,   /* IP length beyond the frame or below the header */
	LETHE_R_TRUNC_L4 = 16,     /* TCP/UDP header cut short */
	LETHE_R_NO_BACKEND = 17,   /* VIP without a table, or slot without a backend */
	LETHE_R_BAD_BACKEND = 18,  /* backend family cannot carry this packet */
	LETHE_R_NO_ROUTE = 19,     /* no route to the backend */
	LETHE_R_NOT_ADJACENT = 20, /* dsr: backend is behind a gateway */
	LETHE_R_FRAG_NEEDED = 21,  /* larger than the egress MTU */
	LETHE_R_NO_SRC_ADDR = 22,  /* encap: no source address towards the backend */
	LETHE_R_NO_TX_PORT = 23,   /* egress port not in tx_ports */
	LETHE_R_ENCAP_FAILED = 24, /* no headroom for the outer header */
	LETHE_R_MODE_UNSUPPORTED = 25,
	LETHE_R_INTERNAL = 26,     /* a map that always exists did not */
	/* later additions, with their verdicts */
	LETHE_R_ICMP_INNER = 27,   /* ICMP error whose inner packet names no flow (passed) */
	LETHE_R_TOO_BIG = 28,      /* too big for the path: answered with ICMP (tx) */
	LETHE_R_RETURN_PASSED = 29, /* from a nat backend, not forwardable here (e.g.
				     * to this host: health checks): passed */
	LETHE_R_MAX = 30,
};

/* Puts the ABI enums in the object's BTF (as a .rodata variable), where
 * tests/abi.rs reads their names and values. */
struct lethe_abi_enums {
	enum lethe_reason reason;
	enum lethe_mode mode;
	enum lethe_family family;
	struct lethe_trace trace;
	struct lethe_event event;
	struct lethe_nat_return nat_return;
	enum lethe_decap_reason decap_reason;
	struct lethe_decap_config decap_config;
	struct lethe_local_addr local_addr;
};

_Static_assert(sizeof(struct lethe_vip_key) == 20, "lethe_vip_key size");
_Static_assert(sizeof(struct lethe_vip) == 24, "lethe_vip size");
_Static_assert(sizeof(struct lethe_vip_entry) == 48, "lethe_vip_entry size: an 8-byte multiple, the mmap stride");
_Static_assert(__builtin_offsetof(struct lethe_vip_entry, vip) == 24, "lethe_vip_entry vip offset");
_Static_assert(sizeof(struct lethe_vip_index_ctl) == 24, "lethe_vip_index_ctl size");
_Static_assert(sizeof(struct lethe_backend) == 24, "lethe_backend size");
_Static_assert(sizeof(struct lethe_backend_src) == 16, "lethe_backend_src size");
_Static_assert(sizeof(struct lethe_config) == 16, "lethe_config size");
_Static_assert(sizeof(struct lethe_nexthop_ctl) == 8, "lethe_nexthop_ctl size");
_Static_assert(sizeof(struct lethe_nat_return) == 24, "lethe_nat_return size");
_Static_assert(sizeof(struct lethe_decap_config) == 8, "lethe_decap_config size");
_Static_assert(sizeof(struct lethe_local_addr) == 20, "lethe_local_addr size");
_Static_assert(sizeof(struct lethe_counter) == 16, "lethe_counter size");
_Static_assert(sizeof(struct lethe_event) == 64, "lethe_event size");
_Static_assert(sizeof(struct lethe_trace) == 24, "lethe_trace size: metadata is at most 32 bytes, a multiple of 4");

#endif /* LETHE_ABI_H */
