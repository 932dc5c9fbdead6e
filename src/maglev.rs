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

/// A backend's whole share of `size` slots, `floor(size * w / total)`:
/// what `quotas` gives it before the rounding remainder, so never more
/// than its quota. Configuration validation asks it of every backend.
pub(crate) fn floor_share(weight: u32, total: u64, size: u32) -> u32 {
    // size * w < 2^20 * 2^32 and total < 2^20 * 2^32: u64 is exact, and
    // spares a 128-bit division per backend.
    (u64::from(size) * u64::from(weight) / total) as u32
}

/// Slots per backend: floor shares, then the rounding remainder to the
/// backends that overshoot least. `weights` are non-zero.
pub(crate) fn quotas(weights: &[u32], size: u32) -> Vec<u32> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let mut quota: Vec<u32> = weights
        .iter()
        .map(|&w| floor_share(w, total, size))
        .collect();
    let assigned: u64 = quota.iter().map(|&q| u64::from(q)).sum();
    let left = (u64::from(size) - assigned) as usize;
    if left > 0 {
        // Order by (quota + 1) / weight, compared exactly; ties by position
        // (address order): a strict order, so the `left` first are one set
        // however they are found. Selecting them is linear; sorting all
        // took ~20 us of a build with 1000 backends.
        let mut order: Vec<usize> = (0..weights.len()).collect();
        order.select_nth_unstable_by(left - 1, |&a, &b| {
            let lhs = (u64::from(quota[a]) + 1) * u64::from(weights[b]);
            let rhs = (u64::from(quota[b]) + 1) * u64::from(weights[a]);
            lhs.cmp(&rhs).then(a.cmp(&b))
        });
        for &i in &order[..left] {
            quota[i] += 1;
        }
    }
    quota
}

/// The free slots as a bitset (1 = free), 16 KiB for M = 65537 so probes
/// hit L1. Bit `i + M` mirrors bit `i`: a position `p + k * skip` with both
/// terms below M is looked up as is, without reducing it modulo M. The word
/// count W is a power of two fixed at compile time and indices are masked
/// with it: one `and` where a bounds check would be a compare and a branch
/// on every probe.
struct Free<const W: usize> {
    words: Box<[u64; W]>,
    m: u32,
}

/// Word counts: for 2M bits up to M = 131072 (32 KiB), and up to
/// MAX_TABLE_SIZE (256 KiB). Not one size for all: with two blocks of
/// 256 KiB (this and the slots) freed after every build, glibc can give the
/// heap top back to the kernel and the next build pays ~130 page faults
/// (seen in a loop of builds alone: 0.74 -> 0.60 ms, M = 65537, N = 100).
const SMALL_WORDS: usize = 1 << 12;
const LARGE_WORDS: usize = (2 * MAX_TABLE_SIZE as usize)
    .div_ceil(64)
    .next_power_of_two();

impl<const W: usize> Free<W> {
    fn new(m: u32) -> Self {
        let mut words: Box<[u64; W]> = vec![0u64; W]
            .into_boxed_slice()
            .try_into()
            .expect("W words");
        let bits = 2 * m as usize;
        words[..bits / 64].fill(u64::MAX);
        words[bits / 64] = (1 << (bits % 64)) - 1;
        Free { words, m }
    }

    /// Marks `slot` (< M) taken.
    #[inline(always)]
    fn take(&mut self, slot: u32) {
        let mask = W - 1;
        let hi = slot + self.m;
        self.words[(slot as usize / 64) & mask] &= !(1 << (slot % 64));
        self.words[(hi as usize / 64) & mask] &= !(1 << (hi % 64));
    }

    /// The free slots, in order.
    fn slots(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for (w, &word) in self.words.iter().enumerate() {
            let mut free = word;
            while free != 0 {
                let slot = (w * 64) as u32 + free.trailing_zeros();
                if slot >= self.m {
                    return out;
                }
                out.push(slot);
                free &= free - 1;
            }
        }
        out
    }
}

