//! quick_filter, the XDP program's first test (bpf/abi.h LETHE_QUICK_BITS):
//! three bitmaps. Two have one bit per address hash — the VIP addresses,
//! tested with a packet's destination, and the nat backends, tested with
//! its source. A packet with both bits clear is passed before it is parsed
//! (`quick_not_vip` in bpf/lethe.bpf.c, `model::quick_not_vip`). An address
//! with an all-ports VIP also sets the neighbour of its bit (bit ^ 1), the
//! all-ports mark. The third has one bit per VIP key with a port (address,
//! port, protocol): TCP or UDP to a VIP's address without the mark is
//! passed too (the second stage) when its (destination, port) key's bit is
//! clear.
//!
//! The bitmaps are a pure function of the VIP keys and nat backend
//! addresses, so the model computes the same ones the control plane writes.

use std::net::IpAddr;

use crate::abi::{QUICK_MAPS, QUICK_NAT, QUICK_PORT, QUICK_VIP, QUICK_WORDS};

/// XXH64's second prime (bpf/hash.h LH_QUICK).
const QUICK_MUL: u64 = 0xC2B2_AE3D_27D4_EB4F;

/// An address as the program loads it for the hashes: its 4 bytes as one
/// little-endian word, or the XOR of its two 8-byte halves.
fn fold(addr: &IpAddr) -> u64 {
    match addr {
        IpAddr::V4(a) => u64::from(u32::from_le_bytes(a.octets())),
        IpAddr::V6(a) => {
            let o = a.octets();
            let half = |i: usize| u64::from_le_bytes(o[i..i + 8].try_into().expect("8 bytes"));
            half(0) ^ half(8)
        }
    }
}

/// Top 16 bits of the product with a 64-bit odd constant.
fn mix(x: u64) -> u32 {
    (x.wrapping_mul(QUICK_MUL) >> 48) as u32
}

/// The bit of an address in the VIP and nat bitmaps (bpf/hash.h
/// quick_bit4, quick_bit6).
pub fn quick_bit(addr: &IpAddr) -> u32 {
    mix(fold(addr))
}

/// The bit of a VIP key in the port bitmap (bpf/hash.h quick_port_bit):
/// the address's fold, XOR the port's two bytes as on the wire loaded
/// little-endian at bit 32, XOR the protocol number at bit 48.
pub fn quick_port_bit(addr: &IpAddr, port: u16, proto: u8) -> u32 {
    let port = u64::from(u16::from_le_bytes(port.to_be_bytes()));
    mix(fold(addr) ^ port << 32 ^ u64::from(proto) << 48)
}

/// The words of quick_filter: the VIP, nat and port bitmaps, in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuickFilter {
    words: Vec<u64>,
}

impl Default for QuickFilter {
    /// Every bit clear: every IP packet but ICMP leaves at the first test.
    fn default() -> Self {
        QuickFilter {
            words: vec![0; (QUICK_MAPS * QUICK_WORDS) as usize],
        }
    }
}

impl QuickFilter {
    /// The bits of these VIP keys (address, port, protocol number) and nat
    /// backend addresses.
    pub fn new(
        vips: impl IntoIterator<Item = (IpAddr, u16, u8)>,
        nat_backends: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        let mut f = QuickFilter::default();
        for (addr, port, proto) in vips {
            f.set(QUICK_VIP, quick_bit(&addr));
            if port == 0 {
                f.set(QUICK_VIP, quick_bit(&addr) ^ 1);
            } else {
                f.set(QUICK_PORT, quick_port_bit(&addr, port, proto));
            }
        }
        for a in nat_backends {
            f.set(QUICK_NAT, quick_bit(&a));
        }
        f
    }

    fn set(&mut self, base: u32, bit: u32) {
        self.words[(base + bit / 64) as usize] |= 1 << (bit % 64);
    }

    fn has(&self, base: u32, bit: u32) -> bool {
        self.words[(base + bit / 64) as usize] >> (bit % 64) & 1 == 1
    }

    /// Whether a packet from `src` to `dst` is passed at the first test:
    /// the destination's VIP bit and the source's nat bit both clear.
    pub fn passes(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        !self.has(QUICK_VIP, quick_bit(dst)) && !self.has(QUICK_NAT, quick_bit(src))
    }

