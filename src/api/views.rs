//! The shapes the API answers with, beyond the configuration itself.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiError;
use crate::config::HealthCheck;
use crate::control::{agrees, Controller, HealthBook, Snapshot, Stats, TraceReport};
use crate::events::format_time;
use crate::health::HealthState;
use crate::plan::PlannedVip;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BackendView {
    #[schema(value_type = String, format = "ip")]
    pub address: IpAddr,
    /// The destination port (the VIP's unless set).
    pub port: u16,
    pub weight: u32,
    /// `up`, `down`, or `unchecked` (the VIP has no health check).
    pub health: String,
    /// When the health state last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_since: Option<String>,
    /// The last failed check's error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
    /// Slots of the VIP's table this backend holds (0: out of the table:
    /// weight 0, or down).
    pub slots: u32,
}

pub fn backend_views(
    snap: &Snapshot,
    health: &HealthBook,
    vip: &str,
) -> Result<Vec<BackendView>, ApiError> {
    let planned = snap
        .plan
        .vip_by_name(vip)
        .ok_or_else(|| ApiError::not_found(format!("no VIP named {vip:?}")))?;
    let counts = planned.table.slot_counts();
    let checked = !matches!(planned.vip.health_check, HealthCheck::None);
    Ok(planned
        .vip
        .backends
        .iter()
        .map(|b| {
            let h = health.get(&(vip.to_string(), b.address));
            let state = match (checked, h) {
                (false, _) => "unchecked",
                (true, Some(h)) if h.state == HealthState::Down => "down",
                (true, _) => "up",
            };
            BackendView {
                address: b.address,
                port: planned.vip.backend_port(b),
                weight: b.weight,
                health: state.to_string(),
                health_since: h.filter(|_| checked).map(|h| format_time(h.since)),
                last_error: h.filter(|_| checked).and_then(|h| h.last_error.clone()),
                last_check: h
                    .filter(|_| checked)
                    .and_then(|h| h.last_check.map(format_time)),
                slots: planned
                    .table
                    .backends
                    .iter()
                    .position(|a| *a == b.address)
                    .map_or(0, |i| counts[i]),
            }
        })
        .collect())
}

