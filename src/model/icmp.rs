//! The too-big answer's twin (`make_too_big` in bpf/icmp.h): the frame the
//! program turns a too-big packet into.

use super::parse::Packet;
use crate::checksum;

const TTL: u8 = 64;
const QUOTE: usize = 8;

/// ICMP fragmentation-needed (IPv4) or ICMPv6 packet-too-big (IPv6) to the
/// packet's source, from its destination, quoting its IP header and 8
/// bytes, with the MTU the client can use.
pub fn too_big(frame: &[u8], p: &Packet, mtu: u32) -> Vec<u8> {
    let l3 = p.l3_off;
    let v4 = p.dst.is_ipv4();
    let quote = &frame[l3..l3 + if v4 { 20 } else { 40 } + QUOTE];
    let mut out = Vec::with_capacity(l3 + 96);
    out.extend_from_slice(&frame[6..12]);
    out.extend_from_slice(&frame[0..6]);
    out.extend_from_slice(&frame[12..l3]);
    if v4 {
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, TTL, 1, 0, 0];
        ip[2..4].copy_from_slice(&((20 + 8 + quote.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&quote[16..20]);
        ip.extend_from_slice(&quote[12..16]);
        let c = checksum::internet(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mtu = mtu.max(68) as u16;
        let mut icmp = vec![3, 4, 0, 0, 0, 0];
        icmp.extend_from_slice(&mtu.to_be_bytes());
        icmp.extend_from_slice(quote);
        let c = checksum::internet(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        out.extend_from_slice(&ip);
        out.extend_from_slice(&icmp);
    } else {
        let len = (8 + quote.len()) as u16;
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&len.to_be_bytes());
        ip.extend_from_slice(&[58, TTL]);
        ip.extend_from_slice(&quote[24..40]);
        ip.extend_from_slice(&quote[8..24]);
        let mut icmp = vec![2, 0, 0, 0];
        icmp.extend_from_slice(&mtu.max(1280).to_be_bytes());
        icmp.extend_from_slice(quote);
        let mut pseudo = checksum::sum(&ip[8..40], 0);
        pseudo += u32::from(len) + 58;
        let c = checksum::fold(checksum::sum(&icmp, pseudo));
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        out.extend_from_slice(&ip);
        out.extend_from_slice(&icmp);
    }
    out
}
