//! Health checks: one tokio task per (VIP, backend) with a check, each
//! probing on its own schedule (a random start in the first interval, so a
//! thousand backends do not fire in step), counting consecutive results
//! against rise and fall, and telling the controller when a backend turns
//! up or down. The supervisor keeps the set of tasks equal to what the
//! configuration asks for.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::config::{CheckTiming, Config, HealthCheck};
use crate::control::Controller;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Up,
    Down,
}

/// What the checker knows of one backend.
#[derive(Debug, Clone)]
pub struct BackendHealth {
    pub state: HealthState,
    pub since: SystemTime,
    pub last_check: Option<SystemTime>,
    pub last_error: Option<String>,
    pub checks_ok: u64,
    pub checks_failed: u64,
    consecutive_ok: u32,
    consecutive_failed: u32,
}

impl BackendHealth {
    /// Backends start up: a new backend takes traffic at once, and a
    /// restarted daemon does not pull healthy backends from the tables.
    pub fn up() -> Self {
        Self::new(HealthState::Up, None)
    }

    pub fn down(reason: &str) -> Self {
        Self::new(HealthState::Down, Some(reason.to_string()))
    }

    fn new(state: HealthState, last_error: Option<String>) -> Self {
        BackendHealth {
            state,
            since: SystemTime::now(),
            last_check: None,
            last_error,
            checks_ok: 0,
            checks_failed: 0,
            consecutive_ok: 0,
            consecutive_failed: 0,
        }
    }

    /// Counts one probe result; returns the new state when it changed
    /// (rise consecutive successes bring a down backend up, fall
    /// consecutive failures take an up backend down).
    pub fn record(
        &mut self,
        result: &Result<(), String>,
        rise: u32,
        fall: u32,
    ) -> Option<HealthState> {
        self.last_check = Some(SystemTime::now());
        match result {
            Ok(()) => {
                self.checks_ok += 1;
                self.consecutive_ok += 1;
                self.consecutive_failed = 0;
            }
            Err(e) => {
                self.checks_failed += 1;
                self.consecutive_failed += 1;
                self.consecutive_ok = 0;
                self.last_error = Some(e.clone());
            }
        }
        let next = match self.state {
            HealthState::Up if self.consecutive_failed >= fall => HealthState::Down,
            HealthState::Down if self.consecutive_ok >= rise => HealthState::Up,
            s => s,
        };
        if next == self.state {
            return None;
        }
        self.state = next;
        self.since = SystemTime::now();
        Some(next)
    }
}

/// One backend's check, as the configuration asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    pub vip: String,
    pub backend: IpAddr,
    pub target: SocketAddr,
    /// Some(path, expected status) for HTTP, None for TCP.
    pub http: Option<(String, Option<u16>)>,
    pub timing: CheckTiming,
}

/// Every check the configuration asks for, by (VIP, backend).
pub fn checks(config: &Config) -> HashMap<(String, IpAddr), CheckSpec> {
    let mut out = HashMap::new();
    for v in &config.vips {
        let Some(timing) = v.health_check.timing() else {
            continue;
        };
        for b in &v.backends {
            let (port, http) = match &v.health_check {
                HealthCheck::Tcp { port, .. } => (*port, None),
                HealthCheck::Http {
                    port,
                    path,
                    expect_status,
                    ..
                } => (*port, Some((path.clone(), *expect_status))),
                HealthCheck::None => continue,
            };
            let port = port.unwrap_or_else(|| v.backend_port(b));
            out.insert(
                (v.name.clone(), b.address),
                CheckSpec {
                    vip: v.name.clone(),
                    backend: b.address,
                    target: SocketAddr::new(b.address, port),
                    http,
                    timing,
                },
            );
        }
    }
    out
}

fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}

async fn probe_inner(spec: &CheckSpec) -> Result<(), String> {
    let mut stream = TcpStream::connect(spec.target)
        .await
        .map_err(|e| describe(&e))?;
    let Some((path, expect)) = &spec.http else {
        return Ok(());
    };
    let host = match spec.target.ip() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: lethe-health\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        spec.target.port()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| describe(&e))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).await.map_err(|e| describe(&e))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status: u16 = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "no HTTP status line".to_string())?;
    let healthy = match expect {
        Some(want) => status == *want,
        None => (200..400).contains(&status),
    };
    if healthy {
        Ok(())
    } else {
        Err(format!("HTTP status {status}"))
    }
}