/// `a + b mod m` for `a + b < 2m <= 2^31`. With a mask, not a comparison:
/// LLVM may turn a select here into a branch, which mispredicts half the
/// time.
#[inline(always)]
fn add_mod(a: u32, b: u32, m: u32) -> u32 {
    let c = a.wrapping_add(b).wrapping_sub(m);
    c.wrapping_add(m & ((c as i32 >> 31) as u32))
}

/// Takes the first free slot along a permutation from `pos` on (`steps[k]`
/// = (k + 1) * skip mod M), marks it taken and returns it. There is one:
/// the caller only asks while slots remain, and M is prime, so the walk
/// visits every slot.
///
/// A step looks at `4 * G` positions at once: independent loads, then one
/// branch, taken on the first free one. One branch per position would
/// mispredict whenever a claim ends; looking at more positions than needed
/// costs a few instructions each. So G follows the fill (see `build`): as
/// slots fill, wider steps keep "found in the first step" likely.
#[inline(always)]
fn claim<const G: usize, const W: usize>(
    free: &mut Free<W>,
    pos: u32,
    steps: &[u32; 4],
    m: u32,
) -> u32 {
    // One bit per position in `found`.
    const { assert!(G >= 1 && G <= 8) };
    let words = &*free.words;
    let wmask = W - 1;
    let lane = [0, steps[0], steps[1], steps[2]];
    let mut p = pos;
    loop {
        // Group g looks at base[g] + lane[j], below 2M: the mirror bits.
        let mut base = [0u32; G];
        for b in base.iter_mut() {
            *b = p;
            p = add_mod(p, steps[3], m);
        }
        // Bit 4g + j of `found`: whether base[g] + lane[j] is free.
        let mut found = 0u32;
        for g in (0..G).rev() {
            for j in (0..4).rev() {
                let q = base[g] + lane[j];
                let word = words[(q as usize / 64) & wmask];
                found = found << 1 | ((word >> (q % 64)) & 1) as u32;
            }
        }
        if found != 0 {
            let k = found.trailing_zeros() as usize;
            // k < 4G; `% G` spares a bounds check.
            let q = base[(k / 4) % G] + lane[k % 4];
            let slot = add_mod(q, 0, m);
            free.take(slot);
            return slot;
        }
    }
}

/// The same claim, for the first half or so of a build, while most positions
/// are free: one probe and a branch that mispredicts now and then costs
/// less than looking at four (measured: up to ~45 % fill).
#[inline(always)]
fn claim_first<const W: usize>(free: &mut Free<W>, pos: u32, steps: &[u32; 4], m: u32) -> u32 {
    let word = free.words[(pos as usize / 64) & (W - 1)];
    if (word >> (pos % 64)) & 1 == 1 {
        free.take(pos);
        return pos;
    }
    claim::<1, W>(free, add_mod(pos, steps[0], m), steps, m)
}

/// A backend's walk along its permutation `offset + j * skip (mod M)`.
#[derive(Clone, Copy)]
struct Walk {
    /// Next position to look at.
    pos: u32,
    /// `(k + 1) * skip mod M` for k = 0..4.
    steps: [u32; 4],
}

/// A backend's standing in the rounds.
#[derive(Clone, Copy)]
struct Account {
    credit: u64,
    /// `weight / pace` and `weight % pace`.
    whole: u64,
    part: u64,
    /// Slots still to claim.
    left: u32,
}

