//! The data plane: the only module that touches the BPF skeleton, its maps
//! and `unsafe`. Everything else talks to it through [`Dataplane`]'s typed
//! API: `apply(plan)`, `allow_tx_port`, `attach`, counters and `test_run`.

mod apply;
mod attach;
mod records;
mod skel;
mod table;

use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use std::os::fd::AsFd;

use libbpf_rs::{MapCore, MapFlags, OpenObject, ProgramInput};
use thiserror::Error;

use crate::abi::{Action, Reason, REASON_COUNT};
use crate::plan::VipKey;

pub use attach::{AttachMode, XdpLink};
pub use records::Pod;
pub use skel::types;

use apply::Installed;
use skel::{LetheSkel, LetheSkelBuilder};

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
    installed: Mutex<Installed>,
}

impl Dataplane {
    /// Opens and loads the program (verifier included). Nothing is attached.
    pub fn load() -> Result<Dataplane, DataplaneError> {
        // The skeleton borrows its object storage for its whole life; the
        // daemon keeps one data plane for the process's life, and tests a
        // few, so a leaked pointer-sized box per load is the simple answer.
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let open = LetheSkelBuilder::default()
            .open(storage)
            .map_err(DataplaneError::Load)?;
        let skel = open.load().map_err(DataplaneError::Load)?;
        Ok(Dataplane {
            skel,
            installed: Mutex::new(Installed::default()),
        })
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
            .map_err(|e| DataplaneError::map("tx_ports", "update", e))
    }

    /// Makes the maps hold `plan`: VIPs, backends, tables, seed. Tables are
    /// swapped atomically; what is unchanged is not rewritten.
    pub fn apply(&self, plan: &crate::plan::Plan) -> Result<(), DataplaneError> {
        let maps = apply::Maps {
            config: &self.skel.maps.lb_config,
            vips: &self.skel.maps.vips,
            tables: &self.skel.maps.tables,
            backends: &self.skel.maps.backends,
            vip_stats: &self.skel.maps.vip_stats,
            backend_stats: &self.skel.maps.backend_stats,
        };
        self.installed().apply(&maps, plan)
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
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
        // Room for the largest outer header the program pushes.
        let mut out = vec![0u8; frame.len() + 256];
        let input = ProgramInput {
            data_in: Some(frame),
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
        let frame = output.data.map(|d| d.to_vec()).unwrap_or_default();
        Ok(TestRun {
            retval: output.return_value,
            action: Action::from_raw(output.return_value),
            frame,
            duration: output.duration,
        })
    }

    fn percpu_sum(
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

    /// Packets matched to a VIP, whatever became of them. `None` if the VIP
    /// is not installed.
    pub fn vip_counter(&self, key: &VipKey) -> Result<Option<Counter>, DataplaneError> {
        let id = self.installed().vip_id(key);
        match id {
            Some(id) => Self::percpu_sum(&self.skel.maps.vip_stats, "vip_stats", id).map(Some),
            None => Ok(None),
        }
    }

    /// Packets forwarded to a backend of a VIP.
    pub fn backend_counter(
        &self,
        key: &VipKey,
        backend: IpAddr,
    ) -> Result<Option<Counter>, DataplaneError> {
        let id = self.installed().backend_id(key, backend);
        match id {
            Some(id) => {
                Self::percpu_sum(&self.skel.maps.backend_stats, "backend_stats", id).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The backend ids of a VIP's published table, as the kernel holds them,
    /// translated back to addresses (for checks and digests).
    pub fn published_table(&self, key: &VipKey) -> Result<Option<Vec<IpAddr>>, DataplaneError> {
        let view = self.installed().table_view(key);
        let Some((table_id, by_id)) = view else {
            return Ok(None);
        };
        let Some(slots) = table::read(&self.skel.maps.tables, table_id)? else {
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
        assert_eq!(
            m.lb_config.value_size() as usize,
            size_of::<types::lethe_config>()
        );
    }
}
