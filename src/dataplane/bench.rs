//! What the benchmarks need beyond `test_run`: BPF_PROG_TEST_RUN with a
//! repeat count, reporting only the verdict and the kernel's own duration
//! (nothing copied back), for Lethe's program and the XDP_PASS floor alike;
//! the traffic generator and sinks of `bpf/bench.bpf.c` for live frames;
//! and pinning the calling thread to one CPU.

use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{libbpf_sys, MapCore, MapFlags, OpenObject, ProgramInput, ProgramMut};

use super::attach::{self, AttachMode, XdpLink};
use super::{Dataplane, DataplaneError, PassProgram};

mod skel {
    #![allow(
        clippy::all,
        non_camel_case_types,
        unused_imports,
        dead_code,
        unused_qualifications
    )]
    include!(concat!(env!("OUT_DIR"), "/bench.skel.rs"));
}

/// One BPF_PROG_TEST_RUN call, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed {
    /// The program's return value (of the last repetition).
    pub retval: u32,
    /// Kernel-measured nanoseconds per repetition: the time around the
    /// program's runs divided by `repeat`, truncated to whole ns.
    pub ns: u32,
}

/// `struct xdp_md` for a frame of `len` bytes received on `ingress_ifindex`
/// (0: no device), without metadata.
fn xdp_md(len: usize, ingress_ifindex: u32) -> [u8; 24] {
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    ctx
}

fn timed(
    prog: &ProgramMut<'_>,
    frame: &[u8],
    ingress_ifindex: u32,
    repeat: u32,
) -> Result<Timed, DataplaneError> {
    let mut ctx = xdp_md(frame.len(), ingress_ifindex);
    let input = ProgramInput {
        data_in: Some(frame),
        context_in: Some(&mut ctx),
        repeat,
        ..Default::default()
    };
    let out = prog.test_run(input).map_err(DataplaneError::TestRun)?;
    Ok(Timed {
        retval: out.return_value,
        // The kernel reports a u32; the Duration only carries it.
        ns: out.duration.as_nanos() as u32,
    })
}

impl Dataplane {
    /// Runs the program `repeat` times on `frame` (the kernel does not
    /// restore the frame between repetitions) and returns the verdict and
    /// the kernel-measured time per run. Counters move as for any packet.
    pub fn timed_run(
        &self,
        frame: &[u8],
        ingress_ifindex: u32,
        repeat: u32,
    ) -> Result<Timed, DataplaneError> {
        timed(&self.skel.progs.lethe_xdp, frame, ingress_ifindex, repeat)
    }
}

impl PassProgram {
    /// As [`Dataplane::timed_run`], for the XDP_PASS floor.
    pub fn timed_run(
        &self,
        frame: &[u8],
        ingress_ifindex: u32,
        repeat: u32,
    ) -> Result<Timed, DataplaneError> {
        timed(self.program(), frame, ingress_ifindex, repeat)
    }
}

/// Bytes of a generator template (`GEN_MAX_LEN` in bpf/bench.bpf.c).
pub const GEN_MAX_LEN: usize = 128;

/// The programs of `bpf/bench.bpf.c`: a live-frames traffic generator, a
/// dropping sink and a trivial XDP_TX forwarder.
pub struct TrafficGenerator {
    skel: skel::BenchSkel<'static>,
    /// The template's length: the size of the frames the kernel allocates.
    len: usize,
}

impl TrafficGenerator {
    pub fn load() -> Result<TrafficGenerator, DataplaneError> {
        // As for the main program: a pointer-sized leak per load.
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let open = skel::BenchSkelBuilder::default()
            .open(storage)
            .map_err(DataplaneError::Load)?;
        Ok(TrafficGenerator {
            skel: open.load().map_err(DataplaneError::Load)?,
            len: 0,
        })
    }

    /// The frame every generated packet starts as; `sport_off` is the offset
    /// of its TCP/UDP source port, randomised per packet.
    pub fn set_frame(&mut self, frame: &[u8], sport_off: usize) -> Result<(), DataplaneError> {
        assert!(
            (14..=GEN_MAX_LEN).contains(&frame.len()) && sport_off + 2 <= frame.len(),
            "generator frames are 14..={GEN_MAX_LEN} bytes"
        );
        // struct gen_template: len, sport_off, frame[GEN_MAX_LEN].
        let mut value = vec![0u8; 8 + GEN_MAX_LEN];
        value[0..4].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        value[4..8].copy_from_slice(&(sport_off as u32).to_ne_bytes());
        value[8..8 + frame.len()].copy_from_slice(frame);
        self.skel
            .maps
            .gen_template
            .update(&0u32.to_ne_bytes(), &value, MapFlags::ANY)
            .map_err(|e| DataplaneError::map("gen_template", "update", e))?;
        self.len = frame.len();
        Ok(())
    }

    /// Generates `frames` packets from the template in live-frames mode and
    /// sends each out of `ifindex` (XDP_TX of the run's ingress device):
    /// into the peer of a veth. Returns the kernel-measured time per frame,
    /// which includes the softirq work the frames cause on this CPU only
    /// where it ran inside the call.
    pub fn send(&self, ifindex: u32, frames: u32) -> Result<Duration, DataplaneError> {
        assert!(self.len != 0, "set_frame before send");
        // The initial bytes do not matter: the program writes the template.
        let frame = [0u8; GEN_MAX_LEN];
        let mut ctx = xdp_md(self.len, ifindex);
        let input = ProgramInput {
            data_in: Some(&frame[..self.len]),
            context_in: Some(&mut ctx),
            repeat: frames,
            flags: libbpf_sys::BPF_F_TEST_XDP_LIVE_FRAMES,
            ..Default::default()
        };
        self.skel
            .progs
            .bench_gen
            .test_run(input)
            .map(|o| o.duration)
            .map_err(DataplaneError::TestRun)
    }

    /// Attaches the dropping sink to `ifindex` (native mode).
    pub fn attach_drop(&self, ifindex: u32) -> Result<XdpLink, DataplaneError> {
        attach::attach(
            self.skel.progs.bench_drop.as_fd(),
            ifindex,
            AttachMode::Native,
        )
    }

    /// Attaches the trivial forwarder (every frame back out) to `ifindex`.
    pub fn attach_tx(&self, ifindex: u32) -> Result<XdpLink, DataplaneError> {
        attach::attach(
            self.skel.progs.bench_tx.as_fd(),
            ifindex,
            AttachMode::Native,
        )
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_thread_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data, zeroed is the empty set; CPU_SET
    // bounds-checks the index; sched_setaffinity(0, ...) affects only the
    // calling thread and reads the set we pass with its size.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