    /// Whether a packet the first test did not pass goes to the second
    /// stage: the source's nat bit and the destination's all-ports mark
    /// both clear (else the full path).
    pub fn second_stage(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        !self.has(QUICK_NAT, quick_bit(src)) && !self.has(QUICK_VIP, quick_bit(dst) ^ 1)
    }

    /// Whether TCP or UDP (`proto`) to `dst` port `dport` is passed at the
    /// second stage: the bit of (dst, dport) clear.
    pub fn port_passes(&self, dst: &IpAddr, dport: u16, proto: u8) -> bool {
        !self.has(QUICK_PORT, quick_port_bit(dst, dport, proto))
    }

    /// Every bit set in either.
    pub fn union(&self, other: &QuickFilter) -> QuickFilter {
        QuickFilter {
            words: self
                .words
                .iter()
                .zip(&other.words)
                .map(|(a, b)| a | b)
                .collect(),
        }
    }

    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The map value: the words in native byte order.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{IPPROTO_TCP, IPPROTO_UDP};

    #[test]
    fn bits_are_the_documented_hash() {
        // 10.0.0.1: bytes 0a 00 00 01, loaded little-endian 0x0100000a.
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            quick_bit(&v4),
            (0x0100_000a_u64.wrapping_mul(QUICK_MUL) >> 48) as u32
        );
        // fd00::1: halves fd00 0000 0000 0000 and 0000 0000 0000 0001.
        let v6: IpAddr = "fd00::1".parse().unwrap();
        let x = 0x00fd_u64 ^ 0x0100_0000_0000_0000;
        assert_eq!(quick_bit(&v6), (x.wrapping_mul(QUICK_MUL) >> 48) as u32);
        // Port 80 is 00 50 on the wire, loaded little-endian 0x5000; TCP 6.
        let x = 0x0100_000a_u64 ^ 0x5000 << 32 ^ 6 << 48;
        assert_eq!(
            quick_port_bit(&v4, 80, IPPROTO_TCP),
            (x.wrapping_mul(QUICK_MUL) >> 48) as u32
        );
    }

    #[test]
    fn a_vip_stops_its_destination_and_a_nat_backend_its_source() {
        let vip: IpAddr = "10.100.0.1".parse().unwrap();
        let backend: IpAddr = "10.0.1.2".parse().unwrap();
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        let f = QuickFilter::new([(vip, 80, IPPROTO_TCP)], [backend]);
        assert!(f.passes(&client, &"198.51.100.8".parse().unwrap()));
        assert!(!f.passes(&client, &vip));
        assert!(!f.passes(&backend, &client));
        assert!(!f.second_stage(&backend, &vip) && f.second_stage(&client, &vip));
        // The bitmaps are apart: a VIP address as a source, a backend as a
        // destination, are other traffic.
        assert!(f.passes(&vip, &client));
        assert!(QuickFilter::default().passes(&backend, &vip));
        let both = f.union(&QuickFilter::new([(client, 0, IPPROTO_UDP)], []));
        assert!(!both.passes(&vip, &client));
        assert!(!both.passes(&client, &vip));
        assert_eq!(f.to_bytes().len(), 3 * QUICK_WORDS as usize * 8);
    }

    #[test]
    fn the_second_stage_stops_vip_keys_and_all_ports_addresses() {
        let vip: IpAddr = "10.100.0.1".parse().unwrap();
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        let f = QuickFilter::new([(vip, 80, IPPROTO_TCP)], []);
        assert!(f.second_stage(&client, &vip));
        assert!(!f.port_passes(&vip, 80, IPPROTO_TCP));
        assert!(f.port_passes(&vip, 81, IPPROTO_TCP));
        assert!(f.port_passes(&vip, 80, IPPROTO_UDP));
        // An all-ports VIP sends every packet to its address on to the
        // full path, and sets no port bit.
        let all = QuickFilter::new([(vip, 0, IPPROTO_UDP)], []);
        assert!(!all.passes(&client, &vip));
        assert!(!all.second_stage(&client, &vip));
        assert!(all.words()[QUICK_PORT as usize..].iter().all(|&w| w == 0));
    }
}
