//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI '16), with
//! exact per-backend quotas.
//!
//! The table is a pure function of the backend set, the weights and the
//! table size M: backends are ordered by address and their permutations come
//! from a fixed hash of the address, so every node (and every insertion order)
//! produces the same bytes.
//!
//! Weights: each backend first gets a quota of slots, `floor(M * w / W)`, and
//! the few slots left by rounding go to the backends they overshoot least
//! (smallest `(quota + 1) / w`), so every share is as close to its weight's
//! share as whole slots allow. Backends then claim slots in rounds along
//! their permutations, each at a pace proportional to its weight, until its
//! quota is reached. Weights may span 1-65535 without slowing the build.

use std::net::IpAddr;

use thiserror::Error;

/// The default table size: the prime SPEC.md names.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;
/// Smallest table size accepted (a table must dwarf its backend count).
pub const MIN_TABLE_SIZE: u32 = 7;
/// Largest table size accepted: the largest prime below 2^20 (4 MiB table).
pub const MAX_TABLE_SIZE: u32 = 1_048_573;

const EMPTY: u32 = u32::MAX;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MaglevError {
    #[error("table size {0} is not a prime")]
    NotPrime(u32),
    #[error("table size {0} is outside [{MIN_TABLE_SIZE}, {MAX_TABLE_SIZE}]")]
    SizeOutOfRange(u32),
    #[error("backend {0} is listed twice")]
    DuplicateBackend(IpAddr),
    #[error("{backends} backends do not fit in a table of {size} slots")]
    TooManyBackends { backends: usize, size: u32 },
}

/// A backend as Maglev sees it: an identity and a weight (0 = not in the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightedBackend {
    pub address: IpAddr,
    pub weight: u32,
}

/// A built table. `slots[i]` indexes `backends`, which holds the backends of
/// non-zero weight in address order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevTable {
    pub backends: Vec<IpAddr>,
    pub slots: Vec<u32>,
}

impl MaglevTable {
    pub fn size(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Whether the table has no backend: every VIP packet would be dropped.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// How many slots each backend holds, in `backends` order.
    pub fn slot_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.backends.len()];
        for &s in &self.slots {
            counts[s as usize] += 1;
        }
        counts
    }

    /// The backend serving a slot.
    pub fn backend_at(&self, slot: u32) -> Option<IpAddr> {
        let idx = *self.slots.get(slot as usize)?;
        self.backends.get(idx as usize).copied()
    }
}

