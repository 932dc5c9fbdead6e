//! Probe frames: a minimal, valid Ethernet + IP + TCP (SYN) or UDP frame
//! for one flow, to run through the kernel program for `trace`.

use std::net::IpAddr;

use crate::abi::{IPPROTO_TCP, IPPROTO_UDP};
use crate::checksum;
use crate::flow_hash::FlowKey;

const PROBE_SRC_MAC: [u8; 6] = [0x02, 0x1e, 0x7e, 0, 0, 1];
const PROBE_DST_MAC: [u8; 6] = [0x02, 0x1e, 0x7e, 0, 0, 2];

fn l4(key: &FlowKey, pseudo: u32) -> Vec<u8> {
    let mut h = if key.proto == IPPROTO_TCP {
        let mut t = vec![0u8; 20];
        t[12] = 5 << 4; // data offset
        t[13] = 0x02; // SYN
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        t
    } else {
        let mut u = vec![0u8; 8];
        u[4..6].copy_from_slice(&8u16.to_be_bytes());
        u
    };
    h[0..2].copy_from_slice(&key.sport.to_be_bytes());
    h[2..4].copy_from_slice(&key.dport.to_be_bytes());
    let at = if key.proto == IPPROTO_TCP { 16 } else { 6 };
    let mut c = checksum::fold(checksum::sum(&h, pseudo + h.len() as u32));
    if c == 0 && key.proto == IPPROTO_UDP {
        c = 0xffff;
    }
    h[at..at + 2].copy_from_slice(&c.to_be_bytes());
    h
}

/// The probe frame for `key` (TCP or UDP; src and dst of one family).
pub fn frame(key: &FlowKey) -> Vec<u8> {
    let mut f = Vec::with_capacity(80);
    f.extend_from_slice(&PROBE_DST_MAC);
    f.extend_from_slice(&PROBE_SRC_MAC);
    match (key.src, key.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let seg_len = if key.proto == IPPROTO_TCP { 20 } else { 8 };
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + seg_len) as u16).to_be_bytes());
            ip[6] = 0x40;
            ip[8] = 64;
            ip[9] = key.proto;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = checksum::internet(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let pseudo = checksum::sum(&ip[12..20], u32::from(key.proto));
            f.extend_from_slice(&ip);
            f.extend_from_slice(&l4(key, pseudo));
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            let seg_len: u16 = if key.proto == IPPROTO_TCP { 20 } else { 8 };
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&seg_len.to_be_bytes());
            ip[6] = key.proto;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            let pseudo = checksum::sum(&ip[8..40], u32::from(key.proto));
            f.extend_from_slice(&ip);
            f.extend_from_slice(&l4(key, pseudo));
        }
        _ => panic!("probe flows are of one family"),
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse;

    #[test]
    fn probes_parse_as_the_flow_with_valid_checksums() {
        for (src, dst, proto) in [
            ("192.0.2.1", "10.0.0.1", IPPROTO_TCP),
            ("192.0.2.1", "10.0.0.1", IPPROTO_UDP),
            ("2001:db8::1", "2001:db8::2", IPPROTO_TCP),
            ("2001:db8::1", "2001:db8::2", IPPROTO_UDP),
        ] {
            let key = FlowKey {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                sport: 40000,
                dport: 443,
                proto,
            };
            let f = frame(&key);
            let p = parse(&f).unwrap();
            assert_eq!(
                (p.src, p.dst, p.sport, p.dport, p.proto),
                (key.src, key.dst, 40000, 443, proto)
            );
            let l3 = &f[14..];
            let (pseudo, seg) = if key.src.is_ipv4() {
                assert_eq!(checksum::internet(&l3[..20]), 0);
                (checksum::sum(&l3[12..20], u32::from(proto)), &l3[20..])
            } else {
                (checksum::sum(&l3[8..40], u32::from(proto)), &l3[40..])
            };
            assert_eq!(
                checksum::fold(checksum::sum(seg, pseudo + seg.len() as u32)),
                0
            );
        }
    }
}
