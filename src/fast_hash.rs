//! A quick hasher for the control plane's maps and sets keyed by addresses
//! (backends, VIP keys). A change of one backend among 1000 hashes every
//! backend address several times (validation, the installed records, the
//! table's id mapping); with std's SipHash that took ~0.5 ms of the
//! ~4 ms before the change reached the maps. The keys come from the
//! operator's configuration, not from packets, so a hash that an attacker
//! could collide on purpose is acceptable here.
//!
//! The FxHash step (rotate, xor, multiply by a 64-bit odd constant) per
//! word, and a final xor-shift-multiply so that keys differing only in
//! high bits still land in different buckets (hashbrown takes the bucket
//! from the low bits, which a multiply alone never feeds from above).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Default, Clone, Copy)]
pub struct FastHasher {
    hash: u64,
}

const K: u64 = 0xf135_7aea_2e62_a9c5;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let h = (self.hash ^ (self.hash >> 32)).wrapping_mul(K);
        h ^ (h >> 29)
    }
}

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;
pub type FastSet<K> = HashSet<K, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn hash<T: Hash>(t: &T) -> u64 {
        BuildHasherDefault::<FastHasher>::default().hash_one(t)
    }

    /// Backends of one subnet, and IPv6 addresses that differ only in
    /// their first bytes, spread over the low bits hashbrown indexes by.
    #[test]
    fn nearby_addresses_spread_over_buckets() {
        let v4: Vec<IpAddr> = (0..4096u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i)))
            .collect();
        let v6: Vec<IpAddr> = (0..4096u128)
            .map(|i| IpAddr::V6(Ipv6Addr::from(i << 112 | 1)))
            .collect();
        for set in [v4, v6] {
            let buckets: FastSet<u64> = set.iter().map(|a| hash(a) & 4095).collect();
            // Uniform hashing fills ~63 % of 4096 buckets with 4096 keys.
            assert!(buckets.len() > 2400, "{} buckets used", buckets.len());
        }
        let high: FastSet<u64> = (0..4096u128).map(|i| hash(&(i << 116)) & 4095).collect();
        assert!(high.len() > 2400, "{} buckets used", high.len());
    }

    #[test]
    fn byte_strings_of_every_length_differ() {
        let hashes: FastSet<u64> = (0..=17)
            .map(|n| hash(&vec![0u8; n]))
            .chain((0..=17).map(|n| hash(&"x".repeat(n))))
            .collect();
        assert_eq!(hashes.len(), 36);
    }
}
