//! The bytes the program writes: MAC rewrite (dsr) and IPIP encapsulation.
//! Twin of `bpf/encap.h` and `set_macs` in `bpf/forward.h`.

use std::net::IpAddr;

use super::parse::{Packet, ETH_P_IP, ETH_P_IPV6};
use super::Nexthop;
use crate::abi::IPPROTO_UDP;
use crate::checksum::{self, words};

const OUTER_TTL: u8 = 64;
const IPPROTO_IPIP: u8 = 4;

const IPPROTO_IPV6: u8 = 41;
const IP_DF: u16 = 0x4000;

/// Bytes the encapsulation adds: the outer IP header, and for GUE a UDP
/// header.
pub fn encap_len(backend: &IpAddr, gue: bool) -> usize {
    (if backend.is_ipv4() { 20 } else { 40 }) + if gue { 8 } else { 0 }
}

const GUE_SPORT_BASE: u32 = 0xc000;
const GUE_SPORT_MASK: u32 = 0x3fff;

/// A 16-bit value as the BPF program sees `bpf_htons(x)` loaded natively.
fn htons_word(x: u16) -> u32 {
    u32::from(u16::from_ne_bytes(x.to_be_bytes()))
}

fn sum_words(bytes: &[u8]) -> u32 {
    words(bytes).into_iter().map(u32::from).sum()
}

fn fold16(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// `inner_sum` of bpf/encap.h: the inner packet's one's complement sum
/// from its headers only; None for an inner UDP packet without checksum
/// (IPv4, or IPv6 as tunnels send it), or a UDP packet whose length leaves bytes of the IP payload
/// after it (its checksum does not cover them).
fn inner_sum(frame: &[u8], p: &Packet) -> Option<u16> {
    let l3 = &frame[p.l3_off..];
    let udp_len = |at: usize| u16::from_be_bytes([l3[at + 4], l3[at + 5]]);
    let (sum, pseudo) = if p.dst.is_ipv4() {
        let l4_len = (p.l3_len - 20) as u16;
        if p.ip_proto == IPPROTO_UDP && ((l3[26] == 0 && l3[27] == 0) || udp_len(20) != l4_len) {
            return None;
        }
        let sum = sum_words(&l3[..20]);
        if p.ip_proto == 1 {
            return Some(fold16(sum + 0xffff));
        }
        (
            sum,
            sum_words(&l3[12..20]) + htons_word(u16::from(p.ip_proto)) + htons_word(l4_len),
        )
    } else {
        let l4_len = (p.l3_len - 40) as u16;
        if p.ip_proto == IPPROTO_UDP && ((l3[46] == 0 && l3[47] == 0) || udp_len(40) != l4_len) {
            return None;
        }
        (
            sum_words(&l3[..40]),
            sum_words(&l3[8..40]) + htons_word(l4_len) + htons_word(u16::from(p.ip_proto)),
        )
    };
    Some(fold16(sum + u32::from(!fold16(pseudo))))
}

fn set_macs(frame: &mut [u8], hop: &Nexthop) {
    frame[0..6].copy_from_slice(&hop.dmac);
    frame[6..12].copy_from_slice(&hop.smac);
}

pub fn dsr(frame: &[u8], hop: &Nexthop) -> Vec<u8> {
    let mut out = frame.to_vec();
    set_macs(&mut out, hop);
    out
}

fn outer_ipv4(p: &Packet, src: IpAddr, dst: IpAddr, gue: bool) -> Vec<u8> {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (src, dst) else {
        unreachable!("IPv4 outer header needs IPv4 addresses");
    };
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[1] = p.tos;
    h[2..4].copy_from_slice(&((p.l3_len + encap_len(&IpAddr::V4(dst), gue)) as u16).to_be_bytes());
    h[6..8].copy_from_slice(&IP_DF.to_be_bytes());
    h[8] = OUTER_TTL;
    h[9] = if gue { IPPROTO_UDP } else { IPPROTO_IPIP };
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let csum = checksum::internet(&h);
    h[10..12].copy_from_slice(&csum.to_be_bytes());
    h
}

fn outer_ipv6(p: &Packet, src: IpAddr, dst: IpAddr, hash: u32, gue: bool) -> Vec<u8> {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (src, dst) else {
        unreachable!("IPv6 outer header needs IPv6 addresses");
    };
    let mut h = vec![0u8; 40];
    let first = (6u32 << 28) | (u32::from(p.tos) << 20) | (hash & 0xF_FFFF);
    h[0..4].copy_from_slice(&first.to_be_bytes());
    h[4..6].copy_from_slice(&((p.l3_len + if gue { 8 } else { 0 }) as u16).to_be_bytes());
    h[6] = if gue {
        IPPROTO_UDP
    } else if p.dst.is_ipv4() {
        IPPROTO_IPIP
    } else {
        IPPROTO_IPV6
    };
    h[7] = OUTER_TTL;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h
}

/// The encapsulated frame (gue_port 0: IPIP, else GUE to that port): the
/// L2 header (and its tag) with new MACs and EtherType, the outer header(s),
/// then the original frame from L3 on.
pub fn encap(
    frame: &[u8],
    p: &Packet,
    hop: &Nexthop,
    backend: IpAddr,
    hash: u32,
    gue_port: u16,
) -> Vec<u8> {
    let gue = gue_port != 0;
    let mut l2 = frame[..p.l3_off].to_vec();
    set_macs(&mut l2, hop);
    let ethertype = if backend.is_ipv4() {
        ETH_P_IP
    } else {
        ETH_P_IPV6
    };
    let at = p.l3_off - 2;
    l2[at..at + 2].copy_from_slice(&ethertype.to_be_bytes());
    let mut outer = if backend.is_ipv4() {
        outer_ipv4(p, hop.src, backend, gue)
    } else {
        outer_ipv6(p, hop.src, backend, hash, gue)
    };
    if gue {
        let sport = ((GUE_SPORT_BASE | (hash & GUE_SPORT_MASK)) as u16).to_be_bytes();
        let udp_len = ((p.l3_len + 8) as u16).to_be_bytes();
        let mut udp = vec![0u8; 8];
        udp[0..2].copy_from_slice(&sport);
        udp[2..4].copy_from_slice(&gue_port.to_be_bytes());
        udp[4..6].copy_from_slice(&udp_len);
        if backend.is_ipv6() {
            if let Some(inner) = inner_sum(frame, p) {
                let w = |b: [u8; 2]| u32::from(u16::from_ne_bytes(b));
                let sum = sum_words(&outer[8..40])
                    + w(udp_len)
                    + htons_word(u16::from(IPPROTO_UDP))
                    + w(sport)
                    + w(gue_port.to_be_bytes())
                    + w(udp_len)
                    + u32::from(inner);
                let c = match checksum::fold(sum) {
                    0 => 0xffff,
                    c => c,
                };
                udp[6..8].copy_from_slice(&c.to_ne_bytes());
            }
        }
        outer.extend_from_slice(&udp);
    }
    let mut out = Vec::with_capacity(frame.len() + outer.len());
    out.extend_from_slice(&l2);
    out.extend_from_slice(&outer);
    out.extend_from_slice(&frame[p.l3_off..]);
    out
}

/// Which address a NAT rewrite replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Ingress: the destination (VIP -> backend).
    Dst,
    /// Return: the source (backend -> VIP).
    Src,
}

