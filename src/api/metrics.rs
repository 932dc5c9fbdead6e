//! GET /metrics: the Prometheus text exposition format (version 0.0.4).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::{ApiError, ApiState};
use crate::control::{Snapshot, Stats};

/// Label values escape backslash, quote and newline.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A family of one unlabelled sample: its header and `name value`, the
/// name written once.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

pub fn render(stats: &Stats, state: &ApiState, snap: &Snapshot) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "lethe_packets_total",
        "counter",
        "Packets leaving the XDP program, by verdict and reason.",
    );
    for (r, c) in &stats.reasons {
        let verdict = match r {
            crate::abi::Reason::FwdTx => "tx",
            crate::abi::Reason::FwdRedirect => "redirect",
            other => other.implied_action().name(),
        };
        let _ = writeln!(
            out,
            "lethe_packets_total{{verdict=\"{verdict}\",reason=\"{}\"}} {}",
            r.name(),
            c.packets
        );
    }
    family(
        &mut out,
        "lethe_bytes_total",
        "counter",
        "Bytes (frame length on arrival) leaving the XDP program, by reason.",
    );
    for (r, c) in &stats.reasons {
        let _ = writeln!(
            out,
            "lethe_bytes_total{{reason=\"{}\"}} {}",
            r.name(),
            c.bytes
        );
    }
    family(
        &mut out,
        "lethe_vip_packets_total",
        "counter",
        "Packets matched to a VIP.",
    );
    for v in &stats.vips {
        let _ = writeln!(
            out,
            "lethe_vip_packets_total{{vip=\"{}\"}} {}",
            label(&v.name),
            v.vip.packets
        );
    }
    family(
        &mut out,
        "lethe_vip_bytes_total",
        "counter",
        "Bytes matched to a VIP.",
    );
    for v in &stats.vips {
        let _ = writeln!(
            out,
            "lethe_vip_bytes_total{{vip=\"{}\"}} {}",
            label(&v.name),
            v.vip.bytes
        );
    }
    family(
        &mut out,
        "lethe_backend_packets_total",
        "counter",
        "Packets forwarded to a backend of a VIP.",
    );
    for v in &stats.vips {
        for (a, c) in &v.backends {
            let _ = writeln!(
                out,
                "lethe_backend_packets_total{{vip=\"{}\",backend=\"{a}\"}} {}",
                label(&v.name),
                c.packets
            );
        }
    }
    family(
        &mut out,
        "lethe_backend_bytes_total",
        "counter",
        "Bytes forwarded to a backend of a VIP.",
    );
    for v in &stats.vips {
        for (a, c) in &v.backends {
            let _ = writeln!(
                out,
                "lethe_backend_bytes_total{{vip=\"{}\",backend=\"{a}\"}} {}",
                label(&v.name),
                c.bytes
            );
        }
    }
    let health = state.control.health();
    family(
        &mut out,
        "lethe_backend_up",
        "gauge",
        "1 if a checked backend is up, 0 if down (unchecked backends are absent).",
    );
    // Each family's lines together (text format 0.0.4): the checks'
    // samples are gathered apart and written after their own header.
    let mut checks = String::new();
    for ((vip, addr), h) in &health {
        let up = u8::from(h.state == crate::health::HealthState::Up);
        let _ = writeln!(
            out,
            "lethe_backend_up{{vip=\"{}\",backend=\"{addr}\"}} {up}",
            label(vip)
        );
        let _ = writeln!(
            checks,
            "lethe_backend_checks_total{{vip=\"{}\",backend=\"{addr}\",result=\"ok\"}} {}",
            label(vip),
            h.checks_ok
        );
        let _ = writeln!(
            checks,
            "lethe_backend_checks_total{{vip=\"{}\",backend=\"{addr}\",result=\"failed\"}} {}",
            label(vip),
            h.checks_failed
        );
    }
    family(
        &mut out,
        "lethe_backend_checks_total",
        "counter",
        "Health checks of a backend, by result.",
    );
    out.push_str(&checks);
    family(
        &mut out,
        "lethe_vip_failed_open",
        "gauge",
        "1 while every backend of the VIP is down and all stay in the table.",
    );
    for v in &snap.plan.vips {
        let _ = writeln!(
            out,
            "lethe_vip_failed_open{{vip=\"{}\"}} {}",
            label(&v.vip.name),
            u8::from(v.failed_open)
        );
    }
    family(
        &mut out,
        "lethe_decision_events_total",
        "counter",
        "Sampled decision events, written or lost to a full ring.",
    );
    let _ = writeln!(
        out,
        "lethe_decision_events_total{{result=\"sent\"}} {}",
        stats.events_sent
    );
    let _ = writeln!(
        out,
        "lethe_decision_events_total{{result=\"ring_full\"}} {}",
        stats.events_lost
    );
    single(
        &mut out,
        "lethe_events_lost_by_readers_total",
        "counter",
        "Events stream readers lost by falling behind.",
        state.control.events.lost.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        "lethe_event_readers",
        "gauge",
        "Connected event stream readers.",
        state.control.events.readers(),
    );
    let cs = &state.control.stats;
    family(
        &mut out,
        "lethe_config_changes_total",
        "counter",
        "Configuration changes, by result.",
    );
    for (result, n) in [
        ("applied", &cs.changes_applied),
        ("refused", &cs.changes_refused),
        ("failed", &cs.changes_failed),
    ] {
        let _ = writeln!(
            out,
            "lethe_config_changes_total{{result=\"{result}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    single(
        &mut out,
        "lethe_health_apply_failures_total",
        "counter",
        "Health changes the data plane refused to apply (each is retried).",
        cs.health_apply_failures.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        "lethe_change_restore_failures_total",
        "counter",
        "Refused changes whose previous state could not be put back at once (retried; not ready meanwhile).",
        cs.restore_failures.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        "lethe_tables_built_total",
        "counter",
        "Maglev tables built (unchanged ones are reused).",
        cs.tables_built.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        "lethe_last_table_build_seconds",
        "gauge",
        "Time the last change spent building tables.",
        format!(
            "{:.6}",
            cs.last_build_us.load(Ordering::Relaxed) as f64 / 1e6
        ),
    );
    single(
        &mut out,
        "lethe_last_map_sync_seconds",
        "gauge",
        "Time the last change spent writing the maps.",
        format!(
            "{:.6}",
            cs.last_sync_us.load(Ordering::Relaxed) as f64 / 1e6
        ),
    );
    single(
        &mut out,
        "lethe_ready",
        "gauge",
        "1 once attached and synced.",
        u8::from(state.control.is_ready()),
    );
    out
}

/// Prometheus metrics: per reason, per VIP, per backend, control plane.
#[utoipa::path(get, path = "/metrics", tag = "stats",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(s): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let stats = s.control.stats().await?;
    let snap = s.control.snapshot().await;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&stats, &s, &snap),
    ))
}