/// Who claims, in what order. The order depends only on the weights and
/// quotas, never on the table, so each round's claimers are listed first
/// (`next_round`, branch-free) and then claim in that order: two tight
/// loops instead of one that interleaves credit bookkeeping with probing.
struct Schedule {
    pace: u64,
    accounts: Vec<Account>,
    /// Whether every backend claims at most 4 slots a round.
    narrow: bool,
    /// Backends with slots left to claim, in order: the others take no turn.
    active: Vec<u32>,
    /// The current round's claimers, in order (a backend once per claim),
    /// `len` of them, handed out up to `next`; while `in_period`, they are
    /// `period` instead. Room for every backend's most claims in a round
    /// (`whole + 1`), plus 4 for the narrow writes.
    round: Vec<u32>,
    len: usize,
    next: usize,
    in_period: bool,
    /// Credits repeat: after P rounds, P * weight / pace claims each, every
    /// credit is back to 0. While every backend has that many slots left,
    /// the next P rounds are the first P again, listed once here and
    /// replayed `periods` more times, with no bookkeeping per backend.
    /// With equal weights P is 1: all backends, once each.
    period: Vec<u32>,
    periods: u32,
    /// Per backend, claims per period.
    per_period: Vec<u32>,
    periods_total: u32,
}

/// The claims of one period in order, each backend's count of them, and how
/// many times the period runs before some backend's quota would cut it
/// short; None when a period is too long to be worth listing.
fn period(weights: &[u32], pace: u64, left: &[u32]) -> Option<(Vec<u32>, Vec<u32>, u32)> {
    let mut g = pace;
    for &w in weights {
        let (mut a, mut b) = (g, u64::from(w));
        while b != 0 {
            (a, b) = (b, a % b);
        }
        g = a;
    }
    let rounds = pace / g;
    let claims: Vec<u64> = weights
        .iter()
        .map(|&w| u64::from(w) * rounds / pace)
        .collect();
    let len: u64 = claims.iter().sum();
    if rounds > 64 || len > 4 * weights.len() as u64 + 64 {
        return None;
    }
    let periods = claims
        .iter()
        .zip(left)
        .map(|(&c, &l)| u64::from(l) / c)
        .min()
        .unwrap_or(0) as u32;
    let mut list = Vec::with_capacity(len as usize);
    let mut credit = vec![0u64; weights.len()];
    for _ in 0..rounds {
        for (i, (&w, c)) in weights.iter().zip(credit.iter_mut()).enumerate() {
            *c += u64::from(w);
            while *c >= pace {
                *c -= pace;
                list.push(i as u32);
            }
        }
    }
    Some((list, claims.iter().map(|&c| c as u32).collect(), periods))
}

impl Schedule {
    /// The next claimers in order, at most `max` (none if a round claims
    /// nothing).
    fn claimers(&mut self, max: usize) -> &[u32] {
        if self.next == self.len {
            self.next_round();
        }
        let start = self.next;
        self.next = self.len.min(start + max);
        if self.in_period {
            &self.period[start..self.next]
        } else {
            &self.round[start..self.next]
        }
    }

    /// Lists the next round's claims: each backend in order earns its
    /// weight in credit and claims while it has `pace` of credit and slots
    /// left to claim. Or the next period, while periods repeat.
    fn next_round(&mut self) {
        self.next = 0;
        self.in_period = self.periods > 0;
        if self.in_period {
            self.periods -= 1;
            if self.periods == 0 {
                // The last replay: settle what all of them claimed.
                let reps = self.periods_total;
                for (a, &c) in self.accounts.iter_mut().zip(&self.per_period) {
                    a.left -= c * reps;
                }
                self.active.retain(|&i| self.accounts[i as usize].left > 0);
            }
            self.len = self.period.len();
            return;
        }
        let pace = self.pace;
        let accounts = &mut self.accounts[..];
        let round = &mut self.round[..];
        let mut n = 0;
        let mut kept = 0;
        for a in 0..self.active.len() {
            let i = self.active[a];
            let acc = &mut accounts[i as usize];
            // credit < pace before and part < pace: at most one extra claim.
            let credit = acc.credit + acc.part;
            let extra = u64::from(credit >= pace);
            acc.credit = credit - extra * pace;
            let claims = (acc.whole + extra).min(u64::from(acc.left)) as usize;
            acc.left -= claims as u32;
            if self.narrow {
                // Write 4, keep `claims`: no branch on the count.
                round[n..n + 4].copy_from_slice(&[i; 4]);
            } else {
                round[n..n + claims].fill(i);
            }
            n += claims;
            self.active[kept] = i;
            kept += usize::from(acc.left > 0);
        }
        self.active.truncate(kept);
        self.len = n;
    }
}