pub fn backend_view(
    snap: &Snapshot,
    health: &HealthBook,
    vip: &str,
    address: IpAddr,
) -> Result<BackendView, ApiError> {
    backend_views(snap, health, vip)?
        .into_iter()
        .find(|b| b.address == address)
        .ok_or_else(|| ApiError::not_found(format!("VIP {vip:?} has no backend {address}")))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TableShare {
    #[schema(value_type = String, format = "ip")]
    pub address: IpAddr,
    pub weight: u32,
    pub slots: u32,
    /// slots / size.
    pub share: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TableView {
    pub vip: String,
    pub size: u32,
    /// SHA-256 of slot -> backend, from the configuration: the same on every
    /// node with the same configuration. Null when no backend is in the table.
    pub digest: Option<String>,
    /// The same digest, of the table the kernel holds now.
    pub published_digest: Option<String>,
    /// Backends out of the table because their health check says down.
    #[schema(value_type = Vec<String>)]
    pub down: Vec<IpAddr>,
    /// Every backend is down, so all are in the table (fail open).
    pub failed_open: bool,
    pub backends: Vec<TableShare>,
}

pub fn table_view(planned: &PlannedVip, published: Option<String>) -> TableView {
    let counts = planned.table.slot_counts();
    let size = planned.vip.table_size;
    TableView {
        vip: planned.vip.name.clone(),
        size,
        digest: (!planned.table.is_empty()).then(|| planned.table.digest()),
        published_digest: published,
        down: planned.down.clone(),
        failed_open: planned.failed_open,
        backends: planned
            .vip
            .backends
            .iter()
            .map(|b| {
                let slots = planned
                    .table
                    .backends
                    .iter()
                    .position(|a| *a == b.address)
                    .map_or(0, |i| counts[i]);
                TableShare {
                    address: b.address,
                    weight: b.weight,
                    slots,
                    share: f64::from(slots) / f64::from(size),
                }
            })
            .collect(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TraceSide {
    /// `tx`, `redirect`, `pass`, `drop` (kernel only).
    pub verdict: Option<String>,
    /// Why, as the metric label (kernel), or why no backend (model).
    pub reason: Option<String>,
    pub vip: Option<String>,
    #[schema(value_type = Option<String>, format = "ip")]
    pub backend: Option<IpAddr>,
    pub hash: Option<u32>,
    pub slot: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TraceView {
    pub flow: String,
    /// From the reference model and the current tables.
    pub model: TraceSide,
    /// From the kernel program, a probe frame through BPF_PROG_TEST_RUN.
    pub kernel: TraceSide,
    /// Whether both chose the same backend (or both none, for one reason).
    pub agree: bool,
}

pub fn trace_view(r: &TraceReport) -> TraceView {
    let vip_name = |key: Option<crate::plan::VipKey>| {
        key.and_then(|k| r.plan.vips.iter().find(|v| v.key() == k))
            .map(|v| v.vip.name.clone())
    };
    let model = match &r.model {
        Ok(p) => TraceSide {
            verdict: None,
            reason: None,
            vip: Some(r.plan.vips[p.vip].vip.name.clone()),
            backend: Some(p.backend),
            hash: Some(p.hash),
            slot: Some(p.slot),
        },
        Err(reason) => TraceSide {
            verdict: None,
            reason: Some(reason.name().to_string()),
            vip: None,
            backend: None,
            hash: None,
            slot: None,
        },
    };
    let k = &r.kernel;
    let kernel = TraceSide {
        verdict: k.action.map(|a| a.name().to_string()),
        reason: k.reason.map(|x| x.name().to_string()),
        vip: vip_name(k.vip),
        backend: k.backend,
        hash: k.hash,
        slot: None,
    };
    let f = &r.flow;
    TraceView {
        flow: format!(
            "{} {} -> {}",
            crate::config::Protocol::from_number(f.proto)
                .map_or("?".to_string(), |p| p.to_string()),
            SocketAddr::new(f.src, f.sport),
            SocketAddr::new(f.dst, f.dport)
        ),
        model,
        kernel,
        agree: agrees(r),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CounterView {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BackendStats {
    #[schema(value_type = String, format = "ip")]
    pub address: IpAddr,
    /// Packets forwarded to this backend.
    pub packets: u64,
    pub bytes: u64,
    /// `up`, `down` or `unchecked`.
    pub health: String,
    pub last_error: Option<String>,
    pub checks_ok: u64,
    pub checks_failed: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VipStatsView {
    pub name: String,
    /// Packets matched to this VIP, whatever became of them.
    pub packets: u64,
    pub bytes: u64,
    /// nat VIPs: packets of the return path (backend -> client).
    pub return_packets: u64,
    pub return_bytes: u64,
    pub failed_open: bool,
    pub backends: Vec<BackendStats>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventsView {
    /// Decision events the data plane wrote to its ring buffer.
    pub decisions_sent: u64,
    /// Decision events lost to a full ring buffer.
    pub decisions_lost_ring_full: u64,
    /// Events published to readers (decisions, health, changes).
    pub published: u64,
    /// Events readers lost by falling behind.
    pub lost_by_slow_readers: u64,
    pub readers: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ControlView {
    pub changes_applied: u64,
    pub changes_refused: u64,
    pub changes_failed: u64,
    pub last_table_build_us: u64,
    pub last_map_sync_us: u64,
    pub tables_built: u64,
    pub ready: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsView {
    /// Every exit of the XDP program, by reason (summed over CPUs).
    pub reasons: BTreeMap<String, CounterView>,
    pub vips: Vec<VipStatsView>,
    pub events: EventsView,
    pub control: ControlView,
}

pub fn stats_view(stats: &Stats, control: &Controller, snap: &Snapshot) -> StatsView {
    let c = &control.stats;
    let health = control.health();
    StatsView {
        reasons: stats
            .reasons
            .iter()
            .map(|(r, n)| {
                (
                    r.name().to_string(),
                    CounterView {
                        packets: n.packets,
                        bytes: n.bytes,
                    },
                )
            })
            .collect(),
        vips: stats
            .vips
            .iter()
            .map(|v| {
                let planned = snap.plan.vip_by_name(&v.name);
                let checked =
                    planned.is_some_and(|p| !matches!(p.vip.health_check, HealthCheck::None));
                VipStatsView {
                    name: v.name.clone(),
                    packets: v.vip.packets,
                    bytes: v.vip.bytes,
                    return_packets: v.returned.packets,
                    return_bytes: v.returned.bytes,
                    failed_open: planned.is_some_and(|p| p.failed_open),
                    backends: v
                        .backends
                        .iter()
                        .map(|(a, n)| {
                            let h = health.get(&(v.name.clone(), *a));
                            BackendStats {
                                address: *a,
                                packets: n.packets,
                                bytes: n.bytes,
                                health: match (checked, h.map(|h| h.state)) {
                                    (false, _) => "unchecked",
                                    (true, Some(HealthState::Down)) => "down",
                                    (true, _) => "up",
                                }
                                .to_string(),
                                last_error: h.and_then(|h| h.last_error.clone()),
                                checks_ok: h.map_or(0, |h| h.checks_ok),
                                checks_failed: h.map_or(0, |h| h.checks_failed),
                            }
                        })
                        .collect(),
                }
            })
            .collect(),
        events: EventsView {
            decisions_sent: stats.events_sent,
            decisions_lost_ring_full: stats.events_lost,
            published: control.events.published.load(Ordering::Relaxed),
            lost_by_slow_readers: control.events.lost.load(Ordering::Relaxed),
            readers: control.events.readers(),
        },
        control: ControlView {
            changes_applied: c.changes_applied.load(Ordering::Relaxed),
            changes_refused: c.changes_refused.load(Ordering::Relaxed),
            changes_failed: c.changes_failed.load(Ordering::Relaxed),
            last_table_build_us: c.last_build_us.load(Ordering::Relaxed),
            last_map_sync_us: c.last_sync_us.load(Ordering::Relaxed),
            tables_built: c.tables_built.load(Ordering::Relaxed),
            ready: control.is_ready(),
        },
    }
}
