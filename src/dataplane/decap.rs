//! The backend-side decap program (`bpf/decap.bpf.c`): load (pinned, so it
//! outlives the command that installs it), configure (GUE port, the host's
//! addresses), attach, count, and run on test frames.

use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::Path;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject, ProgramInput};

use super::attach::{self, AttachMode, LinkOutcome, XdpLink};
use super::records::{addr_bytes, Pod};
use super::{pin, Counter, DataplaneError, TestRun};
use crate::abi::{Action, DecapReason};

mod skel {
    #![allow(
        clippy::all,
        non_camel_case_types,
        unused_imports,
        dead_code,
        unused_qualifications
    )]
    include!(concat!(env!("OUT_DIR"), "/decap.skel.rs"));
}

pub use skel::types::{lethe_decap_config, lethe_local_addr};

impl Pod for lethe_decap_config {}
impl Pod for lethe_local_addr {}

pub struct DecapProgram {
    skel: skel::DecapSkel<'static>,
}

impl DecapProgram {
    /// Loads with maps of its own (tests).
    pub fn load() -> Result<DecapProgram, DataplaneError> {
        Self::load_with(None)
    }

    /// Loads with maps pinned in `dir`, reusing those already there.
    pub fn load_pinned(dir: &Path) -> Result<DecapProgram, DataplaneError> {
        std::fs::create_dir_all(dir).map_err(|source| DataplaneError::Os {
            what: "creating the pin directory",
            source,
        })?;
        Self::load_with(Some(dir))
    }

    fn load_with(pin_dir: Option<&Path>) -> Result<DecapProgram, DataplaneError> {
        // As for the main program: a pointer-sized leak per load.
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = skel::DecapSkelBuilder::default()
            .open(storage)
            .map_err(DataplaneError::Load)?;
        if let Some(dir) = pin_dir {
            for mut map in open.open_object_mut().maps_mut() {
                let name = map.name().to_string_lossy().into_owned();
                if pin::is_pinned_map(&name) {
                    map.set_pin_path(dir.join(&name))
                        .map_err(DataplaneError::Load)?;
                }
            }
        }
        Ok(DecapProgram {
            skel: open.load().map_err(DataplaneError::Load)?,
        })
    }

    /// Strips GUE to `gue_port` (0: not at all) and encapsulations whose
    /// outer destination is one of `local`.
    pub fn configure(&self, gue_port: u16, local: &[IpAddr]) -> Result<(), DataplaneError> {
        let cfg = lethe_decap_config {
            gue_port: u16::from_ne_bytes(gue_port.to_be_bytes()),
            ..Default::default()
        };
        self.skel
            .maps
            .decap_config
            .update(&0u32.to_ne_bytes(), cfg.as_bytes(), MapFlags::ANY)
            .map_err(|e| DataplaneError::map("decap_config", "update", e))?;
        let keys: Vec<lethe_local_addr> = local
            .iter()
            .map(|a| {
                let (addr, family) = addr_bytes(a);
                lethe_local_addr {
                    addr,
                    family,
                    ..Default::default()
                }
            })
            .collect();
        for k in &keys {
            self.skel
                .maps
                .decap_local
                .update(k.as_bytes(), &[1], MapFlags::ANY)
                .map_err(|e| DataplaneError::map("decap_local", "update", e))?;
        }
        let stale: Vec<Vec<u8>> = self
            .skel
            .maps
            .decap_local
            .keys()
            .filter(|k| !keys.iter().any(|x| x.as_bytes() == k.as_slice()))
            .collect();
        for k in stale {
            self.skel
                .maps
                .decap_local
                .delete(&k)
                .map_err(|e| DataplaneError::map("decap_local", "delete", e))?;
        }
        Ok(())
    }

    pub fn attach(&self, ifindex: u32, mode: AttachMode) -> Result<XdpLink, DataplaneError> {
        attach::attach(self.skel.progs.lethe_decap.as_fd(), ifindex, mode)
    }

    pub fn attach_pinned(
        &self,
        dir: &Path,
        ifname: &str,
        ifindex: u32,
        mode: AttachMode,
    ) -> Result<(XdpLink, LinkOutcome), DataplaneError> {
        let prog = self.skel.progs.lethe_decap.as_fd();
        let id = libbpf_rs::ProgramHandle::try_from(&self.skel.progs.lethe_decap)
            .map(|h| h.id())
            .map_err(DataplaneError::Load)?;
        attach::attach_pinned(prog, id, ifindex, mode, &super::pin::link_path(dir, ifname))
    }

    pub fn counters(&self) -> Result<Vec<(DecapReason, Counter)>, DataplaneError> {
        DecapReason::ALL
            .iter()
            .map(|&r| {
                let per_cpu = self
                    .skel
                    .maps
                    .decap_stats
                    .lookup_percpu(&(r as u32).to_ne_bytes(), MapFlags::ANY)
                    .map_err(|e| DataplaneError::map("decap_stats", "lookup", e))?
                    .unwrap_or_default();
                let mut c = Counter::default();
                for bytes in per_cpu {
                    if let Some(v) = super::records::lethe_counter::from_bytes(&bytes) {
                        c.packets += v.packets;
                        c.bytes += v.bytes;
                    }
                }
                Ok((r, c))
            })
            .collect()
    }

    /// One run on `frame` (as if received on ifindex 0).
    pub fn test_run(&self, frame: &[u8]) -> Result<TestRun, DataplaneError> {
        let mut out = vec![0u8; frame.len() + 64];
        let input = ProgramInput {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        };
        let o = self
            .skel
            .progs
            .lethe_decap
            .test_run(input)
            .map_err(DataplaneError::TestRun)?;
        Ok(TestRun {
            retval: o.return_value,
            action: Action::from_raw(o.return_value),
            frame: o.data.map(|d| d.to_vec()).unwrap_or_default(),
            duration: o.duration,
        })
    }
}