/// The table being built.
struct Table<const W: usize> {
    m: u32,
    walks: Vec<Walk>,
    free: Free<W>,
    slots: Vec<u32>,
    remaining: u32,
}

impl<const W: usize> Table<W> {
    /// Claims in schedule order until `stop` slots remain. How a claim is
    /// made does not change what it takes, so the phases (`claim` width,
    /// then `tail_rounds`) may switch anywhere, even within a round.
    fn walk_rounds(
        &mut self,
        schedule: &mut Schedule,
        stop: u32,
        mut claim: impl FnMut(&mut Free<W>, u32, &[u32; 4], u32) -> u32,
    ) {
        let m = self.m;
        let walks = &mut self.walks[..];
        let slots = &mut self.slots[..];
        while self.remaining > stop {
            let batch = schedule.claimers((self.remaining - stop) as usize);
            self.remaining -= batch.len() as u32;
            for &i in batch {
                let walk = &mut walks[i as usize];
                let slot = claim(&mut self.free, walk.pos, &walk.steps, m);
                walk.pos = add_mod(slot, walk.steps[0], m);
                slots[slot as usize] = i;
            }
        }
    }

    /// The last rounds, when only the few slots in `free` are left: the
    /// first of them along a walk is the one at the fewest steps from the
    /// current position, `(slot - pos) * skip^-1 mod M`, computed directly
    /// instead of walking past ~M / free.len() taken slots.
    fn tail_rounds(&mut self, schedule: &mut Schedule) {
        let m = self.m;
        let mut free = self.free.slots();
        // Per backend: skip^-1 mod M and floor(2^32 * skip^-1 / M), for
        // Shoup's multiplication modulo M: no division, no 128-bit product.
        // Computed on a backend's first claim here (0: not yet).
        let mut inverse = vec![(0u32, 0u32); self.walks.len()];
        let walks = &mut self.walks[..];
        let slots = &mut self.slots[..];
        while self.remaining > 0 {
            let batch = schedule.claimers(self.remaining as usize);
            self.remaining -= batch.len() as u32;
            for &i in batch {
                let walk = &mut walks[i as usize];
                if inverse[i as usize].0 == 0 {
                    let inv = inverse_mod(walk.steps[0], m);
                    inverse[i as usize] = (inv as u32, ((inv << 32) / u64::from(m)) as u32);
                }
                let (inv, inv_shoup) = inverse[i as usize];
                let back = m - walk.pos;
                // Steps (< M < 2^20) above, index in `free` (< 2^12) below:
                // the smallest key is the first free slot along the walk.
                // All in u32, so the loop vectorises.
                let mut best = u32::MAX;
                for (k, &f) in (0u32..).zip(&free) {
                    let d = add_mod(f, back, m);
                    // d * inv mod M: q is the quotient or one less, and
                    // the remainder fits in 32 bits, so it is exact in
                    // wrapping arithmetic.
                    let q = ((u64::from(d) * u64::from(inv_shoup)) >> 32) as u32;
                    let r = d.wrapping_mul(inv).wrapping_sub(q.wrapping_mul(m));
                    let r = add_mod(r, 0, m);
                    best = best.min(r << TAIL_INDEX_BITS | k);
                }
                let slot = free.swap_remove((best & ((1 << TAIL_INDEX_BITS) - 1)) as usize);
                walk.pos = add_mod(slot, walk.steps[0], m);
                slots[slot as usize] = i;
            }
        }
    }
}

