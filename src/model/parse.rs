//! Header parsing: the twin of `bpf/parse.h`, rule for rule and in the same
//! order, so a malformed packet gets the same reason from both.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::abi::{Reason, IPPROTO_TCP, IPPROTO_UDP};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;

/// A TCP/UDP packet the program can balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Frame length on arrival.
    pub len: usize,
    /// Offset of the IP header: 14, or 18 with an 802.1Q tag.
    pub l3_off: usize,
    /// IP header + payload as the IP header says (frames may carry padding).
    pub l3_len: usize,
    /// Offset of the TCP/UDP header.
    pub l4_off: usize,
    pub proto: u8,
    /// The packet's own IP protocol (the flow's, or ICMP for an error).
    pub ip_proto: u8,
    /// IPv4 TOS or IPv6 traffic class.
    pub tos: u8,
    /// IPv4 don't-fragment.
    pub df: bool,
    /// An ICMP error about a flow: src/dst/ports/proto are that flow's (the
    /// inner packet's, inverted) and `inner_off` is the inner IP header.
    pub icmp: bool,
    pub inner_off: usize,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn is_ipv6_ext_header(nexthdr: u8) -> bool {
    matches!(nexthdr, 0 | 43 | 51 | 60 | 135 | 139 | 140)
}

struct L3 {
    df: bool,
    l3_off: usize,
    l3_len: usize,
    l4_len: usize,
    hlen: usize,
    proto: u8,
    tos: u8,
    src: IpAddr,
    dst: IpAddr,
}

fn parse_ipv4(f: &[u8], off: usize) -> Result<L3, Reason> {
    if f.len() < off + IPV4_HLEN {
        return Err(Reason::TruncIp);
    }
    let h = &f[off..];
    if h[0] >> 4 != 4 {
        return Err(Reason::BadIpVersion);
    }
    let ihl = usize::from(h[0] & 0x0f);
    if ihl < 5 {
        return Err(Reason::BadIhl);
    }
    let tot_len = usize::from(be16(h, 2));
    if tot_len < ihl * 4 || off + tot_len > f.len() {
        return Err(Reason::BadIpLen);
    }
    if ihl != 5 {
        return Err(Reason::Ipv4Options);
    }
    if be16(h, 6) & 0x3fff != 0 {
        return Err(Reason::Fragment);
    }
    let proto = h[9];
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != IPPROTO_ICMP {
        return Err(Reason::L4Proto);
    }
    let addr = |at: usize| IpAddr::V4(Ipv4Addr::new(h[at], h[at + 1], h[at + 2], h[at + 3]));
    Ok(L3 {
        df: be16(h, 6) & 0x4000 != 0,
        l3_off: off,
        l3_len: tot_len,
        l4_len: tot_len - IPV4_HLEN,
        hlen: IPV4_HLEN,
        proto,
        tos: h[1],
        src: addr(12),
        dst: addr(16),
    })
}

