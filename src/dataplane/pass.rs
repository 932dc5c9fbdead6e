//! The trivial XDP_PASS program (`bpf/pass.bpf.c`): the benchmarks' floor,
//! and what tests attach to veth peers so XDP_TX frames arrive there.

use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{OpenObject, ProgramInput};

use super::attach::{self, AttachMode, XdpLink};
use super::DataplaneError;

mod skel {
    #![allow(
        clippy::all,
        non_camel_case_types,
        unused_imports,
        dead_code,
        unused_qualifications
    )]
    include!(concat!(env!("OUT_DIR"), "/pass.skel.rs"));
}

pub struct PassProgram {
    skel: skel::PassSkel<'static>,
}

impl PassProgram {
    pub fn load() -> Result<PassProgram, DataplaneError> {
        // As for the main program: a pointer-sized leak per load.
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let open = skel::PassSkelBuilder::default()
            .open(storage)
            .map_err(DataplaneError::Load)?;
        Ok(PassProgram {
            skel: open.load().map_err(DataplaneError::Load)?,
        })
    }

    pub fn attach(&self, ifindex: u32, mode: AttachMode) -> Result<XdpLink, DataplaneError> {
        attach::attach(self.skel.progs.xdp_pass.as_fd(), ifindex, mode)
    }

    /// Pins the program at `path` (tests pin it where another build's
    /// program would be).
    pub fn pin(&mut self, path: &std::path::Path) -> Result<(), DataplaneError> {
        self.skel
            .progs
            .xdp_pass
            .pin(path)
            .map_err(DataplaneError::Load)
    }

    /// The program, for the benchmarks' runs (bench.rs).
    pub(super) fn program(&self) -> &libbpf_rs::ProgramMut<'static> {
        &self.skel.progs.xdp_pass
    }

    /// One run on `frame` (repeat times); the kernel-measured time per run.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<Duration, DataplaneError> {
        let mut out = vec![0u8; frame.len() + 256];
        let input = ProgramInput {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        };
        self.skel
            .progs
            .xdp_pass
            .test_run(input)
            .map(|o| o.duration)
            .map_err(DataplaneError::TestRun)
    }
}
