/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Includes and constants every part of the data plane needs. */
#ifndef LETHE_COMMON_H
#define LETHE_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi.h"

/* vmlinux.h carries types, not the uapi macros. */
#define ETH_ALEN 6
#define ETH_HLEN 14
#define VLAN_HLEN 4
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define AF_INET 2
#define AF_INET6 10
#define IPV4_HLEN 20
#define IPV6_HLEN 40
#define TCP_HLEN 20
#define UDP_HLEN 8
#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF
#define IP_DF 0x4000
#define LETHE_OUTER_TTL 64
#define IPPROTO_ICMPV6 58

/* The flow hash reads header words as little-endian loads; the Rust twin
 * does the same with u32::from_le_bytes. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "little-endian BPF target");

#endif /* LETHE_COMMON_H */