fn parse_ipv6(f: &[u8], off: usize) -> Result<L3, Reason> {
    if f.len() < off + IPV6_HLEN {
        return Err(Reason::TruncIp);
    }
    let h = &f[off..];
    if h[0] >> 4 != 6 {
        return Err(Reason::BadIpVersion);
    }
    let payload_len = usize::from(be16(h, 4));
    if off + IPV6_HLEN + payload_len > f.len() {
        return Err(Reason::BadIpLen);
    }
    let nexthdr = h[6];
    if nexthdr == 44 {
        return Err(Reason::Fragment);
    }
    if is_ipv6_ext_header(nexthdr) {
        return Err(Reason::Ipv6Ext);
    }
    if nexthdr != IPPROTO_TCP && nexthdr != IPPROTO_UDP && nexthdr != IPPROTO_ICMPV6 {
        return Err(Reason::L4Proto);
    }
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&h[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    Ok(L3 {
        df: false,
        l3_off: off,
        l3_len: IPV6_HLEN + payload_len,
        l4_len: payload_len,
        hlen: IPV6_HLEN,
        proto: nexthdr,
        tos: ((h[0] & 0x0f) << 4) | (h[1] >> 4),
        src: addr(8),
        dst: addr(24),
    })
}

/// Parses a frame as the XDP program does. `Err` carries the reason the
/// program exits with (its verdict is `Reason::implied_action`).
pub fn parse(frame: &[u8]) -> Result<Packet, Reason> {
    if frame.len() < ETH_HLEN {
        return Err(Reason::TruncEth);
    }
    let mut ethertype = be16(frame, 12);
    let mut l3_off = ETH_HLEN;
    if ethertype == ETH_P_8021Q {
        if frame.len() < ETH_HLEN + VLAN_HLEN {
            return Err(Reason::TruncVlan);
        }
        ethertype = be16(frame, 16);
        l3_off = ETH_HLEN + VLAN_HLEN;
    }
    let l3 = match ethertype {
        ETH_P_IP => parse_ipv4(frame, l3_off)?,
        ETH_P_IPV6 => parse_ipv6(frame, l3_off)?,
        _ => return Err(Reason::NotIp),
    };
    let l4 = l3.l3_off + l3.hlen;
    if l3.proto == IPPROTO_ICMP || l3.proto == IPPROTO_ICMPV6 {
        return parse_icmp(frame, &l3, l4);
    }
    let need = if l3.proto == IPPROTO_TCP { 20 } else { 8 };
    if l3.l4_len < need || l4 + need > frame.len() {
        return Err(Reason::TruncL4);
    }
    Ok(Packet {
        len: frame.len(),
        l3_off: l3.l3_off,
        l3_len: l3.l3_len,
        l4_off: l4,
        proto: l3.proto,
        ip_proto: l3.proto,
        tos: l3.tos,
        df: l3.df,
        icmp: false,
        inner_off: 0,
        src: l3.src,
        dst: l3.dst,
        sport: be16(frame, l4),
        dport: be16(frame, l4 + 2),
    })
}

const ICMP_HLEN: usize = 8;

/// An ICMP error about a flow, as `parse_icmp` in bpf/parse.h: routed like
/// the flow (the inner packet inverted); anything else is L4Proto.
fn parse_icmp(f: &[u8], l3: &L3, icmp: usize) -> Result<Packet, Reason> {
    let v4 = l3.proto == IPPROTO_ICMP;
    let inner_hlen = if v4 { IPV4_HLEN } else { IPV6_HLEN };
    if l3.l4_len < ICMP_HLEN || icmp + ICMP_HLEN > f.len() {
        return Err(Reason::L4Proto);
    }
    let routed = if v4 {
        f[icmp] == 3
    } else {
        f[icmp] == 1 || f[icmp] == 2
    };
    if !routed {
        return Err(Reason::L4Proto);
    }
    if l3.l4_len < ICMP_HLEN + inner_hlen + 8 {
        return Err(Reason::IcmpInner);
    }
    let ii = icmp + ICMP_HLEN;
    if ii + inner_hlen > f.len() {
        return Err(Reason::IcmpInner);
    }
    let (proto, src, dst) = if v4 {
        let (v, ihl) = (f[ii] >> 4, f[ii] & 0xf);
        if v != 4 || ihl != 5 || be16(f, ii + 6) & 0x1fff != 0 {
            return Err(Reason::IcmpInner);
        }
        let a = |at: usize| IpAddr::V4(Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]));
        (f[ii + 9], a(ii + 12), a(ii + 16))
    } else {
        if f[ii] >> 4 != 6 {
            return Err(Reason::IcmpInner);
        }
        let a = |at: usize| {
            let mut x = [0u8; 16];
            x.copy_from_slice(&f[at..at + 16]);
            IpAddr::V6(Ipv6Addr::from(x))
        };
        (f[ii + 6], a(ii + 8), a(ii + 24))
    };
    // Addressed to the sender of the quoted packet (parse_icmp_inner).
    if src != l3.dst {
        return Err(Reason::IcmpInner);
    }
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Err(Reason::IcmpInner);
    }
    let ports = ii + inner_hlen;
    if ports + 8 > f.len() {
        return Err(Reason::IcmpInner);
    }
    Ok(Packet {
        len: f.len(),
        l3_off: l3.l3_off,
        l3_len: l3.l3_len,
        l4_off: icmp,
        proto,
        ip_proto: l3.proto,
        tos: l3.tos,
        df: l3.df,
        icmp: true,
        inner_off: ii,
        src: dst,
        dst: src,
        sport: be16(f, ports + 2),
        dport: be16(f, ports),
    })
}