/// One probe, bounded by the check's timeout.
pub async fn probe(spec: &CheckSpec) -> Result<(), String> {
    let timeout = Duration::from_millis(u64::from(spec.timing.timeout_ms));
    match tokio::time::timeout(timeout, probe_inner(spec)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {} ms", spec.timing.timeout_ms)),
    }
}

async fn run_check(control: Arc<Controller>, spec: CheckSpec) {
    let interval = Duration::from_millis(u64::from(spec.timing.interval_ms));
    let offset = interval.mul_f64(rand::thread_rng().gen::<f64>());
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result = probe(&spec).await;
        control.report_health(&spec, result).await;
    }
}

/// Keeps one check task per (VIP, backend) the configuration asks for,
/// restarting a task whose check changed, until `cancel`.
pub async fn supervise(control: Arc<Controller>, cancel: CancellationToken) {
    let mut configs = control.subscribe_config();
    let mut running: HashMap<(String, IpAddr), (CheckSpec, JoinHandle<()>)> = HashMap::new();
    loop {
        let wanted = checks(&configs.borrow_and_update());
        running.retain(|key, (spec, task)| {
            let keep = wanted.get(key) == Some(spec);
            if !keep {
                task.abort();
            }
            keep
        });
        control.forget_health(|key| wanted.contains_key(key));
        for (key, spec) in wanted {
            running
                .entry(key)
                .or_insert_with(|| (spec.clone(), tokio::spawn(run_check(control.clone(), spec))));
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = configs.changed() => if changed.is_err() { break },
        }
    }
    for (_, (_, task)) in running {
        task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_count_consecutive_results() {
        let mut h = BackendHealth::up();
        let fail = Err("connection refused".to_string());
        assert_eq!(h.record(&fail, 2, 3), None);
        assert_eq!(h.record(&fail, 2, 3), None);
        assert_eq!(
            h.record(&Ok(()), 2, 3),
            None,
            "a success resets the failures"
        );
        assert_eq!(h.record(&fail, 2, 3), None);
        assert_eq!(h.record(&fail, 2, 3), None);
        assert_eq!(h.record(&fail, 2, 3), Some(HealthState::Down));
        assert_eq!(h.last_error.as_deref(), Some("connection refused"));
        assert_eq!(h.record(&Ok(()), 2, 3), None);
        assert_eq!(h.record(&Ok(()), 2, 3), Some(HealthState::Up));
        assert_eq!((h.checks_ok, h.checks_failed), (3, 5));
    }

    #[test]
    fn checks_follow_the_configuration() {
        let c: Config = serde_json::from_str(
            r#"{"vips": [
                {"name": "a", "address": "10.0.0.1", "port": 80, "protocol": "tcp",
                 "health_check": {"kind": "http", "path": "/h", "port": 8080},
                 "backends": [{"address": "10.1.0.1"}, {"address": "10.1.0.2", "port": 81}]},
                {"name": "b", "address": "10.0.0.2", "port": 53, "protocol": "udp",
                 "health_check": {"kind": "tcp"}, "backends": [{"address": "10.1.0.1", "port": 5353}]},
                {"name": "c", "address": "10.0.0.3", "port": 1, "protocol": "tcp",
                 "backends": [{"address": "10.1.0.1"}]}]}"#,
        )
        .unwrap();
        let all = checks(&c);
        assert_eq!(all.len(), 3, "VIP c has no check");
        let a1 = &all[&("a".to_string(), "10.1.0.1".parse().unwrap())];
        assert_eq!(a1.target, "10.1.0.1:8080".parse().unwrap());
        assert_eq!(a1.http, Some(("/h".to_string(), None)));
        let b1 = &all[&("b".to_string(), "10.1.0.1".parse().unwrap())];
        assert_eq!(
            b1.target,
            "10.1.0.1:5353".parse().unwrap(),
            "the backend's port"
        );
        assert_eq!(b1.http, None);
    }
}