/// Stateless NAT of one address and (unless 0) one port, with the
/// incremental checksum updates of `nat_rewrite` in bpf/nat.h.
pub fn nat(frame: &[u8], p: &Packet, side: Side, addr: IpAddr, port: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    let (l3, l4) = (p.l3_off, p.l4_off);
    let udp = p.proto == IPPROTO_UDP;
    let at = l4 + if udp { 6 } else { 16 };
    let mut l4c = u16::from_ne_bytes([f[at], f[at + 1]]);
    // UDP checksum 0: none; it stays 0 over IPv6 too (tunnels, RFC 6935).
    let fix_l4 = !(udp && l4c == 0);
    let (field, ip_check) = match (p.dst.is_ipv4(), side) {
        (true, Side::Dst) => (l3 + 16..l3 + 20, Some(l3 + 10)),
        (true, Side::Src) => (l3 + 12..l3 + 16, Some(l3 + 10)),
        (false, Side::Dst) => (l3 + 24..l3 + 40, None),
        (false, Side::Src) => (l3 + 8..l3 + 24, None),
    };
    let new: Vec<u8> = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let old = words(&f[field.clone()]);
    f[field.clone()].copy_from_slice(&new);
    let new = words(&new);
    if let Some(c) = ip_check {
        let check = checksum::replace(u16::from_ne_bytes([f[c], f[c + 1]]), &old, &new);
        f[c..c + 2].copy_from_slice(&check.to_ne_bytes());
    }
    if fix_l4 {
        l4c = checksum::replace(l4c, &old, &new);
    }
    if port != 0 {
        let pat = l4 + if side == Side::Dst { 2 } else { 0 };
        let old = u16::from_ne_bytes([f[pat], f[pat + 1]]);
        let b = port.to_be_bytes();
        let new = u16::from_ne_bytes(b);
        if old != new {
            f[pat..pat + 2].copy_from_slice(&b);
            if fix_l4 {
                l4c = checksum::replace(l4c, &[old], &[new]);
            }
        }
    }
    if udp && fix_l4 && l4c == 0 {
        l4c = 0xffff;
    }
    f[at..at + 2].copy_from_slice(&l4c.to_ne_bytes());
    f
}

