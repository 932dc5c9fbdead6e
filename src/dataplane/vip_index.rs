//! vip_index (see bpf/abi.h): the VIPs as the program looks them up, in an
//! open-addressed array of two halves. A new index is written whole into
//! the half no packet reads, then published by flipping one word.

use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering;

use super::mmap::{stride, MapMmap};
use super::records::{self, lethe_vip, lethe_vip_entry, lethe_vip_half, lethe_vip_index_ctl, Pod};
use super::DataplaneError;
use crate::abi::{VIP_HALF_F_OVERFLOW, VIP_PROBES, VIP_SLOTS};
use crate::flow_hash::vip_slot;
use crate::plan::VipKey;

/// Seeds a half tries before it settles for sending some keys to `vips`.
const SEEDS: u32 = 16;

const ENTRY: usize = size_of::<lethe_vip_entry>();
const HALF_BYTES: usize = VIP_SLOTS as usize * ENTRY;

/// One half's content.
#[derive(Clone)]
pub struct Half {
    pub seed: u32,
    /// VIP_HALF_F_*.
    pub flags: u32,
    /// VIP_SLOTS entries; family 0 = empty.
    pub entries: Vec<lethe_vip_entry>,
}

impl std::fmt::Debug for Half {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = self.entries.iter().filter(|e| e.key.family != 0).count();
        write!(
            f,
            "Half {{ seed: {}, flags: {}, entries: {used} used }}",
            self.seed, self.flags
        )
    }
}

impl PartialEq for Half {
    fn eq(&self, o: &Half) -> bool {
        self.record().as_bytes() == o.record().as_bytes() && self.bytes() == o.bytes()
    }
}

impl Half {
    fn bytes(&self) -> Vec<u8> {
        self.entries
            .iter()
            .flat_map(|e| e.as_bytes())
            .copied()
            .collect()
    }

    fn record(&self) -> lethe_vip_half {
        lethe_vip_half {
            seed: self.seed,
            flags: self.flags,
        }
    }
}

/// Places every key within VIP_PROBES entries of its home under `seed`;
/// returns the entries and how many keys did not fit.
fn place(vips: &[(VipKey, lethe_vip)], seed: u32) -> (Vec<lethe_vip_entry>, usize) {
    let mask = VIP_SLOTS - 1;
    let mut entries = vec![lethe_vip_entry::default(); VIP_SLOTS as usize];
    let mut unplaced = 0;
    for (key, vip) in vips {
        let home = vip_slot(&key.address, key.port, key.protocol.number(), seed);
        let free = (0..VIP_PROBES)
            .map(|i| ((home + i) & mask) as usize)
            .find(|&i| entries[i].key.family == 0);
        match free {
            Some(i) => {
                entries[i] = lethe_vip_entry {
                    key: records::vip_key(key),
                    vip: *vip,
                    ..Default::default()
                }
            }
            None => unplaced += 1,
        }
    }
    (entries, unplaced)
}

/// The half holding `vips`: the first seed that places every key, else
/// the seed that leaves fewest out, with the overflow flag (the program
/// then looks misses up in `vips`, which holds every VIP). A function of
/// the set: the same VIPs give the same bytes, whatever their order.
pub fn build(vips: &[(VipKey, lethe_vip)]) -> Half {
    let mut sorted = vips.to_vec();
    sorted.sort_by(|a, b| {
        records::vip_key(&a.0)
            .as_bytes()
            .cmp(records::vip_key(&b.0).as_bytes())
    });
    let mut best: Option<(usize, u32, Vec<lethe_vip_entry>)> = None;
    for seed in 0..SEEDS {
        let (entries, unplaced) = place(&sorted, seed);
        if unplaced == 0 {
            return Half {
                seed,
                flags: 0,
                entries,
            };
        }
        if best.as_ref().is_none_or(|(n, _, _)| unplaced < *n) {
            best = Some((unplaced, seed, entries));
        }
    }
    let (_, seed, entries) = best.expect("SEEDS > 0");
    Half {
        seed,
        flags: VIP_HALF_F_OVERFLOW,
        entries,
    }
}

/// The pinned (or private) vip_index and vip_index_ctl, mapped.
pub struct VipIndex {
    entries: MapMmap,
    ctl: MapMmap,
}

impl VipIndex {
    pub fn open(entries: BorrowedFd<'_>, ctl: BorrowedFd<'_>) -> Result<VipIndex, DataplaneError> {
        debug_assert_eq!(stride(ENTRY), ENTRY);
        Ok(VipIndex {
            entries: MapMmap::new(entries, 2 * HALF_BYTES, true, "mmap of vip_index")?,
            ctl: MapMmap::new(
                ctl,
                stride(size_of::<lethe_vip_index_ctl>()),
                true,
                "mmap of vip_index_ctl",
            )?,
        })
    }

    fn active(&self) -> usize {
        (self.ctl.atomic_u32(0).load(Ordering::Acquire) & 1) as usize
    }

    fn half_offset(i: usize) -> usize {
        std::mem::offset_of!(lethe_vip_index_ctl, half) + i * size_of::<lethe_vip_half>()
    }

    /// The entries (VIP key and record) the live half holds, as packets
    /// find them now.
    pub fn live_entries(&self) -> Vec<lethe_vip_entry> {
        let a = self.active();
        self.entries.bytes()[a * HALF_BYTES..(a + 1) * HALF_BYTES]
            .chunks_exact(ENTRY)
            .filter_map(lethe_vip_entry::from_bytes)
            .filter(|e| e.key.family != 0)
            .collect()
    }

