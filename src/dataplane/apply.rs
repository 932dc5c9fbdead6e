//! Making the maps hold a plan, in an order that never shows a packet a
//! half-made state:
//!
//! 1. backend records are written under fresh ids before any table names
//!    them, and never rewritten while a published table may name them;
//! 2. a table is filled unpublished and swapped in with one map update;
//!    the kernel waits for running programs before that update returns.
//!    The new tables of a change go live together, one batched update per
//!    outer map, so a change of many VIPs waits once, not once per table;
//! 3. VIP records are published after their tables, so a new VIP never
//!    matches without a table: all of them at once, by writing vip_index's
//!    spare half and flipping it live (`vip_index`); the `vips` map, which
//!    holds every record too, is updated record by record. A table of a new
//!    size goes into the VIP's spare table slot and the record flips to it;
//! 4. ids (VIP, backend) and table slots are released only once no packet
//!    can reach them: after the update that stopped referencing them, or,
//!    for what the previous index still names, after the next flip and a
//!    wait (`Retiring`); counters are zeroed when an id is reused. VIPs a
//!    change removes leave with the flip that publishes the rest of it, so
//!    a change that fails has not removed them.
//!
//! The maps also say whose each id is (backend records carry their VIP id),
//! so a restarted control plane adopts them as they are (`Installed::adopt`)
//! and its first apply of an unchanged configuration writes nothing.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::records::{
    self, lethe_backend, lethe_config, lethe_nat_return, lethe_vip, lethe_vip_key, Pod,
};
use super::vip_index::{self, VipIndex};
use super::{table, DataplaneError};
use crate::abi::{self, MAX_BACKENDS, MAX_TABLES, MAX_VIPS};
use crate::fast_hash::FastMap;
use crate::plan::{Plan, PlannedVip, VipKey};
use crate::quick_filter::QuickFilter;

pub struct Maps<'a> {
    /// lb_config, the pinned record, and live_config, the program's copy
    /// (global data: see bpf/maps.h).
    pub config: &'a dyn MapCore,
    pub live_config: &'a dyn MapCore,
    pub addr_filter: &'a dyn MapCore,
    /// The program's quick_filter (global data: one entry, its three bitmaps).
    pub quick_filter: &'a dyn MapCore,
    pub vip_index: &'a VipIndex,
    /// An array-of-maps and a table to put in it: see `wait_for_programs`.
    pub rcu_sync: &'a dyn MapCore,
    pub sync_table: &'a MapHandle,
    pub backend_srcs: &'a dyn MapCore,
    pub nat_returns: &'a dyn MapCore,
    pub return_stats: &'a dyn MapCore,
    pub vips: &'a dyn MapCore,
    pub tables: table::Tables<'a>,
    pub backends: &'a dyn MapCore,
    pub vip_stats: &'a dyn MapCore,
    pub backend_stats: &'a dyn MapCore,
}

/// Ids handed out lowest first.
#[derive(Debug)]
struct IdPool {
    what: &'static str,
    free: BTreeSet<u32>,
    max: u32,
}

impl IdPool {
    fn new(what: &'static str, max: u32) -> Self {
        IdPool {
            what,
            free: (0..max).collect(),
            max,
        }
    }

    fn take(&mut self) -> Result<u32, DataplaneError> {
        self.free.pop_first().ok_or(DataplaneError::Exhausted {
            what: self.what,
            max: self.max,
        })
    }

    fn give_back(&mut self, id: u32) {
        self.free.insert(id);
    }

    fn claim(&mut self, id: u32) -> bool {
        self.free.remove(&id)
    }

