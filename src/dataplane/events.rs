//! Decision events from the `events` ring buffer (struct lethe_event):
//! decoded into values, read on a thread of their own with a bounded poll
//! so the reader notices when it should stop.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use libbpf_rs::{MapHandle, RingBufferBuilder};

use super::records::{self, Pod};
use super::types::lethe_event;
use super::DataplaneError;
use crate::abi::{Action, Mode, Reason, EVENT_VERSION, NONE};

/// One decision, as the kernel wrote it (ids not yet resolved to names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// CLOCK_BOOTTIME nanoseconds.
    pub time_boot_ns: u64,
    pub action: Option<Action>,
    pub reason: Option<Reason>,
    pub mode: Option<Mode>,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub vip_id: u32,
    pub backend_id: Option<u32>,
    pub ifindex: u32,
}

impl Pod for lethe_event {}

fn mode_from(m: u8) -> Option<Mode> {
    Mode::ALL.iter().copied().find(|x| *x as u8 == m)
}

/// Decodes one ring buffer record; None for a record of another size or
/// version (a newer program than this reader).
pub fn decode(bytes: &[u8]) -> Option<RawEvent> {
    let e = lethe_event::from_bytes(bytes.get(..size_of::<lethe_event>())?)?;
    if e.version != EVENT_VERSION {
        return None;
    }
    Some(RawEvent {
        time_boot_ns: e.time_ns,
        action: Action::from_raw(u32::from(e.verdict)),
        reason: Reason::from_raw(u32::from(e.reason)),
        mode: mode_from(e.mode),
        proto: e.proto,
        src: records::addr_from(&e.src, e.family)?,
        dst: records::addr_from(&e.dst, e.family)?,
        sport: records::port_from(e.sport),
        dport: records::port_from(e.dport),
        vip_id: e.vip_id,
        backend_id: (e.backend_id != NONE).then_some(e.backend_id),
        ifindex: e.ifindex,
    })
}

/// Reads events until `stop` is set, calling `sink` for each one decoded.
/// Blocks: run it on a thread of its own. Wakes at least every 100 ms.
pub fn read_events(
    ring: MapHandle,
    stop: &AtomicBool,
    mut sink: impl FnMut(RawEvent),
) -> Result<(), DataplaneError> {
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&ring, |bytes: &[u8]| {
            if let Some(e) = decode(bytes) {
                sink(e);
            }
            0
        })
        .map_err(|e| DataplaneError::map("events", "ring buffer", e))?;
    let rb = builder
        .build()
        .map_err(|e| DataplaneError::map("events", "ring buffer", e))?;
    while !stop.load(Ordering::Relaxed) {
        match rb.poll(Duration::from_millis(100)) {
            Ok(()) => {}
            Err(e) if e.kind() == libbpf_rs::ErrorKind::Interrupted => {}
            Err(e) => return Err(DataplaneError::map("events", "poll", e)),
        }
    }
    Ok(())
}
