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
    /// The probe the consecutive counts are of (`CheckSpec::probe`): a
    /// result of another (the check was changed) starts them again.
    counted: Option<Probe>,
}

/// What a check probes: its target, and the HTTP request and expected
/// status (None: a TCP connect).
pub type Probe = (SocketAddr, Option<(String, Option<u16>)>);

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
            counted: None,
        }
    }

    /// Counts one probe result; returns the new state when it changed
    /// (rise consecutive successes bring a down backend up, fall
    /// consecutive failures take an up backend down).
    pub fn record(
        &mut self,
        probe: Probe,
        result: &Result<(), String>,
        rise: u32,
        fall: u32,
    ) -> Option<HealthState> {
        self.last_check = Some(SystemTime::now());
        if self.counted.as_ref() != Some(&probe) {
            // Another check: its rise or fall starts from its own results,
            // not from those of the one it replaced. The state stays.
            self.consecutive_ok = 0;
            self.consecutive_failed = 0;
            self.counted = Some(probe);
        }
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

impl CheckSpec {
    pub fn probe(&self) -> Probe {
        (self.target, self.http.clone())
    }
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
    let status = loop {
        if let Some(status) = final_status(&head)? {
            break status;
        }
        if head.len() >= 4096 {
            return Err("no HTTP status line in the first 4 KiB".into());
        }
        let n = stream.read(&mut buf).await.map_err(|e| describe(&e))?;
        if n == 0 {
            return Err("no HTTP status line".into());
        }
        head.extend_from_slice(&buf[..n]);
    };
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

/// The status of the final response in `head`, the start of what the
/// server sent: None while more bytes are needed. Interim (1xx) responses,
/// status line and headers, are skipped. A status line is exactly
/// `HTTP/1.<digit> <3 digits>` then a space or the line's end.
fn final_status(head: &[u8]) -> Result<Option<u16>, String> {
    let mut rest = head;
    loop {
        let Some(eol) = rest.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let line = rest[..eol].strip_suffix(b"\r").unwrap_or(&rest[..eol]);
        let status = match line {
            [b'H', b'T', b'T', b'P', b'/', b'1', b'.', v, b' ', a, b, c, tail @ ..]
                if v.is_ascii_digit()
                    && [a, b, c].iter().all(|d| d.is_ascii_digit())
                    && matches!(tail.first(), None | Some(b' ')) =>
            {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => {
                let shown: String = String::from_utf8_lossy(&line[..line.len().min(40)])
                    .chars()
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect();
                return Err(format!("not an HTTP status line: {shown:?}"));
            }
        };
        if !(100..200).contains(&status) {
            return Ok(Some(status));
        }
        // An interim response: its headers end with an empty line.
        let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Ok(None);
        };
        rest = &rest[end + 4..];
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

    fn tcp(port: u16) -> Probe {
        (SocketAddr::from(([10, 0, 0, 1], port)), None)
    }

    #[test]
    fn rise_and_fall_count_consecutive_results() {
        let mut h = BackendHealth::up();
        let fail = Err("connection refused".to_string());
        let mut record = |r: &Result<(), String>| h.record(tcp(80), r, 2, 3);
        assert_eq!(record(&fail), None);
        assert_eq!(record(&fail), None);
        assert_eq!(record(&Ok(())), None, "a success resets the failures");
        assert_eq!(record(&fail), None);
        assert_eq!(record(&fail), None);
        assert_eq!(record(&fail), Some(HealthState::Down));
        assert_eq!(record(&Ok(())), None);
        assert_eq!(record(&Ok(())), Some(HealthState::Up));
        assert_eq!(h.last_error.as_deref(), Some("connection refused"));
        assert_eq!((h.checks_ok, h.checks_failed), (3, 5));
    }

    #[test]
    fn status_lines_are_read_strictly_and_interim_responses_skipped() {
        let st = |s: &str| final_status(s.as_bytes());
        assert_eq!(st("HTTP/1.1 200 OK\r\n"), Ok(Some(200)));
        assert_eq!(st("HTTP/1.0 503\r\n"), Ok(Some(503)));
        assert_eq!(st("HTTP/1.1 204\n"), Ok(Some(204)));
        assert_eq!(st("HTTP/1.1 200 O"), Ok(None), "the line is not complete");
        assert_eq!(st(""), Ok(None));
        for bad in [
            "HTTP/1.1x200 OK\r\n",
            "HTTP/1.1 2000 OK\r\n",
            "HTTP/1.x 200 OK\r\n",
            "HTTP/2 200\r\n",
            "SSH-2.0-OpenSSH_9.6\r\n",
            "HTTP/1.1 20 OK\r\n",
        ] {
            assert!(st(bad).is_err(), "{bad:?} read as a status");
        }
        let early = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\n";
        assert_eq!(st(early), Ok(Some(200)));
        assert_eq!(
            st("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Oops\r\n"),
            Ok(Some(500))
        );
        assert_eq!(st("HTTP/1.1 100 Continue\r\n"), Ok(None));
    }

    #[test]
    fn a_changed_check_counts_rise_and_fall_from_its_own_results() {
        let mut h = BackendHealth::up();
        let fail = Err("connection refused".to_string());
        assert_eq!(h.record(tcp(80), &fail, 2, 3), None);
        assert_eq!(h.record(tcp(80), &fail, 2, 3), None);
        // The check moves to another port: one failure of it is not three.
        assert_eq!(h.record(tcp(8080), &fail, 2, 3), None);
        assert_eq!(h.record(tcp(8080), &fail, 2, 3), None);
        assert_eq!(h.record(tcp(8080), &fail, 2, 3), Some(HealthState::Down));
        // Down, one success of the check, then an HTTP check: its own two.
        assert_eq!(h.record(tcp(8080), &Ok(()), 2, 3), None);
        let http = (tcp(8080).0, Some(("/healthz".to_string(), None)));
        assert_eq!(h.record(http.clone(), &Ok(()), 2, 3), None);
        assert_eq!(h.record(http, &Ok(()), 2, 3), Some(HealthState::Up));
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