    /// Whether the live half holds exactly `half`.
    pub fn is_live(&self, half: &Half) -> bool {
        let a = self.active();
        let off = Self::half_offset(a);
        let ctl = &self.ctl.bytes()[off..off + size_of::<lethe_vip_half>()];
        ctl == half.record().as_bytes()
            && self.entries.bytes()[a * HALF_BYTES..(a + 1) * HALF_BYTES] == half.bytes()[..]
    }

    /// Makes `half` the live index: unless it already is, `wait` (which
    /// must return only once no packet still reads the spare half), then
    /// the spare half is written and `active` flips to it in one aligned
    /// store. Returns whether it flipped.
    pub fn publish(
        &self,
        half: &Half,
        wait: impl FnOnce() -> Result<(), DataplaneError>,
    ) -> Result<bool, DataplaneError> {
        if self.is_live(half) {
            return Ok(false);
        }
        wait()?;
        let spare = self.active() ^ 1;
        self.entries.write(spare * HALF_BYTES, &half.bytes());
        self.ctl
            .write(Self::half_offset(spare), half.record().as_bytes());
        // Release: the half is complete before a packet can pick it.
        self.ctl
            .atomic_u32(0)
            .store(spare as u32, Ordering::Release);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;
    use std::net::IpAddr;

    fn key(addr: &str, port: u16) -> VipKey {
        VipKey {
            address: addr.parse().unwrap(),
            port,
            protocol: Protocol::Tcp,
        }
    }

    fn rec(vip_id: u32) -> lethe_vip {
        lethe_vip {
            vip_id,
            table_id: 2 * vip_id,
            table_size: 65_537,
            mode: 1,
            ..Default::default()
        }
    }

    /// Where `k` sits in `h`: its distance from its home entry.
    fn distance(h: &Half, k: &VipKey) -> Option<u32> {
        let home = vip_slot(&k.address, k.port, k.protocol.number(), h.seed);
        let want = records::vip_key(k);
        (0..VIP_SLOTS).find(|i| {
            h.entries[((home + i) & (VIP_SLOTS - 1)) as usize]
                .key
                .as_bytes()
                == want.as_bytes()
        })
    }

    #[test]
    fn a_full_set_of_vips_is_placed_within_the_probe_bound() {
        // As many VIPs as the maps hold, in consecutive addresses: every
        // one within VIP_PROBES of its home, no overflow.
        let vips: Vec<_> = (0..crate::abi::MAX_VIPS)
            .map(|i| {
                let a = IpAddr::from([10, 100, (i / 256) as u8, (i % 256) as u8]);
                (
                    VipKey {
                        address: a,
                        port: 80,
                        protocol: Protocol::Tcp,
                    },
                    rec(i),
                )
            })
            .collect();
        let h = build(&vips);
        assert_eq!(h.flags, 0, "{h:?}");
        for (k, v) in &vips {
            let d = distance(&h, k).expect("placed");
            assert!(d < VIP_PROBES, "{k:?} at distance {d}");
            let home = vip_slot(&k.address, k.port, k.protocol.number(), h.seed);
            let e = &h.entries[((home + d) & (VIP_SLOTS - 1)) as usize];
            assert_eq!(e.vip.as_bytes(), v.as_bytes());
        }
    }

    #[test]
    fn the_order_of_the_vips_does_not_matter() {
        let mut vips: Vec<_> = (0..50u16)
            .map(|i| (key("10.100.0.1", 1000 + i), rec(u32::from(i))))
            .collect();
        let a = build(&vips);
        vips.reverse();
        assert!(build(&vips) == a);
    }

    /// IPv6 addresses whose words cancel in addr_fold share a home entry
    /// under every seed: past VIP_PROBES of them, some overflow.
    #[test]
    fn keys_that_cannot_be_placed_set_the_overflow_flag() {
        let colliding = |n: u32| -> Vec<(VipKey, lethe_vip)> {
            (1..=n)
                .map(|i| {
                    let k = i.wrapping_mul(0x0101_0101);
                    let w1 = k.rotate_right(8);
                    let w2 = k.rotate_right(16);
                    let mut o = [0u8; 16];
                    o[..4].copy_from_slice(&0xfd00_0000u32.to_be_bytes());
                    o[4..8].copy_from_slice(&w1.to_le_bytes());
                    o[8..12].copy_from_slice(&w2.to_le_bytes());
                    let addr = IpAddr::from(o);
                    (
                        VipKey {
                            address: addr,
                            port: 443,
                            protocol: Protocol::Tcp,
                        },
                        rec(i),
                    )
                })
                .collect()
        };
        let fits = colliding(VIP_PROBES);
        let h = build(&fits);
        assert_eq!(h.flags, 0);
        let homes: std::collections::HashSet<u32> = fits
            .iter()
            .map(|(k, _)| vip_slot(&k.address, k.port, 6, h.seed))
            .collect();
        assert_eq!(homes.len(), 1, "the keys share one home entry");

        let over = colliding(VIP_PROBES + 3);
        let h = build(&over);
        assert_eq!(h.flags, VIP_HALF_F_OVERFLOW);
        let placed = over
            .iter()
            .filter(|(k, _)| distance(&h, k).is_some())
            .count();
        assert_eq!(placed, VIP_PROBES as usize);
    }
}
