//! The data plane: the only module that touches the BPF skeleton, its maps
//! and `unsafe`. Everything else talks to it through [`Dataplane`]'s typed
//! API: `apply(plan)`, `allow_tx_port`, `attach`, counters and `test_run`.

mod apply;
mod attach;
mod bench;
pub mod decap;
pub mod events;
mod mmap;
mod pass;
pub mod pin;
mod records;
mod skel;
mod table;
mod vip_index;

use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use std::os::fd::AsFd;

use libbpf_rs::{MapCore, MapFlags, OpenObject, ProgramInput};
use thiserror::Error;

use crate::abi::{self, Action, Reason, REASON_COUNT};
use crate::plan::VipKey;

pub use attach::{
    pinned_link, pinned_prog_id, xdp_query, AttachMode, LinkOutcome, PinnedLink, XdpLink, XdpMode,
    XdpState,
};
pub use bench::{pin_thread_to_cpu, Timed, TrafficGenerator, GEN_MAX_LEN};
pub use decap::DecapProgram;
pub use pass::PassProgram;
pub use records::Pod;
pub use skel::types;

use apply::Installed;
use skel::{LetheSkel, LetheSkelBuilder};

// quick_filter's global data is the value quick_filter::QuickFilter writes.
const _: () = assert!(
    std::mem::size_of::<skel::types::data_quick>()
        == (crate::abi::QUICK_MAPS * crate::abi::QUICK_WORDS) as usize * std::mem::size_of::<u64>()
);
// live_config's and live_nexthop_ctl's are copies of the lb_config and
// nexthop_ctl records, written whole.
const _: () = assert!(
    std::mem::size_of::<skel::types::data_config>()
        == std::mem::size_of::<skel::types::lethe_config>()
        && std::mem::size_of::<skel::types::data_nexthop_ctl>()
            == std::mem::size_of::<skel::types::lethe_nexthop_ctl>()
);