/// `a^-1 mod m` for prime `m` and `0 < a < m` (extended Euclid). In 32
/// bits: m < 2^20, and 32-bit divisions are several times quicker than
/// 64-bit ones (a tail inverts up to a few hundred skips).
fn inverse_mod(a: u32, m: u32) -> u64 {
    let (mut t, mut new_t) = (0i32, 1i32);
    let (mut r, mut new_r) = (m, a);
    while new_r != 0 {
        let q = r / new_r;
        (t, new_t) = (new_t, t - q as i32 * new_t);
        (r, new_r) = (new_r, r - q * new_r);
    }
    debug_assert_eq!(r, 1, "{a} has no inverse mod {m}");
    t.rem_euclid(m as i32) as u64
}

/// Below this many free slots, claims pick among the free slots directly
/// (`Table::tail_rounds`) instead of walking: about where walking past
/// M / free taken slots costs more than looking at every free one
/// (measured: 1.5 sqrt(M) no better, 2-3 sqrt(M) slower).
fn tail_len(m: u32) -> u32 {
    (f64::from(m).sqrt() as u32).max(16)
}

/// Bits for an index into the tail's free list, next to a step count below
/// M in one u32 key.
const TAIL_INDEX_BITS: u32 = 12;
const _: () = assert!(MAX_TABLE_SIZE < 1 << (32 - TAIL_INDEX_BITS));
// tail_len(MAX_TABLE_SIZE) = sqrt(MAX_TABLE_SIZE) = 1023.
const _: () = assert!(1024 * 1024 > MAX_TABLE_SIZE && 1024 < 1 << TAIL_INDEX_BITS);

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
    let left = quotas(&weights, size);
    // Each round a backend earns its weight in credit and spends `pace` per
    // claim: the average weight, so a round fills about N slots whatever
    // the weights' magnitude, and equal weights give plain Maglev.
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let pace = (total / weights.len() as u64).max(1);
    let m = u64::from(size);
    // Permutation of backend i: offset_i + j * skip_i (mod M), walked by
    // keeping the current position.
    let walks: Vec<Walk> = addresses
        .iter()
        .map(|a| {
            let h = identity_hash(a);
            let offset = ((h >> 32) % m) as u32;
            let skip = ((h & 0xffff_ffff) % (m - 1) + 1) as u32;
            let mut steps = [skip; 4];
            for k in 1..4 {
                steps[k] = add_mod(steps[k - 1], skip, size);
            }
            Walk { pos: offset, steps }
        })
        .collect();
    let accounts: Vec<Account> = weights
        .iter()
        .zip(&left)
        .map(|(&w, &left)| Account {
            credit: 0,
            whole: u64::from(w) / pace,
            part: u64::from(w) % pace,
            left,
        })
        .collect();
    let (period, per_period, periods) = period(&weights, pace, &left).unwrap_or_default();
    let mut schedule = Schedule {
        pace,
        narrow: accounts.iter().all(|a| a.whole < 4),
        active: (0..accounts.len() as u32).collect(),
        round: vec![0; accounts.iter().map(|a| a.whole as usize + 1).sum::<usize>() + 4],
        len: 0,
        next: 0,
        in_period: false,
        period,
        periods,
        periods_total: periods,
        per_period,
        accounts,
    };
    let slots = if 2 * size as usize <= 64 * SMALL_WORDS {
        fill::<SMALL_WORDS>(walks, &mut schedule, size)
    } else {
        fill::<LARGE_WORDS>(walks, &mut schedule, size)
    };
    Ok(MaglevTable {
        backends: addresses,
        slots,
    })
}

