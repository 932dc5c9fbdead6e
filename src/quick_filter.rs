//! quick_filter, the XDP program's first test (bpf/abi.h LETHE_QUICK_BITS):
//! two bitmaps, one bit per address hash — the VIP addresses, tested with a
//! packet's destination, and the nat backends, tested with its source. A
//! packet with both bits clear is passed before it is parsed
//! (`quick_not_vip` in bpf/lethe.bpf.c, `model::quick_not_vip`).
//!
//! The bitmap is a pure function of the VIP and nat backend addresses, so
//! the model computes the same one the control plane writes.

use std::net::IpAddr;

use crate::abi::{QUICK_NAT, QUICK_VIP, QUICK_WORDS};

/// XXH64's second prime (bpf/hash.h LH_QUICK).
const QUICK_MUL: u64 = 0xC2B2_AE3D_27D4_EB4F;

/// The bit of an address in a quick_filter bitmap (bpf/hash.h quick_bit4,
/// quick_bit6): the address's 4 bytes loaded little-endian, or the XOR of
/// its two 8-byte halves, times a 64-bit odd constant, top 16 bits.
pub fn quick_bit(addr: &IpAddr) -> u32 {
    let x = match addr {
        IpAddr::V4(a) => u64::from(u32::from_le_bytes(a.octets())),
        IpAddr::V6(a) => {
            let o = a.octets();
            let half = |i: usize| u64::from_le_bytes(o[i..i + 8].try_into().expect("8 bytes"));
            half(0) ^ half(8)
        }
    };
    (x.wrapping_mul(QUICK_MUL) >> 48) as u32
}

/// The words of quick_filter: the VIP bitmap, then the nat bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuickFilter {
    words: Vec<u64>,
}

impl Default for QuickFilter {
    /// Every bit clear: every IP packet but ICMP leaves at the first test.
    fn default() -> Self {
        QuickFilter {
            words: vec![0; 2 * QUICK_WORDS as usize],
        }
    }
}

impl QuickFilter {
    /// The bits of these VIP addresses and nat backend addresses.
    pub fn new(
        vips: impl IntoIterator<Item = IpAddr>,
        nat_backends: impl IntoIterator<Item = IpAddr>,
    ) -> Self {
        let mut f = QuickFilter::default();
        for a in vips {
            f.set(QUICK_VIP, &a);
        }
        for a in nat_backends {
            f.set(QUICK_NAT, &a);
        }
        f
    }

    fn set(&mut self, base: u32, addr: &IpAddr) {
        let bit = quick_bit(addr);
        self.words[(base + bit / 64) as usize] |= 1 << (bit % 64);
    }

    fn has(&self, base: u32, addr: &IpAddr) -> bool {
        let bit = quick_bit(addr);
        self.words[(base + bit / 64) as usize] >> (bit % 64) & 1 == 1
    }

    /// Whether a packet from `src` to `dst` is passed at the first test:
    /// the destination's VIP bit and the source's nat bit both clear.
    pub fn passes(&self, src: &IpAddr, dst: &IpAddr) -> bool {
        !self.has(QUICK_VIP, dst) && !self.has(QUICK_NAT, src)
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
    }

    #[test]
    fn a_vip_stops_its_destination_and_a_nat_backend_its_source() {
        let vip: IpAddr = "10.100.0.1".parse().unwrap();
        let backend: IpAddr = "10.0.1.2".parse().unwrap();
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        let f = QuickFilter::new([vip], [backend]);
        assert!(f.passes(&client, &"198.51.100.8".parse().unwrap()));
        assert!(!f.passes(&client, &vip));
        assert!(!f.passes(&backend, &client));
        // The bitmaps are apart: a VIP address as a source, a backend as a
        // destination, are other traffic.
        assert!(f.passes(&vip, &client));
        assert!(QuickFilter::default().passes(&backend, &vip));
        let both = f.union(&QuickFilter::new([client], []));
        assert!(!both.passes(&vip, &client));
        assert!(!both.passes(&client, &vip));
        assert_eq!(f.to_bytes().len(), 2 * QUICK_WORDS as usize * 8);
    }
}
