//! The event stream: sampled decisions from the data plane, health
//! transitions and accepted changes from the control plane, fanned out to
//! any number of readers (`GET /v1/events`, `lethe tail`) through a bounded
//! broadcast channel. A slow reader loses events — counted, and told — and
//! never slows the others or the data plane.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::dataplane::events::{read_events, RawEvent};
use crate::dataplane::Dataplane;

/// Events a reader may fall behind by before it starts losing them.
pub const CHANNEL_CAPACITY: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A sampled packet and what the XDP program did with it.
    Decision {
        time: String,
        vip: Option<String>,
        #[schema(value_type = Option<String>)]
        backend: Option<IpAddr>,
        proto: String,
        #[schema(value_type = String)]
        src: IpAddr,
        sport: u16,
        #[schema(value_type = String)]
        dst: IpAddr,
        dport: u16,
        mode: Option<String>,
        verdict: Option<String>,
        reason: Option<String>,
        ifindex: u32,
        iface: Option<String>,
    },
    /// A backend turned up or down.
    Health {
        time: String,
        vip: String,
        #[schema(value_type = String)]
        backend: IpAddr,
        state: String,
        error: Option<String>,
    },
    /// Every backend of a VIP is down (fail open: all stay in the table),
    /// or the VIP has recovered from that.
    FailOpen {
        time: String,
        vip: String,
        failed_open: bool,
    },
    /// An accepted configuration change.
    Config {
        time: String,
        change: String,
        etag: String,
    },
    /// This reader fell behind and lost `count` events.
    Lost { time: String, count: u64 },
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Decision { .. } => "decision",
            Event::Health { .. } => "health",
            Event::FailOpen { .. } => "fail_open",
            Event::Config { .. } => "config",
            Event::Lost { .. } => "lost",
        }
    }

    pub fn vip(&self) -> Option<&str> {
        match self {
            Event::Decision { vip, .. } => vip.as_deref(),
            Event::Health { vip, .. } | Event::FailOpen { vip, .. } => Some(vip),
            _ => None,
        }
    }

    pub fn backend(&self) -> Option<IpAddr> {
        match self {
            Event::Decision { backend, .. } => *backend,
            Event::Health { backend, .. } => Some(*backend),
            _ => None,
        }
    }

    pub fn verdict(&self) -> Option<&str> {
        match self {
            Event::Decision { verdict, .. } => verdict.as_deref(),
            _ => None,
        }
    }
}

pub fn now() -> String {
    format_time(SystemTime::now())
}

pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Wall-clock time of a CLOCK_BOOTTIME instant.
fn boot_to_wall(boot_ns: u64) -> SystemTime {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    let now_boot = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
    let event = Duration::from_nanos(boot_ns);
    let now = SystemTime::now();
    if event <= now_boot {
        now - (now_boot - event)
    } else {
        now + (event - now_boot)
    }
}

/// The fan-out point of every event.
pub struct EventHub {
    tx: broadcast::Sender<Arc<Event>>,
    /// Events readers lost by falling behind, over all readers.
    pub lost: Arc<AtomicU64>,
    pub published: AtomicU64,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub {
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
            lost: Arc::new(AtomicU64::new(0)),
            published: AtomicU64::new(0),
        }
    }
}

/// One reader of the events (an SSE client). What it loses by falling
/// behind is counted in the hub's `lost` when it learns of it (a `Lost`
/// event in its stream), and, for a reader that stalled and then went
/// away without reading on, when it is dropped: the channel only tells a
/// reader of its losses on its next read, which such a reader never makes.
pub struct Reader {
    rx: broadcast::Receiver<Arc<Event>>,
    lost: Arc<AtomicU64>,
}