/// Writes `value` as entry 0 of a pinned one-entry record (what a restarted
/// control plane adopts), then of the program's copy of it in global data
/// (what packets read: see live_config in bpf/maps.h). A failure between
/// the two leaves the caller's bookkeeping unchanged, so the next write
/// does both again.
fn write_record_and_copy(
    record: (&dyn MapCore, &'static str),
    copy: (&dyn MapCore, &'static str),
    value: &[u8],
) -> Result<(), DataplaneError> {
    for (map, name) in [record, copy] {
        map.update(&0u32.to_ne_bytes(), value, MapFlags::ANY)
            .map_err(|e| DataplaneError::map(name, "update", e))?;
    }
    Ok(())
}

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error("loading the XDP program")]
    Load(#[source] libbpf_rs::Error),
    #[error("{op} on map {map}")]
    Map {
        map: &'static str,
        op: &'static str,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("{what}")]
    Os {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no free {what} id: all {max} are in use")]
    Exhausted { what: &'static str, max: u32 },
    #[error("BPF_PROG_TEST_RUN")]
    TestRun(#[source] libbpf_rs::Error),
    #[error("XDP link: {what}")]
    Link {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the maps pinned in {dir} are in another layout ({found}; this build's is {LAYOUT:016x}): \
         they are not adopted (`lethe serve` moves an instance to fresh maps)",
        found = stamp.map_or("no stamp".to_string(), |s| format!("{s:016x}")),
        LAYOUT = pin::LAYOUT,
    )]
    OtherLayout { dir: String, stamp: Option<u64> },
    #[error("attaching XDP ({mode:?} mode) to ifindex {ifindex}")]
    Attach {
        ifindex: u32,
        mode: AttachMode,
        #[source]
        source: std::io::Error,
    },
}

impl DataplaneError {
    fn map(map: &'static str, op: &'static str, source: libbpf_rs::Error) -> Self {
        DataplaneError::Map { map, op, source }
    }
}

/// Packets and bytes, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// What the kernel program decided for a traced frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traced {
    pub action: Option<Action>,
    pub reason: Option<Reason>,
    pub vip: Option<VipKey>,
    pub backend: Option<IpAddr>,
    pub hash: Option<u32>,
    pub frame: Vec<u8>,
}

/// One run of the program on one frame (BPF_PROG_TEST_RUN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRun {
    /// The raw return value, and its meaning when it is an XDP action.
    pub retval: u32,
    pub action: Option<Action>,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// Kernel-measured run time.
    pub duration: Duration,
}

/// The loaded XDP program and its maps.
/// Shareable between threads: map writes are serialised by `installed`'s
/// lock; packet runs and counter reads need no lock.
pub struct Dataplane {
    skel: LetheSkel<'static>,
    /// vip_index and its control word, mapped (written under `installed`).
    vip_index: vip_index::VipIndex,
    /// Put into rcu_sync to wait for running programs (apply::Maps).
    sync_table: libbpf_rs::MapHandle,
    installed: Mutex<Installed>,
}

impl Dataplane {
    /// Opens and loads the program (verifier included) with maps of its own,
    /// gone with the process. Nothing is attached.
    pub fn load() -> Result<Dataplane, DataplaneError> {
        Self::load_with(None)
    }

    /// Loads the program with its maps pinned in `dir` (a bpffs directory):
    /// maps already pinned there are reused as they are — tables, counters
    /// and all — and what they hold is adopted, so applying the same
    /// configuration again writes nothing. The program is pinned as `prog`.
    /// Pins in another layout (`pin::Pins::Other`) are refused, untouched:
    /// see `take_over_pins`.
    pub fn load_pinned(dir: &Path) -> Result<Dataplane, DataplaneError> {
        std::fs::create_dir_all(dir).map_err(|source| DataplaneError::Os {
            what: "creating the pin directory",
            source,
        })?;
        let fresh = match pin::pins(dir) {
            pin::Pins::Empty => true,
            pin::Pins::Current => false,
            pin::Pins::Other { stamp } => {
                return Err(DataplaneError::OtherLayout {
                    dir: dir.display().to_string(),
                    stamp,
                })
            }
        };
        let mut dp = Self::load_with(Some(dir))?;
        if fresh {
            // Last: a crash before it leaves maps without a stamp, which
            // the next daemon replaces rather than adopts.
            pin::write_layout(dir, pin::LAYOUT)?;
        }
        let prog = pin::prog_path(dir);
        if prog.exists() {
            std::fs::remove_file(&prog).map_err(|source| DataplaneError::Os {
                what: "unpinning the previous program",
                source,
            })?;
        }
        dp.skel
            .progs
            .lethe_xdp
            .pin(&prog)
            .map_err(DataplaneError::Load)?;
        let adopted = apply::Installed::adopt(&dp.maps())?;
        *dp.installed() = adopted;
        Ok(dp)
    }

    /// Makes this data plane (loaded with `load`, maps of its own) the
    /// instance's pinned one, in place of pins in another layout, once the
    /// links run this program (`attach_pinned`): the stamp goes first, then
    /// each map's pin is replaced, pins of maps this build does not have
    /// are removed, the program is pinned, and this build's stamp goes
    /// last. Until then the pins are another layout's, which the next
    /// daemon replaces too. The old maps are freed with their last pin,
    /// their program being on no link any more.
    pub fn take_over_pins(&self, dir: &Path) -> Result<(), DataplaneError> {
        pin::remove_pin(&pin::layout_path(dir))?;
        let mut ours = Vec::new();
        for map in self.skel.object().maps() {
            let name = map.name().to_string_lossy().into_owned();
            if !pin::is_pinned_map(&name) {
                continue;
            }
            let path = dir.join(&name);
            pin::remove_pin(&path)?;
            let mut handle = libbpf_rs::MapHandle::try_from(&map)
                .map_err(|e| DataplaneError::map("(each)", "dup", e))?;
            handle
                .pin(&path)
                .map_err(|e| DataplaneError::map("(each)", "pin", e))?;
            ours.push(name);
        }
        for stale in pin::map_pins(dir) {
            if !ours.contains(&stale) {
                pin::remove_pin(&dir.join(stale))?;
            }
        }
        let prog = pin::prog_path(dir);
        pin::remove_pin(&prog)?;
        libbpf_rs::ProgramHandle::try_from(&self.skel.progs.lethe_xdp)
            .and_then(|h| h.pin(&prog))
            .map_err(DataplaneError::Load)?;
        pin::write_layout(dir, pin::LAYOUT)
    }

    fn load_with(pin_dir: Option<&Path>) -> Result<Dataplane, DataplaneError> {
        // The skeleton borrows its object storage for its whole life; the
        // daemon keeps one data plane for the process's life, and tests a
        // few, so a leaked pointer-sized box per load is the simple answer.
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = LetheSkelBuilder::default()
            .open(storage)
            .map_err(DataplaneError::Load)?;
        if let Some(dir) = pin_dir {
            for mut map in open.open_object_mut().maps_mut() {
                let name = map.name().to_string_lossy().into_owned();
                if !pin::is_pinned_map(&name) {
                    continue;
                }
                map.set_pin_path(dir.join(&name))
                    .map_err(DataplaneError::Load)?;
            }
        }
        let skel = open.load().map_err(DataplaneError::Load)?;
        let dp = Dataplane {
            vip_index: vip_index::VipIndex::open(
                skel.maps.vip_index.as_fd(),
                skel.maps.vip_index_ctl.as_fd(),
            )?,
            sync_table: table::create(&[0])?,
            skel,
            installed: Mutex::new(Installed::default()),
        };
        // Reused pins may hold next hops from before the routes changed
        // while no daemon was listening: a generation past the pinned
        // record's, which is also the first this program's own copy (global
        // data, zeroed at load) holds.
        dp.invalidate_nexthops()?;
        Ok(dp)
    }

    fn maps(&self) -> apply::Maps<'_> {
        apply::Maps {
            config: &self.skel.maps.lb_config,
            live_config: &self.skel.maps.data_config,
            addr_filter: &self.skel.maps.addr_filter,
            quick_filter: &self.skel.maps.data_quick,
            vip_index: &self.vip_index,
            rcu_sync: &self.skel.maps.rcu_sync,
            sync_table: &self.sync_table,
            backend_srcs: &self.skel.maps.backend_srcs,
            nat_returns: &self.skel.maps.nat_returns,
            return_stats: &self.skel.maps.return_stats,
            vips: &self.skel.maps.vips,
            tables: table::Tables {
                sized: &self.skel.maps.tables,
                fixed: &self.skel.maps.tables_fixed,
            },
            backends: &self.skel.maps.backends,
            vip_stats: &self.skel.maps.vip_stats,
            backend_stats: &self.skel.maps.backend_stats,
        }
    }

    /// The kernel's id of the loaded program.
    pub fn program_id(&self) -> Result<u32, DataplaneError> {
        libbpf_rs::ProgramHandle::try_from(&self.skel.progs.lethe_xdp)
            .map(|h| h.id())
            .map_err(DataplaneError::Load)
    }

    /// Attaches through the link pinned at `dir/link_<ifname>`: keeps it,
    /// upgrades its program to this one in place, or attaches and pins.
    pub fn attach_pinned(
        &self,
        dir: &Path,
        ifname: &str,
        ifindex: u32,
        mode: AttachMode,
    ) -> Result<(XdpLink, LinkOutcome), DataplaneError> {
        let prog = self.skel.progs.lethe_xdp.as_fd();
        attach::attach_pinned(
            prog,
            self.program_id()?,
            ifindex,
            mode,
            &pin::link_path(dir, ifname),
        )
    }

    /// Puts this program on every link pinned in `dir` for an interface
    /// not in `keep` (an earlier daemon's, started with more interfaces):
    /// a link left running another program would run it on settings and
    /// filters no daemon updates. Returns each such link's interface name
    /// and outcome; defunct links (interface gone) are unpinned, unlisted.
    pub fn upgrade_other_links(
        &self,
        dir: &Path,
        keep: &[String],
    ) -> Result<Vec<(String, LinkOutcome)>, DataplaneError> {
        let (prog, id) = (self.skel.progs.lethe_xdp.as_fd(), self.program_id()?);
        let mut out = Vec::new();
        for (iface, path) in pin::links(dir) {
            if keep.contains(&iface) {
                continue;
            }
            if let Some(o) = attach::upgrade_pinned(prog, id, &path)? {
                out.push((iface, o));
            }
        }
        Ok(out)
    }

    /// Attaches the program to an interface. The program runs until the
    /// returned link is dropped.
    pub fn attach(&self, ifindex: u32, mode: AttachMode) -> Result<XdpLink, DataplaneError> {
        attach::attach(self.skel.progs.lethe_xdp.as_fd(), ifindex, mode)
    }

    /// Allows redirecting to `ifindex` (other than the ingress port). The
    /// ifindex is resolved in the calling thread's network namespace.
    pub fn allow_tx_port(&self, ifindex: u32) -> Result<(), DataplaneError> {
        // struct bpf_devmap_val: ifindex, then a program fd (none).
        let mut val = [0u8; 8];
        val[..4].copy_from_slice(&ifindex.to_ne_bytes());
        self.skel
            .maps
            .tx_ports
            .update(&ifindex.to_ne_bytes(), &val, MapFlags::ANY)
            .map_err(|e| DataplaneError::map("tx_ports", "update", e))?;
        self.invalidate_nexthops()
    }

    /// Makes every next hop the program has cached (the `nexthops` map,
    /// see bpf/maps.h) stale: the next packet to each backend asks the
    /// route lookup again. For route, neighbour and link changes, and
    /// tx_ports changes.
    pub fn invalidate_nexthops(&self) -> Result<(), DataplaneError> {
        let mut ctl = self.nexthop_ctl()?;
        ctl.gen = ctl.gen.wrapping_add(1);
        self.set_nexthop_ctl(&ctl)
    }

    /// How long a cached next hop holds at most, in jiffies (0: the
    /// program's default, LETHE_NEXTHOP_TTL_JIFFIES in bpf/abi.h). Also
    /// makes every cached next hop stale.
    pub fn set_nexthop_ttl_jiffies(&self, ttl: u32) -> Result<(), DataplaneError> {
        let mut ctl = self.nexthop_ctl()?;
        ctl.gen = ctl.gen.wrapping_add(1);
        ctl.ttl_jiffies = ttl;
        self.set_nexthop_ctl(&ctl)
    }

    fn nexthop_ctl(&self) -> Result<types::lethe_nexthop_ctl, DataplaneError> {
        let bytes = self
            .skel
            .maps
            .nexthop_ctl
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| DataplaneError::map("nexthop_ctl", "lookup", e))?
            .unwrap_or_default();
        Ok(types::lethe_nexthop_ctl::from_bytes(&bytes).unwrap_or_default())
    }

    fn set_nexthop_ctl(&self, ctl: &types::lethe_nexthop_ctl) -> Result<(), DataplaneError> {
        let maps = &self.skel.maps;
        write_record_and_copy(
            (&maps.nexthop_ctl, "nexthop_ctl"),
            (&maps.data_nexthop_ctl, "live_nexthop_ctl"),
            ctl.as_bytes(),
        )
    }

    /// Makes the maps hold `plan`: VIPs, backends, tables, seed. Tables are
    /// swapped atomically; what is unchanged is not rewritten.
    pub fn apply(&self, plan: &crate::plan::Plan) -> Result<(), DataplaneError> {
        self.installed().apply(&self.maps(), plan)
    }

    /// `apply`, resolving every encapsulating backend's outer source again
    /// (the host's addresses or routes changed): a backend whose source
    /// changed gets a new record and its VIP's table is republished.
    /// Returns how many backends got a new source.
    pub fn refresh_sources(&self, plan: &crate::plan::Plan) -> Result<usize, DataplaneError> {
        self.installed().apply_with(&self.maps(), plan, true)
    }

    fn installed(&self) -> std::sync::MutexGuard<'_, Installed> {
        // A panic while holding the lock leaves `Installed` describing maps
        // it may not have finished writing; the next apply rewrites them.
        self.installed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs the program once on `frame` as if received on `ingress_ifindex`
    /// (0: no device; routes then cannot be looked up).
    pub fn test_run(&self, frame: &[u8], ingress_ifindex: u32) -> Result<TestRun, DataplaneError> {
        self.run(&[], frame, ingress_ifindex).map(|(run, _)| run)
    }

    /// Runs `frame` through the program with a decision record in the XDP
    /// metadata area, and says what the kernel decided: verdict, reason, VIP,
    /// backend, hash. Counters move as for any packet.
    pub fn trace(&self, frame: &[u8], ingress_ifindex: u32) -> Result<Traced, DataplaneError> {
        let request = types::lethe_trace {
            magic: abi::TRACE_MAGIC,
            reason: abi::NONE,
            vip_id: abi::NONE,
            backend_id: abi::NONE,
            hash: 0,
            _pad: 0,
        };
        let (run, meta) = self.run(request.as_bytes(), frame, ingress_ifindex)?;
        let record = types::lethe_trace::from_bytes(&meta).unwrap_or(request);
        let installed = self.installed();
        let vip = installed.vip_by_id(record.vip_id);
        let backend = vip.and_then(|k| installed.backend_by_id(&k, record.backend_id));
        Ok(Traced {
            action: run.action,
            reason: Reason::from_raw(record.reason),
            vip,
            backend,
            hash: (record.vip_id != abi::NONE).then_some(record.hash),
            frame: run.frame,
        })
    }

    /// One BPF_PROG_TEST_RUN: `meta` goes in the metadata area in front of
    /// the frame; returns the run and the metadata as the program left it.
    fn run(
        &self,
        meta: &[u8],
        frame: &[u8],
        ingress_ifindex: u32,
    ) -> Result<(TestRun, Vec<u8>), DataplaneError> {
        let mut input_bytes = Vec::with_capacity(meta.len() + frame.len());
        input_bytes.extend_from_slice(meta);
        input_bytes.extend_from_slice(frame);
        // struct xdp_md: data (= metadata length), data_end, data_meta (0),
        // ingress_ifindex, rx_queue_index, egress_ifindex.
        let mut ctx = [0u8; 24];
        ctx[0..4].copy_from_slice(&(meta.len() as u32).to_ne_bytes());
        ctx[4..8].copy_from_slice(&(input_bytes.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
        // Room for the largest outer header the program pushes.
        let mut out = vec![0u8; input_bytes.len() + 256];
        let input = ProgramInput {
            data_in: Some(&input_bytes),
            data_out: Some(&mut out),
            context_in: Some(&mut ctx),
            repeat: 1,
            ..Default::default()
        };
        let output = self
            .skel
            .progs
            .lethe_xdp
            .test_run(input)
            .map_err(DataplaneError::TestRun)?;
        let data = output.data.map(|d| d.to_vec()).unwrap_or_default();
        let retval = output.return_value;
        let duration = output.duration;
        // The output starts at the (possibly moved) metadata.
        let split = meta.len().min(data.len());
        let (meta_out, frame_out) = data.split_at(split);
        Ok((
            TestRun {
                retval,
                action: Action::from_raw(retval),
                frame: frame_out.to_vec(),
                duration,
            },
            meta_out.to_vec(),
        ))
    }

    pub(crate) fn percpu_sum(
        map: &dyn MapCore,
        name: &'static str,
        idx: u32,
    ) -> Result<Counter, DataplaneError> {
        let per_cpu = map
            .lookup_percpu(&idx.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| DataplaneError::map(name, "lookup", e))?
            .unwrap_or_default();
        let mut sum = types::lethe_counter::default();
        for bytes in per_cpu {
            if let Some(c) = types::lethe_counter::from_bytes(&bytes) {
                sum += c;
            }
        }
        Ok(Counter {
            packets: sum.packets,
            bytes: sum.bytes,
        })
    }

    /// Every reason's counter, indexed by `Reason as usize`.
    pub fn reason_counters(&self) -> Result<Vec<(Reason, Counter)>, DataplaneError> {
        (0..REASON_COUNT)
            .map(|i| {
                let reason = Reason::from_raw(i).expect("dense reasons");
                Ok((
                    reason,
                    Self::percpu_sum(&self.skel.maps.reason_stats, "reason_stats", i)?,
                ))
            })
            .collect()
    }

    /// A handle on the decision event ring buffer, for `events::read_events`.
    pub fn event_ring(&self) -> Result<libbpf_rs::MapHandle, DataplaneError> {
        libbpf_rs::MapHandle::try_from(&self.skel.maps.events)
            .map_err(|e| DataplaneError::map("events", "open", e))
    }

    /// Decision events written, and lost to a full ring.
    pub fn event_counters(&self) -> Result<(u64, u64), DataplaneError> {
        let sent = Self::percpu_sum(&self.skel.maps.event_stats, "event_stats", abi::EVENTS_SENT)?;
        let lost = Self::percpu_sum(
            &self.skel.maps.event_stats,
            "event_stats",
            abi::EVENTS_DROPPED,
        )?;
        Ok((sent.packets, lost.packets))
    }

    /// The VIP and backend an event's ids stand for now. (Ids are reused
    /// after removal: an event read long after a change may not resolve.)
    pub fn resolve(
        &self,
        vip_id: u32,
        backend_id: Option<u32>,
    ) -> (Option<VipKey>, Option<IpAddr>) {
        let installed = self.installed();
        let vip = installed.vip_by_id(vip_id);
        let backend = match (vip, backend_id) {
            (Some(k), Some(b)) => installed.backend_by_id(&k, b),
            _ => None,
        };
        (vip, backend)
    }

    /// Packets matched to a VIP, whatever became of them. `None` if the VIP
    /// is not installed.
    pub fn vip_counter(&self, key: &VipKey) -> Result<Option<Counter>, DataplaneError> {
        let id = self.installed().vip_id(key);
        match id {
            Some(id) => Self::percpu_sum(&self.skel.maps.vip_stats, "vip_stats", id).map(Some),
            None => Ok(None),
        }
    }

    /// Packets of a nat VIP's return path (backend -> client).
    pub fn return_counter(&self, key: &VipKey) -> Result<Option<Counter>, DataplaneError> {
        let id = self.installed().nat_vip_id(key);
        match id {
            Some(id) => {
                Self::percpu_sum(&self.skel.maps.return_stats, "return_stats", id).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Packets forwarded to a backend of a VIP.
    pub fn backend_counter(
        &self,
        key: &VipKey,
        backend: IpAddr,
    ) -> Result<Option<Counter>, DataplaneError> {
        let (id, base) = {
            let installed = self.installed();
            (
                installed.backend_id(key, backend),
                installed.backend_base(key, backend),
            )
        };
        match id {
            Some(id) => {
                let now = Self::percpu_sum(&self.skel.maps.backend_stats, "backend_stats", id)?;
                Ok(Some(Counter {
                    packets: base.packets + now.packets,
                    bytes: base.bytes + now.bytes,
                }))
            }
            None => Ok(None),
        }
    }

    /// The backend ids of a VIP's published table, as the kernel holds them,
    /// translated back to addresses (for checks and digests).
    pub fn published_table(&self, key: &VipKey) -> Result<Option<Vec<IpAddr>>, DataplaneError> {
        let view = self.installed().table_view(key);
        let Some((table_id, fixed, by_id)) = view else {
            return Ok(None);
        };
        let tables = self.maps().tables;
        let Some(slots) = tables.read(table_id, fixed)? else {
            return Ok(None);
        };
        Ok(Some(
            slots
                .iter()
                .map(|id| by_id.get(id).copied().unwrap_or(IpAddr::from([0u8; 4])))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi;

    /// The maps' sizes are what the Rust side allocates ids against.
    /// Opening (not loading) needs no privileges.
    #[test]
    fn map_sizes_match_the_abi_constants() {
        let mut storage = MaybeUninit::uninit();
        let open = LetheSkelBuilder::default()
            .open(&mut storage)
            .expect("open object");
        let m = &open.maps;
        assert_eq!(m.vips.max_entries(), abi::MAX_VIPS);
        assert_eq!(m.vip_stats.max_entries(), abi::MAX_VIPS);
        assert_eq!(m.tables.max_entries(), abi::MAX_TABLES);
        assert_eq!(m.tables_fixed.max_entries(), abi::MAX_TABLES);
        assert_eq!(m.backends.max_entries(), abi::MAX_BACKENDS);
        assert_eq!(m.backend_stats.max_entries(), abi::MAX_BACKENDS);
        assert_eq!(m.tx_ports.max_entries(), abi::MAX_TX_PORTS);
        assert_eq!(m.reason_stats.max_entries(), abi::REASON_COUNT);
        assert_eq!(
            m.vips.key_size() as usize,
            size_of::<types::lethe_vip_key>()
        );
        assert_eq!(m.vips.value_size() as usize, size_of::<types::lethe_vip>());
        assert_eq!(
            m.backends.value_size() as usize,
            size_of::<types::lethe_backend>()
        );
        for map in [&m.lb_config, &m.data_config] {
            assert_eq!(map.value_size() as usize, size_of::<types::lethe_config>());
        }
        for map in [&m.nexthop_ctl, &m.data_nexthop_ctl] {
            assert_eq!(
                map.value_size() as usize,
                size_of::<types::lethe_nexthop_ctl>()
            );
        }
    }
}