    fn available(&self) -> usize {
        self.free.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InstalledBackend {
    id: u32,
    port: u16,
    /// The outer source address in backend_srcs (encapsulating VIPs).
    src: Option<IpAddr>,
}

/// The source address the kernel picks towards `backend` (as `ip route
/// get` shows it): a UDP socket connected there, which sends nothing.
fn resolve_source(backend: IpAddr) -> Option<IpAddr> {
    let any: std::net::SocketAddr = if backend.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect((backend, 9)).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

#[derive(Debug)]
struct InstalledVip {
    vip_id: u32,
    record: lethe_vip,
    /// Whether `vips` holds `record`: a write that failed is done again by
    /// the next apply, whatever it changes.
    written: bool,
    /// The table at the record's table id, in backend ids slot by slot;
    /// empty = no table. None = unknown (a change failed part way): the
    /// next apply publishes the table or removes it, whatever the plan.
    slots: Option<Vec<u32>>,
    backends: FastMap<IpAddr, InstalledBackend>,
    /// Ids a table of this VIP may still name besides its backends', with
    /// valid records: released once its table is settled (`finish`).
    stale: Vec<Stale>,
}

/// A backend id waiting for release; `carry`: the backend, still the
/// VIP's under another id, whose base gets its final counts.
#[derive(Debug, Clone, Copy)]
struct Stale {
    id: u32,
    carry: Option<IpAddr>,
}

/// What waits for the next vip_index flip before it is released: table
/// slots, backend ids and VIP ids the live index may still lead a packet
/// to.
#[derive(Debug, Default)]
struct Retiring {
    tables: Vec<u32>,
    backend_ids: Vec<u32>,
    vip_ids: Vec<u32>,
    /// Retiring ids of backends that stay, under a new id: their final
    /// counts go into `Installed::backend_base` when they are released.
    renumbered: Vec<(u32, VipKey, IpAddr)>,
}

/// Whether the record's table is in `tables_fixed`.
fn fixed_table(record: &lethe_vip) -> bool {
    record.flags & abi::VIP_F_FIXED_TABLE != 0
}

/// Returns once every program that was running has finished: the kernel
/// waits for them (synchronize_rcu) on every update of a map-in-map from
/// user space.
fn wait_for_programs(maps: &Maps<'_>) -> Result<(), DataplaneError> {
    table::publish(maps.rcu_sync, 0, maps.sync_table)
}

/// What the maps hold, as this process wrote it.
#[derive(Debug)]
pub struct Installed {
    config: Option<lethe_config>,
    /// addr_filter as written, word by word (its two bitmaps).
    filter: Vec<u64>,
    /// quick_filter as written.
    quick: QuickFilter,
    /// nat_returns entries, by (backend, port, protocol).
    nat: HashMap<VipKey, lethe_nat_return>,
    vips: FastMap<VipKey, InstalledVip>,
    vip_ids: IdPool,
    backend_ids: IdPool,
    retiring: Retiring,
    /// A table map of the fixed size, made after a change for the next
    /// one to fill (see `table::Blank`).
    spare: Option<table::Blank>,
    /// Per (VIP, backend): the counts of the ids it had before its
    /// current one. A backend gets a new id (its counters start at zero)
    /// when its port or outer source changes; its counters as read
    /// (`Dataplane::backend_counter`) carry on from these. Kept for this
    /// daemon's life.
    backend_base: HashMap<(VipKey, IpAddr), super::Counter>,
}

impl Default for Installed {
    fn default() -> Self {
        Installed {
            config: None,
            filter: vec![0; FILTER_WORDS_ALL],
            // What a loaded program's global data starts as.
            quick: QuickFilter::default(),
            nat: HashMap::new(),
            vips: FastMap::default(),
            vip_ids: IdPool::new("VIP", MAX_VIPS),
            backend_ids: IdPool::new("backend", MAX_BACKENDS),
            retiring: Retiring::default(),
            spare: None,
            backend_base: HashMap::new(),
        }
    }
}

/// Words of addr_filter: its two bitmaps.
const FILTER_WORDS_ALL: usize = 2 * abi::FILTER_WORDS as usize;

/// Writes the settings: the pinned record, then the program's copy.
fn write_config(maps: &Maps<'_>, cfg: &lethe_config) -> Result<(), DataplaneError> {
    super::write_record_and_copy(
        (maps.config, "lb_config"),
        (maps.live_config, "live_config"),
        cfg.as_bytes(),
    )
}

fn zero_counters(map: &dyn MapCore, name: &'static str, id: u32) -> Result<(), DataplaneError> {
    let cpus =
        libbpf_rs::num_possible_cpus().map_err(|e| DataplaneError::map(name, "count cpus", e))?;
    let zero = vec![vec![0u8; size_of::<records::lethe_counter>()]; cpus];
    map.update_percpu(&id.to_ne_bytes(), &zero, MapFlags::ANY)
        .map_err(|e| DataplaneError::map(name, "reset", e))
}

fn lookup<T: Pod + Default>(
    map: &dyn MapCore,
    name: &'static str,
    key: &[u8],
) -> Result<Option<T>, DataplaneError> {
    Ok(map
        .lookup(key, MapFlags::ANY)
        .map_err(|e| DataplaneError::map(name, "lookup", e))?
        .and_then(|v| T::from_bytes(&v)))
}

/// Marks backend records free (family 0) and returns their ids to the pool.
/// Only after no published table can name them.
fn release_backends(
    maps: &Maps<'_>,
    pool: &mut IdPool,
    ids: impl IntoIterator<Item = u32>,
) -> Result<(), DataplaneError> {
    let free = lethe_backend::default();
    for id in ids {
        maps.backends
            .update(&id.to_ne_bytes(), free.as_bytes(), MapFlags::ANY)
            .map_err(|e| DataplaneError::map("backends", "release", e))?;
        pool.give_back(id);
    }
    Ok(())
}

/// Writes a backend's record under a new id `id` (no table names it yet):
/// its outer source first, then the record, then zeroed counters.
fn write_backend(
    maps: &Maps<'_>,
    id: u32,
    vip_id: u32,
    (address, port, src): (IpAddr, u16, Option<IpAddr>),
) -> Result<(), DataplaneError> {
    if let Some(src) = src {
        maps.backend_srcs
            .update(
                &id.to_ne_bytes(),
                records::backend_src(&src).as_bytes(),
                MapFlags::ANY,
            )
            .map_err(|e| DataplaneError::map("backend_srcs", "update", e))?;
    }
    let rec = records::backend(&address, port, vip_id, src.is_some());
    maps.backends
        .update(&id.to_ne_bytes(), rec.as_bytes(), MapFlags::ANY)
        .map_err(|e| DataplaneError::map("backends", "update", e))?;
    zero_counters(maps.backend_stats, "backend_stats", id)
}

/// Unpublishes the table `record` leads to, from the outer map its flag
/// names: that map's entry is the one packets can reach (an entry in the
/// other one at that id is no record's: see `Installed::adopt`), and the
/// other map is left alone should it refuse writes.
fn remove_table(maps: &Maps<'_>, record: &lethe_vip) -> Result<(), DataplaneError> {
    let outer = if fixed_table(record) {
        maps.tables.fixed
    } else {
        maps.tables.sized
    };
    table::remove(outer, record.table_id)
}

impl Installed {
    /// Reads what the (pinned) maps hold, as an earlier control plane left
    /// them, and repairs what a crash could have left half-done: records of
    /// VIPs that no longer exist, tables no VIP points to, tables naming
    /// backends that are not the VIP's (republished by the next apply).
    pub fn adopt(maps: &Maps<'_>) -> Result<Installed, DataplaneError> {
        let mut inst = Installed {
            config: lookup::<lethe_config>(maps.config, "lb_config", &0u32.to_ne_bytes())?,
            ..Default::default()
        };
        for (i, word) in inst.filter.iter_mut().enumerate() {
            *word = maps
                .addr_filter
                .lookup(&(i as u32).to_ne_bytes(), MapFlags::ANY)
                .map_err(|e| DataplaneError::map("addr_filter", "lookup", e))?
                .and_then(|v| v.try_into().ok().map(u64::from_ne_bytes))
                .unwrap_or(0);
        }
        let keys: Vec<Vec<u8>> = maps.nat_returns.keys().collect();
        for raw in keys {
            let key = lethe_vip_key::from_bytes(&raw).and_then(|k| records::vip_key_from(&k));
            match (
                key,
                lookup::<lethe_nat_return>(maps.nat_returns, "nat_returns", &raw)?,
            ) {
                (Some(k), Some(v)) => {
                    inst.nat.insert(k, v);
                }
                _ => maps
                    .nat_returns
                    .delete(&raw)
                    .map_err(|e| DataplaneError::map("nat_returns", "delete", e))?,
            }
        }

        let mut by_vip_id: HashMap<u32, VipKey> = HashMap::new();
        let keys: Vec<Vec<u8>> = maps.vips.keys().collect();
        for raw in keys {
            let record = lookup::<lethe_vip>(maps.vips, "vips", &raw)?;
            let key = lethe_vip_key::from_bytes(&raw).and_then(|k| records::vip_key_from(&k));
            let usable = match (&key, &record) {
                (Some(_), Some(r)) => {
                    r.vip_id < MAX_VIPS
                        && r.table_id / 2 == r.vip_id
                        && inst.vip_ids.claim(r.vip_id)
                }
                _ => false,
            };
            let (Some(key), Some(record), true) = (key, record, usable) else {
                maps.vips
                    .delete(&raw)
                    .map_err(|e| DataplaneError::map("vips", "delete", e))?;
                continue;
            };
            let slots = maps
                .tables
                .read(record.table_id, fixed_table(&record))?
                .unwrap_or_default();
            by_vip_id.insert(record.vip_id, key);
            inst.vips.insert(
                key,
                InstalledVip {
                    vip_id: record.vip_id,
                    record,
                    written: true,
                    slots: Some(slots),
                    backends: FastMap::default(),
                    stale: Vec::new(),
                },
            );
        }

        // What packets reach now: the live index's records, their tables
        // and the backend ids those name. A crash between a record's write
        // and the index flip leaves them apart from `vips`; nothing they
        // reach is removed or freed before the first flip (`retiring`).
        let live = maps.vip_index.live_entries();
        let mut live_tables: std::collections::HashSet<(u32, bool)> =
            std::collections::HashSet::new();
        let mut live_ids: std::collections::HashSet<u32> = std::collections::HashSet::new();
        for r in live.iter().map(|e| &e.vip) {
            if r.vip_id >= MAX_VIPS || r.table_id / 2 != r.vip_id {
                continue;
            }
            if !by_vip_id.contains_key(&r.vip_id) && inst.vip_ids.claim(r.vip_id) {
                inst.retiring.vip_ids.push(r.vip_id);
            }
            live_tables.insert((r.table_id, fixed_table(r)));
            if let Some(slots) = maps.tables.read(r.table_id, fixed_table(r))? {
                live_ids.extend(slots);
            }
        }

        // Backend records by owner: a VIP's address may have two (a crash
        // before the old one was freed); the one its table names is kept.
        let mut orphans = Vec::new();
        let named: std::collections::HashSet<u32> = inst
            .vips
            .values()
            .flat_map(|v| v.slots.iter().flatten().copied())
            .collect();
        let mut found: Vec<(u32, lethe_backend)> = maps
            .backends
            .lookup_batch(4096, MapFlags::ANY, MapFlags::ANY)
            .map_err(|e| DataplaneError::map("backends", "lookup batch", e))?
            .filter_map(|(k, v)| {
                let id = u32::from_ne_bytes(k[..4].try_into().expect("4-byte key"));
                lethe_backend::from_bytes(&v).map(|rec| (id, rec))
            })
            .filter(|(_, rec)| rec.family != 0)
            .collect();
        found.sort_by_key(|&(id, _)| (!named.contains(&id), id));
        for (id, rec) in found {
            let owner = by_vip_id
                .get(&rec.vip_id)
                .and_then(|key| inst.vips.get_mut(key));
            match (owner, records::addr_from(&rec.addr, rec.family)) {
                (Some(v), Some(addr)) if !v.backends.contains_key(&addr) => {
                    inst.backend_ids.claim(id);
                    let src = if rec.flags & abi::BACKEND_F_SRC != 0 {
                        lookup::<records::lethe_backend_src>(
                            maps.backend_srcs,
                            "backend_srcs",
                            &id.to_ne_bytes(),
                        )?
                        .and_then(|s| records::addr_from(&s.addr, rec.family))
                    } else {
                        None
                    };
                    v.backends.insert(
                        addr,
                        InstalledBackend {
                            id,
                            port: records::port_from(rec.port),
                            src,
                        },
                    );
                }
                _ => orphans.push(id),
            }
        }
        for id in orphans {
            inst.backend_ids.claim(id);
            if live_ids.contains(&id) {
                inst.retiring.backend_ids.push(id);
            } else {
                release_backends(maps, &mut inst.backend_ids, [id])?;
            }
        }

        // A table naming an id that is not this VIP's backend cannot be
        // trusted: unknown, so the next apply publishes a fresh one (or
        // removes it).
        for v in inst.vips.values_mut() {
            let own: std::collections::HashSet<u32> = v.backends.values().map(|b| b.id).collect();
            if v.slots.iter().flatten().any(|id| !own.contains(id)) {
                v.slots = None;
            }
        }
        let current: HashMap<u32, bool> = inst
            .vips
            .values()
            .map(|v| (v.record.table_id, fixed_table(&v.record)))
            .collect();
        for table_id in 0..MAX_TABLES {
            match current.get(&table_id) {
                Some(&fixed) if !live_tables.contains(&(table_id, !fixed)) => {
                    maps.tables.remove_other(table_id, fixed)?
                }
                Some(_) => {}
                None if live_tables.contains(&(table_id, true))
                    || live_tables.contains(&(table_id, false)) =>
                {
                    inst.retiring.tables.push(table_id)
                }
                None => maps.tables.remove(table_id)?,
            }
        }
        // The program just loaded has a copy of the settings of its own,
        // zeroed: it must hash as the pinned record says before it is
        // attached, whatever is applied next.
        if let Some(cfg) = &inst.config {
            write_config(maps, cfg)?;
        }
        // And a quick_filter of its own, empty: it must stop the traffic
        // of what the pinned maps hold, likewise: the VIPs of `vips` and
        // those only the live index still holds (a crash before the flip
        // that removes them), which packets reach until then.
        let live_keys: Vec<VipKey> = live
            .iter()
            .filter_map(|e| records::vip_key_from(&e.key))
            .collect();
        let quick = QuickFilter::new(
            inst.vips
                .keys()
                .chain(&live_keys)
                .map(|k| (k.address, k.port, k.protocol.number())),
            inst.nat.keys().map(|k| k.address),
        );
        inst.write_quick_all(maps, quick)?;
        Ok(inst)
    }

    pub fn vip_id(&self, key: &VipKey) -> Option<u32> {
        self.vips.get(key).map(|v| v.vip_id)
    }

    pub fn vip_by_id(&self, vip_id: u32) -> Option<VipKey> {
        self.vips
            .iter()
            .find(|(_, v)| v.vip_id == vip_id)
            .map(|(k, _)| *k)
    }

    pub fn backend_by_id(&self, key: &VipKey, id: u32) -> Option<IpAddr> {
        let v = self.vips.get(key)?;
        v.backends.iter().find(|(_, b)| b.id == id).map(|(a, _)| *a)
    }

    pub fn backend_id(&self, key: &VipKey, backend: IpAddr) -> Option<u32> {
        self.vips.get(key)?.backends.get(&backend).map(|b| b.id)
    }

    /// The VIP's current table id, whether it is in `tables_fixed`, and
    /// its backend ids by address.
    pub fn table_view(&self, key: &VipKey) -> Option<(u32, bool, HashMap<u32, IpAddr>)> {
        let v = self.vips.get(key)?;
        let by_id = v.backends.iter().map(|(a, b)| (b.id, *a)).collect();
        Some((v.record.table_id, fixed_table(&v.record), by_id))
    }

    pub fn apply(&mut self, maps: &Maps<'_>, plan: &Plan) -> Result<(), DataplaneError> {
        self.apply_with(maps, plan, false).map(|_| ())
    }

    /// `apply`; with `resolve_sources`, every encapsulating backend's outer
    /// source is resolved again, and a backend whose source changed gets a
    /// new record (a new id, its table republished: a record in use is
    /// never rewritten). Returns how many backends got a new source.
    pub fn apply_with(
        &mut self,
        maps: &Maps<'_>,
        plan: &Plan,
        resolve_sources: bool,
    ) -> Result<usize, DataplaneError> {
        let mut resourced = 0;
        // The address filter first lets through what the old and the new
        // plan need, and the settings turn return-path matching on if
        // either has nat VIPs. Then VIPs added or changed, under new ids
        // while the removed VIPs keep theirs: each batch's return-path
        // entries are written before its tables or records go live, so a
        // backend's first reply already finds its VIP. Then one index flip
        // publishes them and takes the removed VIPs out, which retire after
        // it: a change that fails before has removed nothing, and a key
        // replaced by another (X:80 by X:0) is never missing from both.
        // Last, what only the old plan needed: return entries of nat
        // backends that go, the settings, the filter's extra bits.
        let filter = Self::filter_for(plan);
        let union: Vec<u64> = self
            .filter
            .iter()
            .zip(&filter)
            .map(|(a, b)| a | b)
            .collect();
        self.write_filter(maps, &union)?;
        self.write_quick(maps, self.quick.union(&plan.quick))?;
        let cfg = lethe_config {
            hash_seed: plan.hash_seed,
            flags: if plan.nat_returns.is_empty() {
                0
            } else {
                abi::CFG_F_NAT
            },
            gue_port: u16::from_ne_bytes(plan.gue_port.to_be_bytes()),
            ..Default::default()
        };
        let during = match self.config {
            None => Some(cfg),
            Some(before) if cfg.flags & !before.flags != 0 => Some(lethe_config {
                flags: before.flags | cfg.flags,
                ..before
            }),
            Some(_) => None,
        };
        if let Some(during) = during {
            write_config(maps, &during)?;
            self.config = Some(during);
        }
        let wanted: std::collections::HashSet<VipKey> = plan.vips.iter().map(|v| v.key()).collect();
        let gone: Vec<VipKey> = self
            .vips
            .keys()
            .filter(|k| !wanted.contains(k))
            .copied()
            .collect();
        let r = &self.retiring;
        let pending = !(r.vip_ids.is_empty() && r.backend_ids.is_empty());
        if (!gone.is_empty() || pending) && !self.has_room(plan, resolve_sources) {
            // What is added needs the ids the removed VIPs hold (the VIP
            // ids, when the two together pass MAX_VIPS), or ids still
            // retiring (adopted from a crash before a flip: what only the
            // live index holds): they go first, with a flip of their own.
            self.publish_index(maps, &gone)?;
        }
        resourced += self.upsert_vips(maps, plan, resolve_sources)?;
        self.publish_index(maps, &gone)?;
        let nat_wanted = self.nat_wanted(plan);
        let stale: Vec<VipKey> = self
            .nat
            .keys()
            .filter(|k| !nat_wanted.contains_key(k))
            .copied()
            .collect();
        for k in stale {
            match maps.nat_returns.delete(records::vip_key(&k).as_bytes()) {
                Ok(()) => {}
                Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
                Err(e) => return Err(DataplaneError::map("nat_returns", "delete", e)),
            }
            self.nat.remove(&k);
        }
        if self.config.map(|c| c.as_bytes().to_vec()) != Some(cfg.as_bytes().to_vec()) {
            write_config(maps, &cfg)?;
            self.config = Some(cfg);
        }
        self.write_filter(maps, &filter)?;
        self.write_quick(maps, plan.quick.clone())?;
        // Bases of backends that left go with them.
        let vips = &self.vips;
        self.backend_base
            .retain(|(k, a), _| vips.get(k).is_some_and(|v| v.backends.contains_key(a)));
        // This change is in the maps: ready the next one's table now. On
        // failure the next change makes its own, and reports the error.
        if self.spare.is_none() {
            self.spare = table::Blank::new(abi::FIXED_TABLE_SIZE as usize).ok();
        }
        Ok(resourced)
    }

    /// Whether the free ids cover what `plan` adds while the VIPs it
    /// removes hold theirs: VIP ids (MAX_VIPS of them, as many as a plan
    /// may have, which `vips` holds at most) for the VIPs added, backend
    /// ids (twice as many as a plan may have) for every backend that may
    /// get a new record, counted high.
    fn has_room(&self, plan: &Plan, resolve_sources: bool) -> bool {
        let added = plan
            .vips
            .iter()
            .filter(|v| !self.vips.contains_key(&v.key()))
            .count();
        let fresh: usize = plan
            .vips
            .iter()
            .map(|v| self.new_records_at_most(v, resolve_sources))
            .sum();
        added <= self.vip_ids.available() && fresh <= self.backend_ids.available()
    }

    /// How many of a planned VIP's backends may get a new record (a new
    /// id) in `stage_vip`: all but those it surely keeps.
    fn new_records_at_most(&self, planned: &PlannedVip, resolve_sources: bool) -> usize {
        let encap = matches!(planned.mode(), abi::Mode::Ipip | abi::Mode::Gue);
        let installed = self.vips.get(&planned.key());
        let kept = |b: &crate::config::Backend| {
            installed
                .and_then(|v| v.backends.get(&b.address))
                .is_some_and(|cur| {
                    cur.port == planned.vip.backend_port(b)
                        && if encap {
                            cur.src.is_some() && !resolve_sources
                        } else {
                            cur.src.is_none()
                        }
                })
        };
        planned.vip.backends.iter().filter(|b| !kept(b)).count()
    }

    /// addr_filter for `plan`: a bit per VIP address and, in the same
    /// word, a bit per VIP key (see LETHE_FILTER_BITS in bpf/abi.h); a bit
    /// per nat backend address.
    fn filter_for(plan: &Plan) -> Vec<u64> {
        use crate::flow_hash::{addr_bit, key_bit};
        let mut words = vec![0u64; FILTER_WORDS_ALL];
        let mut set = |base: u32, bit: u32| {
            words[(base + bit / 64) as usize] |= 1 << (bit % 64);
        };
        for v in &plan.vips {
            let a = addr_bit(&v.vip.address);
            set(abi::FILTER_VIP, a);
            let proto = v.vip.protocol.number();
            set(
                abi::FILTER_VIP,
                a / 64 * 64 + key_bit(&v.vip.address, v.vip.port, proto),
            );
        }
        for k in plan.nat_returns.keys() {
            set(abi::FILTER_NAT, addr_bit(&k.0));
        }
        words
    }

    /// Writes quick_filter if it differs from `quick`. One update of the
    /// whole value, copied over the old in place: a word a packet reads
    /// mid-copy is the old or the new one, byte by byte, and apply_with
    /// only ever moves between a bitmap and a superset of it, so every
    /// bit either needs stays set.
    fn write_quick(&mut self, maps: &Maps<'_>, quick: QuickFilter) -> Result<(), DataplaneError> {
        if quick != self.quick {
            self.write_quick_all(maps, quick)?;
        }
        Ok(())
    }

    fn write_quick_all(
        &mut self,
        maps: &Maps<'_>,
        quick: QuickFilter,
    ) -> Result<(), DataplaneError> {
        maps.quick_filter
            .update(&0u32.to_ne_bytes(), &quick.to_bytes(), MapFlags::ANY)
            .map_err(|e| DataplaneError::map("quick_filter", "update", e))?;
        self.quick = quick;
        Ok(())
    }

    /// Writes the words of addr_filter that differ from `words`.
    fn write_filter(&mut self, maps: &Maps<'_>, words: &[u64]) -> Result<(), DataplaneError> {
        for (i, (&want, have)) in words.iter().zip(self.filter.iter_mut()).enumerate() {
            if want != *have {
                maps.addr_filter
                    .update(
                        &(i as u32).to_ne_bytes(),
                        &want.to_ne_bytes(),
                        MapFlags::ANY,
                    )
                    .map_err(|e| DataplaneError::map("addr_filter", "update", e))?;
                *have = want;
            }
        }
        Ok(())
    }

    /// The nat return entries `plan` asks for, by (backend, port, protocol).
    fn nat_wanted(&self, plan: &Plan) -> HashMap<VipKey, usize> {
        plan.nat_returns
            .iter()
            .map(|(&(address, port, protocol), &i)| {
                (
                    VipKey {
                        address,
                        port,
                        protocol,
                    },
                    i,
                )
            })
            .collect()
    }

    fn nat_record(&self, plan: &Plan, k: &VipKey) -> lethe_nat_return {
        let i = plan.nat_returns[&(k.address, k.port, k.protocol)];
        let v = &plan.vips[i];
        let (addr, family) = records::addr_bytes(&v.vip.address);
        lethe_nat_return {
            addr,
            port: u16::from_ne_bytes(v.vip.port.to_be_bytes()),
            family,
            vip_id: self.vips[&v.key()].vip_id,
            ..Default::default()
        }
    }

    /// The VIP id whose return path counts in return_stats.
    pub fn nat_vip_id(&self, key: &VipKey) -> Option<u32> {
        self.vips.get(key).map(|v| v.vip_id)
    }

    /// Takes a VIP the live index no longer holds out of `vips` and of
    /// the installed ones; its tables and ids retire (`release_retired`).
    fn retire_vip(&mut self, maps: &Maps<'_>, key: &VipKey) -> Result<(), DataplaneError> {
        let Some(v) = self.vips.get(key) else {
            return Ok(());
        };
        match maps.vips.delete(records::vip_key(key).as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => {}
            Err(e) => return Err(DataplaneError::map("vips", "delete", e)),
        }
        let r = &mut self.retiring;
        r.tables.extend([2 * v.vip_id, 2 * v.vip_id + 1]);
        r.backend_ids.extend(v.backends.values().map(|b| b.id));
        r.backend_ids.extend(v.stale.iter().map(|s| s.id));
        r.vip_ids.push(v.vip_id);
        self.vips.remove(key);
        Ok(())
    }

    /// Makes vip_index hold the record of every installed VIP but `gone`'s
    /// (writing nothing when the live half already does), then retires
    /// `gone` and releases what retired.
    fn publish_index(&mut self, maps: &Maps<'_>, gone: &[VipKey]) -> Result<(), DataplaneError> {
        let leaving: std::collections::HashSet<&VipKey> = gone.iter().collect();
        let records: Vec<(VipKey, lethe_vip)> = self
            .vips
            .iter()
            .filter(|(k, _)| !leaving.contains(k))
            .map(|(k, v)| (*k, v.record))
            .collect();
        maps.vip_index
            .publish(&vip_index::build(&records), || wait_for_programs(maps))?;
        for key in gone {
            self.retire_vip(maps, key)?;
        }
        self.release_retired(maps)
    }

    /// Releases what retired, once packets that read the previous index
    /// half (or found a retired VIP in `vips`) are waited out: then
    /// nothing leads there. What a failure leaves stays to retire.
    fn release_retired(&mut self, maps: &Maps<'_>) -> Result<(), DataplaneError> {
        let r = &self.retiring;
        if !(r.tables.is_empty() && r.backend_ids.is_empty() && r.vip_ids.is_empty()) {
            wait_for_programs(maps)?;
        }
        let live: std::collections::HashSet<u32> =
            self.vips.values().map(|v| v.record.table_id).collect();
        while let Some(&t) = self.retiring.tables.last() {
            if !live.contains(&t) {
                maps.tables.remove(t)?;
            }
            self.retiring.tables.pop();
        }
        while let Some(&(id, key, addr)) = self.retiring.renumbered.last() {
            self.carry_counts(maps, id, key, addr)?;
            self.retiring.renumbered.pop();
        }
        while let Some(&id) = self.retiring.backend_ids.last() {
            release_backends(maps, &mut self.backend_ids, [id])?;
            self.retiring.backend_ids.pop();
        }
        for id in self.retiring.vip_ids.drain(..) {
            self.vip_ids.give_back(id);
        }
        Ok(())
    }

    /// Installs or updates the planned VIPs, in groups: each group's
    /// backend records and tables are made first, then all its new tables
    /// go live with one batched update of each outer map, then its VIP
    /// records follow. The kernel waits for running programs once per
    /// batched update, not once per table: a change of 100 VIPs waited
    /// ~100 grace periods (~1.2 s here) table by table. A group holds at
    /// most PUBLISH_BATCH_BYTES of new tables, which exist beside the ones
    /// they replace until the update. Returns how many backends got a new
    /// outer source (see `apply_with`).
    fn upsert_vips(
        &mut self,
        maps: &Maps<'_>,
        plan: &Plan,
        resolve_sources: bool,
    ) -> Result<usize, DataplaneError> {
        let mut resourced = 0;
        let mut rest = &plan.vips[..];
        while !rest.is_empty() {
            let mut staged: Vec<StagedVip> = Vec::new();
            let mut bytes = 0;
            while let Some((vip, tail)) = rest.split_first() {
                if bytes >= PUBLISH_BATCH_BYTES {
                    break;
                }
                match self.stage_vip(maps, vip, resolve_sources) {
                    Ok(s) => {
                        if let TableChange::Publish(map) = &s.table {
                            bytes += map.max_entries() as usize * TABLE_ELEM_BYTES;
                        }
                        staged.push(s);
                    }
                    Err(e) => {
                        self.unstage(maps, staged);
                        return Err(e);
                    }
                }
                rest = tail;
            }
            // The batch's return-path entries (its VIPs have ids now),
            // before its tables and records go live.
            if let Err(e) = self.write_nat_returns(maps, plan, &staged) {
                self.unstage(maps, staged);
                return Err(e);
            }
            if let Err(e) = self.publish_staged(maps, &staged) {
                self.settle_refused(maps, staged);
                return Err(e);
            }
            resourced += staged.iter().map(|s| s.resourced).sum::<usize>();
            self.commit(maps, staged)?;
        }
        Ok(resourced)
    }

    /// Finishes staged VIPs whose new tables are live: first what each of
    /// them now is, in memory (`settle`), then the map writes that can
    /// fail (`finish`), whose work left undone stays recorded for the next
    /// apply. A failure at one VIP leaves no other's bookkeeping behind
    /// its table.
    fn commit(&mut self, maps: &Maps<'_>, staged: Vec<StagedVip>) -> Result<(), DataplaneError> {
        let keys: Vec<VipKey> = staged.iter().map(|s| s.key).collect();
        for s in staged {
            self.settle(s);
        }
        for key in &keys {
            self.finish(maps, key)?;
        }
        Ok(())
    }

    /// After a publish the kernel refused, part of it may be live (the
    /// group of one outer map, the start of a batch): each staged VIP's
    /// table is read back. One that went live is settled like any, one
    /// surely not live is unstaged, and one that cannot be told is
    /// recorded as unknown (`forget`). Nothing else is written: the
    /// restore that follows a failed change does the rest.
    fn settle_refused(&mut self, maps: &Maps<'_>, staged: Vec<StagedVip>) {
        let mut unpublished = Vec::new();
        for s in staged {
            match self.published_now(maps, &s) {
                Some(true) => self.settle(s),
                Some(false) => unpublished.push(s),
                None => self.forget(s),
            }
        }
        self.unstage(maps, unpublished);
    }

    /// Whether the kernel holds a staged VIP's new table: Some(true) if
    /// it does, Some(false) if it holds what it held before (for a table
    /// going into the spare id: nothing there), None if that cannot be
    /// told.
    fn published_now(&self, maps: &Maps<'_>, s: &StagedVip) -> Option<bool> {
        if !matches!(s.table, TableChange::Publish(_)) {
            return Some(false);
        }
        let now = maps
            .tables
            .read(s.record.table_id, fixed_table(&s.record))
            .ok()?
            .unwrap_or_default();
        if now == s.slots {
            return Some(true);
        }
        let before = match s.retired_table {
            Some(_) => Vec::new(),
            None => self.vips.get(&s.key)?.slots.clone()?,
        };
        (now == before).then_some(false)
    }

    /// Records that a staged VIP's new table may or may not be live: the
    /// table at its record's table id is unknown, and the ids it took may
    /// be named (stale). Its backends and record stay as they were. A
    /// table going into the spare id changed only what no record names:
    /// that id retires, gone after the next flip.
    fn forget(&mut self, s: StagedVip) {
        let v = self
            .vips
            .get_mut(&s.key)
            .expect("staged VIPs are installed");
        v.stale
            .extend(s.fresh.iter().map(|&id| Stale { id, carry: None }));
        match s.retired_table {
            None => v.slots = None,
            Some(_) => self.retiring.tables.push(s.record.table_id),
        }
    }

    /// Writes the return-path entries of the staged VIPs' nat backends
    /// that differ from what the map holds.
    fn write_nat_returns(
        &mut self,
        maps: &Maps<'_>,
        plan: &Plan,
        staged: &[StagedVip],
    ) -> Result<(), DataplaneError> {
        let keys: std::collections::HashSet<VipKey> = staged.iter().map(|s| s.key).collect();
        for (k, i) in self.nat_wanted(plan) {
            if !keys.contains(&plan.vips[i].key()) {
                continue;
            }
            let v = self.nat_record(plan, &k);
            if self.nat.get(&k).map(Pod::as_bytes) != Some(v.as_bytes()) {
                maps.nat_returns
                    .update(records::vip_key(&k).as_bytes(), v.as_bytes(), MapFlags::ANY)
                    .map_err(|e| DataplaneError::map("nat_returns", "update", e))?;
                self.nat.insert(k, v);
            }
        }
        Ok(())
    }

    /// Frees the records staged VIPs wrote under new ids: no published
    /// table names them.
    fn unstage(&mut self, maps: &Maps<'_>, staged: Vec<StagedVip>) {
        for s in staged {
            self.free_fresh(maps, s.fresh);
        }
    }

    /// Frees backend records no table names, and gives their ids back. A
    /// record that cannot be marked free is rewritten before its id is
    /// used again, so the id goes back all the same (left as it is, a
    /// restarted daemon would adopt the record, and its next apply free
    /// it).
    fn free_fresh(&mut self, maps: &Maps<'_>, ids: Vec<u32>) {
        for id in ids {
            if release_backends(maps, &mut self.backend_ids, [id]).is_err() {
                self.backend_ids.give_back(id);
            }
        }
    }

    /// Puts every staged new table live: one batched update per outer map,
    /// each returning once no running program can still read what it
    /// replaced.
    fn publish_staged(&self, maps: &Maps<'_>, staged: &[StagedVip]) -> Result<(), DataplaneError> {
        let tables: Vec<(u32, &MapHandle)> = staged
            .iter()
            .filter_map(|s| match &s.table {
                TableChange::Publish(map) => Some((s.record.table_id, map)),
                _ => None,
            })
            .collect();
        maps.tables.publish_all(&tables)
    }

    /// Writes a VIP's backend records and makes its new table, unpublished;
    /// changes nothing the program reads. A new VIP gets its id (and is
    /// installed with no table).
    fn stage_vip(
        &mut self,
        maps: &Maps<'_>,
        planned: &PlannedVip,
        resolve_sources: bool,
    ) -> Result<StagedVip, DataplaneError> {
        let mut resourced = 0;
        let key = planned.key();
        let is_new = !self.vips.contains_key(&key);
        if is_new {
            let vip_id = self.vip_ids.take()?;
            let zeroed = zero_counters(maps.vip_stats, "vip_stats", vip_id)
                .and_then(|()| zero_counters(maps.return_stats, "return_stats", vip_id));
            if let Err(e) = zeroed {
                self.vip_ids.give_back(vip_id);
                return Err(e);
            }
            self.vips.insert(
                key,
                InstalledVip {
                    vip_id,
                    record: lethe_vip {
                        vip_id,
                        table_id: 2 * vip_id,
                        ..Default::default()
                    },
                    written: false,
                    slots: Some(Vec::new()),
                    backends: FastMap::default(),
                    stale: Vec::new(),
                },
            );
        }

        // 1. Backend records: keep ids whose record is unchanged, write new
        // ones. Encapsulating VIPs' backends carry their outer source
        // address: resolved when the record is written, again for a kept
        // one without it (it may resolve now), and for all when asked.
        let encap = matches!(planned.mode(), abi::Mode::Ipip | abi::Mode::Gue);
        let mut next: FastMap<IpAddr, InstalledBackend> =
            FastMap::with_capacity_and_hasher(planned.vip.backends.len(), Default::default());
        let mut fresh = Vec::new();
        let mut failed = None;
        let before = &self.vips[&key];
        for b in &planned.vip.backends {
            let port = planned.vip.backend_port(b);
            let current = before.backends.get(&b.address).copied();
            let wanted_src = match current {
                _ if !encap => None,
                Some(cur) if cur.port == port && cur.src.is_some() && !resolve_sources => cur.src,
                _ => resolve_source(b.address),
            };
            let installed = match current {
                Some(cur) if cur.port == port && cur.src == wanted_src => cur,
                _ => {
                    if current.is_some_and(|cur| cur.port == port) {
                        resourced += 1;
                    }
                    let id = match self.backend_ids.take() {
                        Ok(id) => id,
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    };
                    fresh.push(id);
                    let new = (b.address, port, wanted_src);
                    if let Err(e) = write_backend(maps, id, before.vip_id, new) {
                        failed = Some(e);
                        break;
                    }
                    InstalledBackend {
                        id,
                        port,
                        src: wanted_src,
                    }
                }
            };
            next.insert(b.address, installed);
        }
        if let Some(e) = failed {
            // This VIP's new records so far: no table names them.
            self.free_fresh(maps, fresh);
            return Err(e);
        }

        // 2. The table, in backend ids (indexed through a vector: a hash
        // lookup per slot cost ~2 ms of a 65537-slot table).
        let ids: Vec<u32> = planned.table.backends.iter().map(|a| next[a].id).collect();
        let slots: Vec<u32> = planned
            .table
            .slots
            .iter()
            .map(|&i| ids[i as usize])
            .collect();
        let v = &self.vips[&key];
        let size = planned.vip.table_size;
        let fixed = table::is_fixed(size as usize);
        let mut record = lethe_vip {
            vip_id: v.vip_id,
            table_id: v.record.table_id,
            table_size: size,
            mode: planned.mode() as u8,
            flags: planned.flags() | if fixed { abi::VIP_F_FIXED_TABLE } else { 0 },
            event_sample_rate: planned.vip.event_sample_rate,
            ..Default::default()
        };
        // A table of a new size (or one adopted from the other outer map)
        // goes into the spare slot, and the VIP record flips to it with the
        // index: size and table change at once.
        let mut retired_table = None;
        if !is_new && (size != v.record.table_size || fixed != fixed_table(&v.record)) {
            record.table_id ^= 1;
            retired_table = Some(v.record.table_id);
        }
        let table = if slots.is_empty() {
            // Nothing may stay at the record's table id: a table whose
            // content is unknown, or one left at the spare id a move goes
            // to (see `forget`).
            if retired_table.is_none() && v.slots.as_ref().is_some_and(Vec::is_empty) {
                TableChange::Keep
            } else {
                TableChange::Remove
            }
        } else if retired_table.is_some() || v.slots.as_ref() != Some(&slots) {
            match self.make_table(&slots) {
                Ok(map) => TableChange::Publish(map),
                Err(e) => {
                    self.free_fresh(maps, fresh);
                    return Err(e);
                }
            }
        } else {
            TableChange::Keep
        };
        Ok(StagedVip {
            key,
            fresh,
            next,
            slots,
            record,
            retired_table,
            table,
            resourced,
        })
    }

    /// A new table map holding `slots`: the blank made ahead if it fits.
    fn make_table(&mut self, slots: &[u32]) -> Result<MapHandle, DataplaneError> {
        match self.spare.take() {
            Some(blank) if blank.size() == slots.len() => Ok(blank.fill(slots)),
            other => {
                self.spare = other;
                table::create(slots)
            }
        }
    }

    /// Records what a staged VIP is once its table change is done (a new
    /// table live, or none needed) or to be done (a table to remove), in
    /// memory only: its backends, record and table. Ids of backends it
    /// leaves become stale, released by `finish`; or, when the live index
    /// may still lead to the table the record leaves (a new size), they
    /// retire with it after the next flip.
    fn settle(&mut self, s: StagedVip) {
        let key = s.key;
        let record = s.record;
        // Filled now (or emptied): a table id pending retirement is not
        // retired.
        self.retiring.tables.retain(|&t| t != record.table_id);
        let v = self.vips.get_mut(&key).expect("staged VIPs are installed");
        let leaving: Vec<Stale> = v
            .backends
            .iter()
            .filter(|(addr, b)| s.next.get(*addr) != Some(*b))
            .map(|(addr, b)| Stale {
                id: b.id,
                carry: s.next.contains_key(addr).then_some(*addr),
            })
            .collect();
        v.backends = s.next;
        // 3. The VIP record, once its table is in place: in `vips` by
        // `finish`, in the index at the next publish_index.
        if record.as_bytes() != v.record.as_bytes() {
            v.record = record;
            v.written = false;
        }
        match s.table {
            TableChange::Publish(_) => v.slots = Some(s.slots),
            TableChange::Keep => {}
            TableChange::Remove => v.slots = None,
        }
        match s.retired_table {
            Some(old) => {
                let r = &mut self.retiring;
                r.tables.push(old);
                for gone in leaving.into_iter().chain(v.stale.drain(..)) {
                    r.backend_ids.push(gone.id);
                    if let Some(addr) = gone.carry {
                        r.renumbered.push((gone.id, key, addr));
                    }
                }
            }
            None => v.stale.extend(leaving),
        }
    }

    /// The map writes a settled VIP still needs: its table removed, its
    /// record into `vips`, its stale ids released (4. the table update or
    /// removal has waited out every packet that could read them). Each is
    /// recorded when done, so a failure leaves the rest to the next apply.
    fn finish(&mut self, maps: &Maps<'_>, key: &VipKey) -> Result<(), DataplaneError> {
        let v = self.vips.get_mut(key).expect("settled VIPs are installed");
        if v.slots.is_none() {
            remove_table(maps, &v.record)?;
            v.slots = Some(Vec::new());
        }
        if !v.written {
            maps.vips
                .update(
                    records::vip_key(key).as_bytes(),
                    v.record.as_bytes(),
                    MapFlags::ANY,
                )
                .map_err(|e| DataplaneError::map("vips", "update", e))?;
            v.written = true;
        }
        let mut stale = std::mem::take(&mut v.stale);
        let released = self.release_stale(maps, *key, &mut stale);
        if let Some(v) = self.vips.get_mut(key) {
            v.stale = stale;
        }
        released
    }

    /// Releases `stale` (a VIP's), carrying renumbered backends' counts;
    /// what a failure leaves stays in it.
    fn release_stale(
        &mut self,
        maps: &Maps<'_>,
        key: VipKey,
        stale: &mut Vec<Stale>,
    ) -> Result<(), DataplaneError> {
        while let Some(last) = stale.last_mut() {
            if let Some(addr) = last.carry {
                self.carry_counts(maps, last.id, key, addr)?;
                last.carry = None;
            }
            release_backends(maps, &mut self.backend_ids, [last.id])?;
            stale.pop();
        }
        Ok(())
    }

    /// Adds the final counts of `id`, a backend's previous id (no packet
    /// reaches it any more), to that backend's base.
    fn carry_counts(
        &mut self,
        maps: &Maps<'_>,
        id: u32,
        key: VipKey,
        addr: IpAddr,
    ) -> Result<(), DataplaneError> {
        let last = super::Dataplane::percpu_sum(maps.backend_stats, "backend_stats", id)?;
        let base = self.backend_base.entry((key, addr)).or_default();
        base.packets += last.packets;
        base.bytes += last.bytes;
        Ok(())
    }

    /// What a backend counted under its previous ids (see `backend_base`).
    pub fn backend_base(&self, key: &VipKey, addr: IpAddr) -> super::Counter {
        self.backend_base
            .get(&(*key, addr))
            .copied()
            .unwrap_or_default()
    }
}

/// New tables made before a batched publish: at most this many bytes of
/// them (the kernel's, 8 per slot) exist at once beside the tables they
/// replace. 64 tables of 65537 slots.
const PUBLISH_BATCH_BYTES: usize = 32 << 20;
const TABLE_ELEM_BYTES: usize = 8;

/// What a staged VIP's table needs.
enum TableChange {
    /// Nothing: the published table (or its absence) is right.
    Keep,
    /// This new table, published as the record's table id.
    Publish(MapHandle),
    /// No table at the record's table id: the VIP has no backend in it
    /// (and what is there may be a table, or unknown).
    Remove,
}

/// A VIP between `stage_vip` and `settle` (or `unstage`, `forget`).
struct StagedVip {
    key: VipKey,
    /// Ids taken for new backend records.
    fresh: Vec<u32>,
    next: FastMap<IpAddr, InstalledBackend>,
    /// The table in backend ids, as it is once settled.
    slots: Vec<u32>,
    record: lethe_vip,
    /// The table id the record leaves (a new size).
    retired_table: Option<u32>,
    table: TableChange,
    resourced: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::flow_hash::{addr_bit, key_bit};

    fn bit(words: &[u64], base: u32, bit: u32) -> bool {
        words[(base + bit / 64) as usize] >> (bit % 64) & 1 == 1
    }

    /// The VIP bitmap holds each VIP address's bit and, in the same word,
    /// each VIP key's bit (the program reads both; see bpf/abi.h); the nat
    /// bitmap each nat backend's address bit. A port no VIP of the address
    /// has finds its key bit clear (for these keys: no collision).
    #[test]
    fn filter_has_address_and_key_bits() {
        let c: Config = serde_json::from_str(
            r#"{"vips": [
                {"name": "web", "address": "10.0.0.1", "port": 80, "protocol": "tcp",
                 "backends": [{"address": "10.1.0.1"}]},
                {"name": "any6", "address": "2001:db8::1", "port": 0, "protocol": "udp",
                 "backends": [{"address": "2001:db8:1::1"}]},
                {"name": "nat", "address": "10.0.0.2", "port": 53, "protocol": "udp", "mode": "nat",
                 "backends": [{"address": "10.1.0.9"}]}]}"#,
        )
        .unwrap();
        let plan = Plan::new(&c).unwrap();
        let words = Installed::filter_for(&plan);
        let key = |a: &str, port: u16, proto: u8| {
            let a: IpAddr = a.parse().unwrap();
            addr_bit(&a) / 64 * 64 + key_bit(&a, port, proto)
        };
        let vip = |a: &str| addr_bit(&a.parse().unwrap());
        for (a, port, proto) in [
            ("10.0.0.1", 80, 6),
            ("2001:db8::1", 0, 17),
            ("10.0.0.2", 53, 17),
        ] {
            assert!(bit(&words, abi::FILTER_VIP, vip(a)), "{a}");
            assert!(
                bit(&words, abi::FILTER_VIP, key(a, port, proto)),
                "{a} {port}"
            );
        }
        assert!(!bit(&words, abi::FILTER_VIP, key("10.0.0.1", 81, 6)));
        assert!(!bit(&words, abi::FILTER_VIP, key("10.0.0.1", 0, 6)));
        assert!(bit(&words, abi::FILTER_NAT, vip("10.1.0.9")));
        let set: u32 = words.iter().map(|w| w.count_ones()).sum();
        assert!(set <= 7, "{set} bits set for 3 VIPs and 1 nat backend");
    }
}