/// Sets the MACs of an already rewritten frame.
pub fn with_macs(mut frame: Vec<u8>, hop: &Nexthop) -> Vec<u8> {
    set_macs(&mut frame, hop);
    frame
}

/// `inner_l4_csum` of bpf/nat.h.
fn inner_l4_csum(
    check: u16,
    udp: bool,
    from: &[u16],
    to: &[u16],
    old_port: u16,
    new_port: u16,
) -> u16 {
    if udp && check == 0 {
        return 0;
    }
    let mut c = checksum::replace(check, from, to);
    if old_port != new_port {
        c = checksum::replace(c, &[old_port], &[new_port]);
    }
    if udp && c == 0 {
        c = 0xffff;
    }
    c
}

fn get16(f: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([f[at], f[at + 1]])
}

fn put16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}

/// nat of an ICMP error about a flow, as `nat_icmp_rewrite` in bpf/nat.h.
/// `Side::Dst` (ingress): outer destination -> backend; inside, the
/// invoking packet's source -> backend:port. `Side::Src` (return): inside,
/// the invoking packet's destination -> VIP:port; the outer source -> VIP
/// when it is the backend (the quoted destination). Every checksum that
/// covers them follows.
pub fn nat_icmp(frame: &[u8], p: &Packet, side: Side, addr: IpAddr, port: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    let (l3, icmp, ii) = (p.l3_off, p.l4_off, p.inner_off);
    let ip_end = p.l3_off + p.l3_len;
    let udp = p.proto == IPPROTO_UDP;
    let ic = icmp + 2;
    let new: Vec<u8> = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let neww = words(&new);
    let v4 = p.dst.is_ipv4();
    let (inner_hlen, ports) = if v4 { (20, ii + 20) } else { (40, ii + 40) };
    let dst = side == Side::Dst;
    // (outer field, inner field) offsets from their IP headers.
    let (outer, inner) = match (v4, dst) {
        (true, true) => (16..20, 12..16),
        (true, false) => (12..16, 16..20),
        (false, true) => (24..40, 8..24),
        (false, false) => (8..24, 24..40),
    };
    let outer = l3 + outer.start..l3 + outer.end;
    let inner = ii + inner.start..ii + inner.end;
    let old_inner = words(&f[inner.clone()]);
    let was = words(&f[outer.clone()]);
    let rewrite_outer = dst || was == old_inner;
    if v4 {
        if rewrite_outer {
            f[outer].copy_from_slice(&new);
            let c = checksum::replace(get16(&f, l3 + 10), &was, &neww);
            put16(&mut f, l3 + 10, c);
        }
        f[inner].copy_from_slice(&new);
        let old_check = get16(&f, ii + 10);
        let new_check = checksum::replace(old_check, &old_inner, &neww);
        put16(&mut f, ii + 10, new_check);
        let mut x = checksum::replace(get16(&f, ic), &old_inner, &neww);
        x = checksum::replace(x, &[old_check], &[new_check]);
        put16(&mut f, ic, x);
    } else {
        if rewrite_outer {
            f[outer].copy_from_slice(&new);
            let x = checksum::replace(get16(&f, ic), &was, &neww);
            put16(&mut f, ic, x);
        }
        f[inner].copy_from_slice(&new);
        let x = checksum::replace(get16(&f, ic), &old_inner, &neww);
        put16(&mut f, ic, x);
    }
    let ports = if dst { ports } else { ports + 2 };
    let old_port = get16(&f, ports);
    let want = u16::from_ne_bytes(port.to_be_bytes());
    let new_port = if port != 0 && want != old_port {
        put16(&mut f, ports, want);
        let x = checksum::replace(get16(&f, ic), &[old_port], &[want]);
        put16(&mut f, ic, x);
        want
    } else {
        old_port
    };
    let l4 = ii + inner_hlen;
    let l4csum = if udp {
        Some(l4 + 6)
    } else if l4 + 20 <= ip_end {
        Some(l4 + 16)
    } else {
        None
    };
    if let Some(at) = l4csum {
        let was = get16(&f, at);
        let now = inner_l4_csum(was, udp, &old_inner, &neww, old_port, new_port);
        put16(&mut f, at, now);
        let x = checksum::replace(get16(&f, ic), &[was], &[now]);
        put16(&mut f, ic, x);
    }
    f
}