/// Claims every slot in schedule order: wider claims as the table fills
/// (see `claim`), then the free list.
fn fill<const W: usize>(walks: Vec<Walk>, schedule: &mut Schedule, size: u32) -> Vec<u32> {
    let mut b = Table::<W> {
        m: size,
        walks,
        free: Free::new(size),
        slots: vec![EMPTY; size as usize],
        remaining: size,
    };
    let tail = tail_len(size);
    let stop = |fill: f64| ((f64::from(size) * (1.0 - fill)) as u32).max(tail);
    b.walk_rounds(schedule, stop(0.45), claim_first);
    b.walk_rounds(schedule, stop(0.7), claim::<1, W>);
    b.walk_rounds(schedule, stop(0.85), claim::<2, W>);
    b.walk_rounds(schedule, stop(0.92), claim::<3, W>);
    b.walk_rounds(schedule, stop(0.96), claim::<4, W>);
    b.walk_rounds(schedule, stop(0.98), claim::<6, W>);
    b.walk_rounds(schedule, tail, claim::<8, W>);
    b.tail_rounds(schedule);
    b.slots
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
        let mut left = reference_quotas(&weights, size);
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

    /// Quotas as first written: 128-bit shares, the remainder by a full
    /// sort.
    fn reference_quotas(weights: &[u32], size: u32) -> Vec<u32> {
        let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
        let mut quota: Vec<u32> = weights
            .iter()
            .map(|&w| (u128::from(size) * u128::from(w) / total) as u32)
            .collect();
        let assigned: u64 = quota.iter().map(|&q| u64::from(q)).sum();
        let left = (u64::from(size) - assigned) as usize;
        let mut order: Vec<usize> = (0..weights.len()).collect();
        order.sort_by(|&a, &b| {
            let lhs = (u64::from(quota[a]) + 1) * u64::from(weights[b]);
            let rhs = (u64::from(quota[b]) + 1) * u64::from(weights[a]);
            lhs.cmp(&rhs).then(a.cmp(&b))
        });
        for &i in order.iter().take(left) {
            quota[i] += 1;
        }
        quota
    }

    #[test]
    fn quotas_are_the_reference_quotas() {
        let cases: Vec<(Vec<u32>, u32)> = vec![
            (vec![1; 100], 65_537),
            ((0..1000).map(weight_of).collect(), 65_537),
            ((0..3).map(|i| u32::MAX - i).collect(), MAX_TABLE_SIZE),
            ((0..997).map(|i| (i * 7919) % 65_535 + 1).collect(), 7_919),
            ((0..5000).map(|i| 1 + i % 3).collect(), 655_373),
            (vec![7; 13], 13),
            (vec![1, 4, 4, 4], 13),
        ];
        for (weights, size) in cases {
            assert_eq!(
                quotas(&weights, size),
                reference_quotas(&weights, size),
                "n={} size={size}",
                weights.len()
            );
        }
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

    /// Weights that take the other paths of the schedule: a backend with
    /// many claims a round (not narrow), credits that repeat only after
    /// many rounds (no period), quotas that end a period early, zeros.
    #[test]
    fn the_fast_build_is_the_reference_build_for_uneven_weights() {
        let with = |n: u32, weight: &dyn Fn(u32) -> u32| -> Vec<WeightedBackend> {
            (0..n)
                .map(|i| WeightedBackend {
                    address: v4(i),
                    weight: weight(i),
                })
                .collect()
        };
        let cases: Vec<(Vec<WeightedBackend>, u32)> = vec![
            (with(1000, &|i| if i == 0 { 65_535 } else { 1 }), 65_537),
            (with(4, &|i| [65_535, 1, 1, 30_000][i as usize]), 251),
            (with(200, &|i| i % 7 + 1), 65_537),
            (with(50, &|i| (i * 37) % 1000 + 1), 7_919),
            (with(3000, &|i| (i * 7919) % 13), 65_537),
            (with(64, &|i| 1 << (i % 9)), 65_537),
            (with(500, &|i| weight_of(i) * 1000), 655_373),
        ];
        for (weights, size) in cases {
            assert_eq!(
                build(&weights, size).unwrap().slots,
                reference_build(&weights, size),
                "n={} size={size}",
                weights.len()
            );
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