/// The digest of a table's meaning, slot -> backend address: SHA-256 over
/// a version tag, M, the backends that hold slots (address order, a family
/// byte and 16 address bytes each) and each slot's index into that list.
/// Two nodes with the same configuration show the same digest; a table
/// read back from the kernel hashes the same as the one that was written.
pub fn digest(slot_backends: impl ExactSizeIterator<Item = IpAddr> + Clone) -> String {
    use sha2::{Digest, Sha256};
    let mut present: Vec<IpAddr> = slot_backends.clone().collect();
    present.sort();
    present.dedup();
    let mut h = Sha256::new();
    h.update(b"lethe-table-v1");
    h.update((slot_backends.len() as u32).to_be_bytes());
    h.update((present.len() as u32).to_be_bytes());
    for a in &present {
        match a {
            IpAddr::V4(v4) => {
                h.update([4u8]);
                h.update(v4.to_ipv6_mapped().octets());
            }
            IpAddr::V6(v6) => {
                h.update([6u8]);
                h.update(v6.octets());
            }
        }
    }
    let mut buf = Vec::with_capacity(slot_backends.len() * 4);
    for a in slot_backends {
        let i = present.binary_search(&a).expect("listed above") as u32;
        buf.extend_from_slice(&i.to_be_bytes());
    }
    h.update(&buf);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl MaglevTable {
    /// See [`digest`].
    pub fn digest(&self) -> String {
        digest(self.slots.iter().map(|&i| self.backends[i as usize]))
    }
}

pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let mut d = 3u32;
    while d.saturating_mul(d) <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

pub fn validate_size(size: u32) -> Result<(), MaglevError> {
    if !(MIN_TABLE_SIZE..=MAX_TABLE_SIZE).contains(&size) {
        return Err(MaglevError::SizeOutOfRange(size));
    }
    if !is_prime(size) {
        return Err(MaglevError::NotPrime(size));
    }
    Ok(())
}

/// 64-bit hash of a backend identity: FNV-1a over a family byte and the
/// address octets, then the SplitMix64 finaliser for avalanche. Fixed
/// forever: changing it reshuffles every table of every deployed node.
fn identity_hash(addr: &IpAddr) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    match addr {
        IpAddr::V4(a) => {
            eat(4);
            a.octets().into_iter().for_each(&mut eat);
        }
        IpAddr::V6(a) => {
            eat(6);
            a.octets().into_iter().for_each(&mut eat);
        }
    }
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Slots per backend: floor shares, then the rounding remainder to the
/// backends that overshoot least. `weights` are non-zero.
fn quotas(weights: &[u32], size: u32) -> Vec<u32> {
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let mut quota: Vec<u32> = weights
        .iter()
        .map(|&w| (u128::from(size) * u128::from(w) / total) as u32)
        .collect();
    let assigned: u64 = quota.iter().map(|&q| u64::from(q)).sum();
    let left = (u64::from(size) - assigned) as usize;
    if left > 0 {
        // Order by (quota + 1) / weight, compared exactly; ties by position
        // (address order), so the result does not depend on the sort.
        let mut order: Vec<usize> = (0..weights.len()).collect();
        order.sort_by(|&a, &b| {
            let lhs = (u64::from(quota[a]) + 1) * u64::from(weights[b]);
            let rhs = (u64::from(quota[b]) + 1) * u64::from(weights[a]);
            lhs.cmp(&rhs).then(a.cmp(&b))
        });
        for &i in order.iter().take(left) {
            quota[i] += 1;
        }
    }
    quota
}

/// A bitset of filled slots: 8 KiB for M = 65537, so probes hit L1.
struct Filled(Vec<u64>);

impl Filled {
    fn new(size: u32) -> Self {
        Filled(vec![0; (size as usize).div_ceil(64)])
    }
    #[inline(always)]
    fn is_free(&self, i: u32) -> u32 {
        // i < size, so i / 64 < len.
        ((!self.0[(i / 64) as usize] >> (i % 64)) & 1) as u32
    }
    #[inline(always)]
    fn fill(&mut self, i: u32) {
        self.0[(i / 64) as usize] |= 1 << (i % 64);
    }
}

/// `a + b mod m` for `a, b < m <= 2^31`.
#[inline(always)]
fn add_mod(a: u32, b: u32, m: u32) -> u32 {
    let c = a + b;
    if c >= m {
        c - m
    } else {
        c
    }
}

/// How many positions of a permutation one probe step looks at. Most of a
/// build is the tail, where nearly every slot is taken: looking at several
/// positions per step (independent loads, one branch) instead of one
/// (a load, then a branch that mispredicts whenever it finds a slot) is
/// what makes a build fast. The slot taken is the same: the first free one
/// along the permutation.
const LANES: usize = 4;

/// A backend's walk along its permutation `offset + j * skip (mod M)`.
struct Walk {
    pos: u32,
    /// `k * skip mod M` for k = 0..=LANES.
    steps: [u32; LANES + 1],
}

impl Walk {
    fn new(offset: u32, skip: u32, m: u32) -> Walk {
        let mut steps = [0u32; LANES + 1];
        for k in 1..=LANES {
            steps[k] = add_mod(steps[k - 1], skip, m);
        }
        Walk { pos: offset, steps }
    }

    /// Takes the first free slot from the current position on, marks it
    /// filled, moves past it and returns it. There is a free slot: the
    /// caller only asks while slots remain, and M is prime, so the walk
    /// visits every slot.
    #[inline(always)]
    fn claim(&mut self, filled: &mut Filled, m: u32) -> u32 {
        let mut p = self.pos;
        // Early in a build the next position is nearly always free.
        if filled.is_free(p) == 1 {
            filled.fill(p);
            self.pos = add_mod(p, self.steps[1], m);
            return p;
        }
        p = add_mod(p, self.steps[1], m);
        loop {
            let at: [u32; LANES] = std::array::from_fn(|k| add_mod(p, self.steps[k], m));
            let free = at
                .iter()
                .enumerate()
                .fold(0u32, |acc, (k, &q)| acc | filled.is_free(q) << k);
            if free != 0 {
                let slot = at[free.trailing_zeros() as usize];
                filled.fill(slot);
                self.pos = add_mod(slot, self.steps[1], m);
                return slot;
            }
            p = add_mod(p, self.steps[LANES], m);
        }
    }

    /// The same claim when only the few slots in `free` are left: the first
    /// of them along the walk is the one at the fewest steps from the
    /// current position, `(slot - pos) * skip^-1 mod M`, computed directly
    /// instead of walking past ~M / free.len() taken slots.
    fn claim_from(&mut self, free: &mut Vec<u32>, inverse: u64, m: &Modulus) -> u32 {
        let pos = u64::from(self.pos);
        let mut best = (u64::MAX, 0usize);
        for (k, &f) in free.iter().enumerate() {
            let steps = m.reduce((u64::from(f) + m.m - pos) * inverse);
            if steps < best.0 {
                best = (steps, k);
            }
        }
        let slot = free.swap_remove(best.1);
        self.pos = add_mod(slot, self.steps[1], m.m as u32);
        slot
    }

    fn skip(&self) -> u32 {
        self.steps[1]
    }
}

/// Reduction modulo M (Barrett): for `a < 2^64`, `a mod M` with a multiply
/// instead of a division.
struct Modulus {
    m: u64,
    mu: u128,
}

impl Modulus {
    fn new(m: u32) -> Modulus {
        Modulus {
            m: u64::from(m),
            mu: u128::from(u64::MAX / u64::from(m)),
        }
    }

    #[inline(always)]
    fn reduce(&self, a: u64) -> u64 {
        let q = ((u128::from(a) * self.mu) >> 64) as u64;
        let mut r = a - q * self.m;
        while r >= self.m {
            r -= self.m;
        }
        r
    }
}

/// `a^-1 mod m` for prime `m` and `0 < a < m` (extended Euclid).
fn inverse_mod(a: u32, m: u32) -> u64 {
    let (mut t, mut new_t) = (0i64, 1i64);
    let (mut r, mut new_r) = (i64::from(m), i64::from(a));
    while new_r != 0 {
        let q = r / new_r;
        (t, new_t) = (new_t, t - q * new_t);
        (r, new_r) = (new_r, r - q * new_r);
    }
    debug_assert_eq!(r, 1, "{a} has no inverse mod {m}");
    t.rem_euclid(i64::from(m)) as u64
}

/// Below this many free slots, claims pick among the free slots directly
/// (`Walk::claim_from`) instead of walking: about where walking past
/// M / free taken slots costs more than looking at every free one.
/// Measured (`cargo bench --bench maglev`, M = 65537, N = 100): sqrt(M)
/// builds in 1.14 ms, 2.5 sqrt(M) in 1.33 ms, 0.5 sqrt(M) in 1.16 ms.
fn tail_len(m: u32) -> u32 {
    ((f64::from(m).sqrt() * 1.0) as u32).max(16)
}

/// Builds the table. Backends of weight 0 are left out; with none left the
/// table is empty (`is_empty`), which the data plane treats as "no backend".
pub fn build(backends: &[WeightedBackend], size: u32) -> Result<MaglevTable, MaglevError> {
    validate_size(size)?;
    let mut sorted: Vec<WeightedBackend> = backends.to_vec();
    sorted.sort_by_key(|b| b.address);
    if let Some(pair) = sorted.windows(2).find(|p| p[0].address == p[1].address) {
        return Err(MaglevError::DuplicateBackend(pair[0].address));
    }
    sorted.retain(|b| b.weight > 0);
    if sorted.len() > size as usize {
        return Err(MaglevError::TooManyBackends {
            backends: sorted.len(),
            size,
        });
    }
    let addresses: Vec<IpAddr> = sorted.iter().map(|b| b.address).collect();
    if sorted.is_empty() {
        return Ok(MaglevTable {
            backends: addresses,
            slots: Vec::new(),
        });
    }

    let weights: Vec<u32> = sorted.iter().map(|b| b.weight).collect();
    let mut left = quotas(&weights, size);
    // Each round a backend earns its weight in credit and spends `pace` per
    // claim: the average weight, so a round fills about N slots whatever
    // the weights' magnitude, and equal weights give plain Maglev.
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let pace = (total / weights.len() as u64).max(1);
    let m = u64::from(size);
    // Permutation of backend i: offset_i + j * skip_i (mod M), walked by
    // keeping the current position.
    let mut walks: Vec<Walk> = addresses
        .iter()
        .map(|a| {
            let h = identity_hash(a);
            let offset = ((h >> 32) % m) as u32;
            let skip = ((h & 0xffff_ffff) % (m - 1) + 1) as u32;
            Walk::new(offset, skip, size)
        })
        .collect();
    let mut credit = vec![0u64; sorted.len()];
    let mut slots = vec![EMPTY; size as usize];
    let mut filled = Filled::new(size);
    let mut remaining = size;

    let tail = tail_len(size);
    let modulus = Modulus::new(size);
    // In the tail: the free slots, and each walk's skip inverse (0: not
    // computed yet).
    let mut free: Option<Vec<u32>> = None;
    let mut inverses = vec![0u64; sorted.len()];
    while remaining > 0 {
        for i in 0..sorted.len() {
            credit[i] += u64::from(weights[i]);
            while credit[i] >= pace && left[i] > 0 {
                credit[i] -= pace;
                if free.is_none() && remaining <= tail {
                    free = Some((0..size).filter(|&s| filled.is_free(s) == 1).collect());
                }
                let slot = match free.as_mut() {
                    None => walks[i].claim(&mut filled, size),
                    Some(free) => {
                        if inverses[i] == 0 {
                            inverses[i] = inverse_mod(walks[i].skip(), size);
                        }
                        walks[i].claim_from(free, inverses[i], &modulus)
                    }
                };
                slots[slot as usize] = i as u32;
                left[i] -= 1;
                remaining -= 1;
            }
            if left[i] == 0 {
                credit[i] = 0;
            }
        }
    }
    Ok(MaglevTable {
        backends: addresses,
        slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Deterministic weights 1..=4 without a RNG dependency.
    fn weight_of(i: u32) -> u32 {
        (i.wrapping_mul(2_654_435_761) >> 13) % 4 + 1
    }

    fn v4(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
    }

    fn equal(n: u32) -> Vec<WeightedBackend> {
        (0..n)
            .map(|i| WeightedBackend {
                address: v4(i),
                weight: 1,
            })
            .collect()
    }

    fn weighted(n: u32) -> Vec<WeightedBackend> {
        (0..n)
            .map(|i| WeightedBackend {
                address: v4(i),
                weight: weight_of(i),
            })
            .collect()
    }

    /// max and min over backends of share / weight share.
    fn balance(backends: &[WeightedBackend], table: &MaglevTable) -> (f64, f64) {
        let total_w: f64 = backends.iter().map(|b| f64::from(b.weight)).sum();
        let counts = table.slot_counts();
        let mut lo = f64::MAX;
        let mut hi = f64::MIN;
        for (addr, count) in table.backends.iter().zip(counts) {
            let w = backends.iter().find(|b| b.address == *addr).unwrap().weight;
            let ideal = f64::from(table.size()) * f64::from(w) / total_w;
            let ratio = f64::from(count) / ideal;
            lo = lo.min(ratio);
            hi = hi.max(ratio);
        }
        (lo, hi)
    }

    fn changed(a: &MaglevTable, b: &MaglevTable) -> usize {
        (0..a.size())
            .filter(|&s| a.backend_at(s) != b.backend_at(s))
            .count()
    }

    #[test]
    fn digest_is_a_function_of_slot_contents_only() {
        let a = build(&weighted(50), 7919).unwrap();
        let mut shuffled = weighted(50);
        shuffled.reverse();
        let b = build(&shuffled, 7919).unwrap();
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.digest().len(), 64);
        // Read back as addresses (as from the kernel): the same digest.
        let addrs: Vec<IpAddr> = a.slots.iter().map(|&i| a.backends[i as usize]).collect();
        assert_eq!(digest(addrs.iter().copied()), a.digest());
        let mut more = weighted(50);
        more[3].weight += 1;
        assert_ne!(build(&more, 7919).unwrap().digest(), a.digest());
        assert_ne!(build(&weighted(50), 7927).unwrap().digest(), a.digest());
    }

    /// The build as Maglev describes it, one probe at a time: the fast
    /// build (probe lanes, direct choice in the tail) must give the same
    /// table, slot for slot.
    fn reference_build(backends: &[WeightedBackend], size: u32) -> Vec<u32> {
        let mut sorted = backends.to_vec();
        sorted.sort_by_key(|b| b.address);
        sorted.retain(|b| b.weight > 0);
        let weights: Vec<u32> = sorted.iter().map(|b| b.weight).collect();
        let mut left = quotas(&weights, size);
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let pace = (total / weights.len() as u64).max(1);
        let m = u64::from(size);
        let (mut pos, skip): (Vec<u64>, Vec<u64>) = sorted
            .iter()
            .map(|b| {
                let h = identity_hash(&b.address);
                ((h >> 32) % m, (h & 0xffff_ffff) % (m - 1) + 1)
            })
            .unzip();
        let mut credit = vec![0u64; sorted.len()];
        let mut slots = vec![EMPTY; size as usize];
        let mut remaining = size;
        while remaining > 0 {
            for i in 0..sorted.len() {
                credit[i] += u64::from(weights[i]);
                while credit[i] >= pace && left[i] > 0 {
                    credit[i] -= pace;
                    while slots[pos[i] as usize] != EMPTY {
                        pos[i] = (pos[i] + skip[i]) % m;
                    }
                    slots[pos[i] as usize] = i as u32;
                    pos[i] = (pos[i] + skip[i]) % m;
                    left[i] -= 1;
                    remaining -= 1;
                }
                if left[i] == 0 {
                    credit[i] = 0;
                }
            }
        }
        slots
    }

    #[test]
    fn the_fast_build_is_the_reference_build() {
        for (n, size) in [
            (1, 7),
            (3, 7),
            (7, 7),
            (2, 13),
            (5, 251),
            (40, 1021),
            (100, 65_537),
            (1000, 65_537),
            (3, 65_537),
            (300, 655_373),
        ] {
            for weights in [equal(n), weighted(n)] {
                assert_eq!(
                    build(&weights, size).unwrap().slots,
                    reference_build(&weights, size),
                    "n={n} size={size}"
                );
            }
        }
    }

    #[test]
    fn primes() {
        assert!(is_prime(65_537));
        assert!(is_prime(655_373));
        assert!(is_prime(MAX_TABLE_SIZE));
        assert!(!is_prime(65_536));
        assert!(!is_prime(1));
        assert!(!is_prime(655_371));
        assert_eq!(validate_size(65_536), Err(MaglevError::NotPrime(65_536)));
        assert_eq!(validate_size(5), Err(MaglevError::SizeOutOfRange(5)));
        assert_eq!(
            validate_size(MAX_TABLE_SIZE + 2),
            Err(MaglevError::SizeOutOfRange(MAX_TABLE_SIZE + 2))
        );
    }

    #[test]
    fn every_slot_filled_with_a_listed_backend() {
        for n in [1, 2, 3, 10, 100] {
            let t = build(&weighted(n), 65_537).unwrap();
            assert_eq!(t.slots.len(), 65_537);
            assert!(t.slots.iter().all(|&s| (s as usize) < t.backends.len()));
        }
    }

    #[test]
    fn balance_within_two_percent_equal_weights() {
        for n in [1, 2, 3, 7, 10, 100, 333, 1000] {
            let b = equal(n);
            let t = build(&b, DEFAULT_TABLE_SIZE).unwrap();
            let (lo, hi) = balance(&b, &t);
            assert!(lo >= 0.98 && hi <= 1.02, "n={n}: {lo:.4}..{hi:.4}");
        }
    }

    #[test]
    fn balance_within_two_percent_weights_1_to_4() {
        for n in [2, 10, 100, 500, 1000] {
            let b = weighted(n);
            let t = build(&b, DEFAULT_TABLE_SIZE).unwrap();
            let (lo, hi) = balance(&b, &t);
            assert!(lo >= 0.98 && hi <= 1.02, "n={n}: {lo:.4}..{hi:.4}");
        }
    }

    #[test]
    fn balance_at_the_largest_documented_size() {
        let b = weighted(1000);
        let t = build(&b, 655_373).unwrap();
        let (lo, hi) = balance(&b, &t);
        assert!(lo >= 0.98 && hi <= 1.02, "{lo:.4}..{hi:.4}");
    }

    #[test]
    fn removing_one_of_100_moves_its_slots_and_little_else() {
        let all = equal(100);
        let before = build(&all, DEFAULT_TABLE_SIZE).unwrap();
        for removed in [0usize, 42, 99] {
            let rest: Vec<_> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != removed)
                .map(|(_, b)| *b)
                .collect();
            let after = build(&rest, DEFAULT_TABLE_SIZE).unwrap();
            let gone = all[removed].address;
            let own = (0..before.size())
                .filter(|&s| before.backend_at(s) == Some(gone))
                .count();
            assert!((0..after.size()).all(|s| after.backend_at(s) != Some(gone)));
            let moved = changed(&before, &after);
            let frac = moved as f64 / f64::from(before.size());
            assert!(moved >= own);
            assert!(
                frac <= 0.017,
                "removing #{removed} moved {:.3}%",
                frac * 100.0
            );
        }
    }

    #[test]
    fn adding_one_to_100_moves_little() {
        let before = build(&equal(100), DEFAULT_TABLE_SIZE).unwrap();
        let after = build(&equal(101), DEFAULT_TABLE_SIZE).unwrap();
        let frac = changed(&before, &after) as f64 / f64::from(before.size());
        assert!(frac <= 0.017, "adding moved {:.3}%", frac * 100.0);
    }

    #[test]
    fn changing_one_weight_moves_little() {
        let mut b = equal(100);
        let before = build(&b, DEFAULT_TABLE_SIZE).unwrap();
        b[10].weight = 2;
        let after = build(&b, DEFAULT_TABLE_SIZE).unwrap();
        let frac = changed(&before, &after) as f64 / f64::from(before.size());
        // The doubled backend gains ~1 % of the table; little else moves.
        assert!(frac <= 0.02, "reweighting moved {:.3}%", frac * 100.0);
    }

    #[test]
    fn extreme_weights_keep_balance() {
        let mut b = equal(1000);
        b[0].weight = crate::config::MAX_WEIGHT;
        let t = build(&b, DEFAULT_TABLE_SIZE).unwrap();
        let counts = t.slot_counts();
        // 65535 of 66534 weight units: 64553.4 slots, the rest 0.98 each.
        assert_eq!(counts[0], 64_553);
        assert!(counts[1..].iter().all(|&c| c <= 1));
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let b = weighted(257);
        let t = build(&b, DEFAULT_TABLE_SIZE).unwrap();
        let mut shuffled = b.clone();
        // A fixed permutation: reverse, then interleave halves.
        shuffled.reverse();
        let (x, y) = shuffled.split_at(128);
        let mut mixed: Vec<_> = y.iter().zip(x).flat_map(|(a, b)| [*a, *b]).collect();
        mixed.push(y[y.len() - 1]);
        assert_eq!(mixed.len(), b.len());
        assert_eq!(build(&mixed, DEFAULT_TABLE_SIZE).unwrap(), t);
    }

    #[test]
    fn zero_weight_is_out_of_the_table() {
        let mut b = equal(3);
        b[1].weight = 0;
        let t = build(&b, 7_919).unwrap();
        assert_eq!(t.backends, vec![v4(0), v4(2)]);
        assert!(t.slot_counts().iter().all(|&c| c > 3_900));
    }

    #[test]
    fn no_backends_gives_an_empty_table() {
        let t = build(&[], DEFAULT_TABLE_SIZE).unwrap();
        assert!(t.is_empty());
        let mut b = equal(2);
        b.iter_mut().for_each(|b| b.weight = 0);
        assert!(build(&b, DEFAULT_TABLE_SIZE).unwrap().is_empty());
    }

    #[test]
    fn errors_are_reported() {
        let mut b = equal(2);
        b[1].address = b[0].address;
        assert_eq!(
            build(&b, DEFAULT_TABLE_SIZE),
            Err(MaglevError::DuplicateBackend(v4(0)))
        );
        assert_eq!(
            build(&equal(8), 7),
            Err(MaglevError::TooManyBackends {
                backends: 8,
                size: 7
            })
        );
        assert_eq!(build(&equal(2), 100), Err(MaglevError::NotPrime(100)));
    }

    #[test]
    fn mixed_families_are_ordered_and_balanced() {
        let b = vec![
            WeightedBackend {
                address: IpAddr::V6(Ipv6Addr::LOCALHOST),
                weight: 1,
            },
            WeightedBackend {
                address: v4(1),
                weight: 3,
            },
        ];
        let t = build(&b, 65_537).unwrap();
        assert_eq!(t.backends, vec![v4(1), IpAddr::V6(Ipv6Addr::LOCALHOST)]);
        let (lo, hi) = balance(&b, &t);
        assert!(lo >= 0.999 && hi <= 1.001);
    }

    /// The quota step alone: exact shares where they are whole numbers.
    #[test]
    fn quotas_sum_to_size_and_follow_weights() {
        assert_eq!(quotas(&[1, 1, 2], 8), vec![2, 2, 4]);
        let q = quotas(&[1, 4, 4, 4], 13);
        assert_eq!(q.iter().sum::<u32>(), 13);
        assert_eq!(q, vec![1, 4, 4, 4]);
        let q = quotas(&[1; 3], 7);
        assert_eq!(q, vec![3, 2, 2]);
    }
}