impl Reader {
    /// The next event, or a `Lost` notice of how many went by unread;
    /// None once the hub is gone.
    pub async fn next(&mut self) -> Option<Arc<Event>> {
        match self.rx.recv().await {
            Ok(e) => Some(e),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                self.lost.fetch_add(n, Ordering::Relaxed);
                Some(Arc::new(Event::Lost {
                    time: now(),
                    count: n,
                }))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Beyond the channel's capacity, what it had yet to read was
        // overwritten: lost, not merely unread.
        let gone = self.rx.len().saturating_sub(CHANNEL_CAPACITY) as u64;
        if gone > 0 {
            self.lost.fetch_add(gone, Ordering::Relaxed);
        }
    }
}

impl EventHub {
    pub fn publish(&self, e: Event) {
        self.published.fetch_add(1, Ordering::Relaxed);
        // No receiver is fine: nobody is listening.
        let _ = self.tx.send(Arc::new(e));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// A reader whose losses are counted (see `Reader`).
    pub fn reader(&self) -> Reader {
        Reader {
            rx: self.tx.subscribe(),
            lost: self.lost.clone(),
        }
    }

    pub fn readers(&self) -> usize {
        self.tx.receiver_count()
    }
}

fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    Some(
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// A decision event with its ids resolved to names.
pub fn decision(
    dp: &Dataplane,
    names: &dyn Fn(&crate::plan::VipKey) -> Option<String>,
    e: &RawEvent,
) -> Event {
    let (vip, backend) = dp.resolve(e.vip_id, e.backend_id);
    Event::Decision {
        time: format_time(boot_to_wall(e.time_boot_ns)),
        vip: vip.as_ref().and_then(names),
        backend,
        proto: crate::config::Protocol::from_number(e.proto)
            .map_or_else(|| e.proto.to_string(), |p| p.to_string()),
        src: e.src,
        sport: e.sport,
        dst: e.dst,
        dport: e.dport,
        mode: e.mode.map(|m| m.name().to_string()),
        verdict: e.action.map(|a| a.name().to_string()),
        reason: e.reason.map(|r| r.name().to_string()),
        ifindex: e.ifindex,
        iface: ifname(e.ifindex),
    }
}

/// Reads decision events on a thread of its own (the ring buffer poll
/// blocks) until `stop`, publishing each through `publish`.
pub fn spawn_decision_reader(
    dp: Arc<Dataplane>,
    stop: Arc<AtomicBool>,
    publish: impl Fn(&RawEvent) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let ring = dp
        .event_ring()
        .map_err(|e| std::io::Error::other(crate::control::error_chain(&e)))?;
    std::thread::Builder::new()
        .name("lethe-events".into())
        .spawn(move || {
            if let Err(e) = read_events(ring, &stop, |raw| publish(&raw)) {
                tracing::error!(error = %crate::control::error_chain(&e), "decision event reader stopped");
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(hub: &EventHub, n: usize) {
        for _ in 0..n {
            hub.publish(Event::FailOpen {
                time: now(),
                vip: "web".into(),
                failed_open: true,
            });
        }
    }

    #[test]
    fn a_reader_that_stalls_and_goes_away_has_its_losses_counted() {
        let hub = EventHub::default();
        let stalled = hub.reader();
        publish(&hub, CHANNEL_CAPACITY + 100);
        assert_eq!(hub.lost.load(Ordering::Relaxed), 0, "not known yet");
        drop(stalled);
        assert_eq!(hub.lost.load(Ordering::Relaxed), 100);

        // One that is only behind, within the capacity, lost nothing.
        let behind = hub.reader();
        publish(&hub, 10);
        drop(behind);
        assert_eq!(hub.lost.load(Ordering::Relaxed), 100);
    }

    #[tokio::test]
    async fn a_reader_that_reads_on_is_told_and_counted_once() {
        let hub = EventHub::default();
        let mut r = hub.reader();
        publish(&hub, CHANNEL_CAPACITY + 7);
        match r.next().await.as_deref() {
            Some(Event::Lost { count, .. }) => assert_eq!(*count, 7),
            other => panic!("{other:?}"),
        }
        assert_eq!(hub.lost.load(Ordering::Relaxed), 7);
        for _ in 0..CHANNEL_CAPACITY {
            assert!(matches!(
                r.next().await.as_deref(),
                Some(Event::FailOpen { .. })
            ));
        }
        drop(r);
        assert_eq!(hub.lost.load(Ordering::Relaxed), 7, "counted twice");
    }
}
