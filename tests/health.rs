//! Health checks against real listeners: a backend whose server stops is
//! out of the table within fall x interval and back within rise x interval
//! after it returns; flows of the other backends keep their backend across
//! both changes; all down fails open; HTTP status checks; state and errors
//! in the API views; a restarted controller keeps down backends down.
//!
//! Privileged: the controller writes real BPF maps; listeners live on
//! addresses of the loopback device inside the test's own network
//! namespace.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lethe::config::Config;
use lethe::control::Controller;
use lethe::dataplane::Dataplane;
use lethe::edit::Change;
use lethe::events::Event;
use lethe::flow_hash::FlowKey;
use lethe::health::{self, HealthState};
use lethe::model;
use lethe::store::Store;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use common::netns::{in_new_netns, sh};

const INTERVAL_MS: u64 = 200;
const TIMEOUT_MS: u64 = 100;
const RISE: u64 = 2;
const FALL: u64 = 3;

/// The test's own network namespace, with the backends' addresses on its
/// loopback device (a loopback address is refused as a backend: the data
/// plane would send its packets out of an interface).
fn in_backend_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    in_new_netns(move || {
        sh(
            "ip addr add 10.99.0.11/32 dev lo && ip addr add 10.99.0.12/32 dev lo \
            && ip addr add 10.99.0.13/32 dev lo",
        );
        f()
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A TCP or HTTP server on addr:8080 until aborted.
fn serve(addr: &str, http_status: Option<Arc<std::sync::atomic::AtomicU16>>) -> JoinHandle<()> {
    let addr: SocketAddr = format!("{addr}:8080").parse().unwrap();
    let std = std::net::TcpListener::bind(addr).unwrap();
    std.set_nonblocking(true).unwrap();
    let listener = TcpListener::from_std(std).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let status = http_status.clone();
            tokio::spawn(async move {
                if let Some(code) = status {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let code = code.load(std::sync::atomic::Ordering::Relaxed);
                    let _ = s
                        .write_all(
                            format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                        )
                        .await;
                }
            });
        }
    })
}

fn config(check: serde_json::Value) -> Config {
    serde_json::from_value(json!({"vips": [{
        "name": "web", "address": "10.100.0.1", "port": 80, "protocol": "tcp", "table_size": 7919,
        "health_check": check,
        "backends": [{"address": "10.99.0.11", "port": 8080}, {"address": "10.99.0.12", "port": 8080},
                     {"address": "10.99.0.13", "port": 8080}]}]}))
    .unwrap()
}

fn tcp_check() -> serde_json::Value {
    json!({"kind": "tcp", "interval_ms": INTERVAL_MS, "timeout_ms": TIMEOUT_MS, "rise": RISE, "fall": FALL})
}

async fn slots_of(c: &Controller, backend: IpAddr) -> u32 {
    let snap = c.snapshot().await;
    let t = &snap.plan.vips[0].table;
    t.backends
        .iter()
        .position(|a| *a == backend)
        .map_or(0, |i| t.slot_counts()[i])
}

/// Waits until `cond` holds, polling every 10 ms; the time it took.
async fn until<F, Fut>(limit: Duration, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

fn picks(plan: &lethe::plan::Plan) -> Vec<IpAddr> {
    (0..500u16)
        .map(|i| {
            let key = FlowKey {
                src: ip("198.51.100.3"),
                dst: ip("10.100.0.1"),
                sport: 20_000 + i,
                dport: 80,
                proto: 6,
            };
            model::pick(plan, &key).unwrap().backend
        })
        .collect()
}

/// GET /metrics through the API's router.
async fn metrics_text(control: &Arc<Controller>) -> String {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let router = lethe::api::router(lethe::api::ApiState {
        control: control.clone(),
        token: None,
        shutdown: CancellationToken::new(),
    });
    let req = axum::http::Request::get("/metrics")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = router.oneshot(req).await.unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn runtime<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn a_stopped_backend_leaves_and_returns_and_others_keep_their_flows() {
    in_backend_netns(|| {
        runtime(async {
            let servers: Vec<JoinHandle<()>> = ["10.99.0.11", "10.99.0.12", "10.99.0.13"]
                .iter()
                .map(|a| serve(a, None))
                .collect();
            let dp = Arc::new(Dataplane::load().unwrap());
            let control = Arc::new(
                Controller::start(dp, None, config(tcp_check()))
                    .await
                    .unwrap(),
            );
            let mut events = control.events.subscribe();
            let cancel = CancellationToken::new();
            let checks = tokio::spawn(health::supervise(control.clone(), cancel.clone()));

            let before = control.snapshot().await.plan.clone();
            let flows_before = picks(&before);
            let b2 = ip("10.99.0.12");
            assert!(slots_of(&control, b2).await > 0);

            // Stop .12's server: out within fall x interval (+ one timeout).
            servers[1].abort();
            let _ = servers[1].is_finished();
            tokio::time::sleep(Duration::from_millis(20)).await;
            let budget = Duration::from_millis(FALL * INTERVAL_MS + TIMEOUT_MS);
            let took = until(budget + Duration::from_secs(2), || async {
                slots_of(&control, b2).await == 0
            })
            .await;
            println!(
                "down after {took:?} (fall x interval = {:?})",
                Duration::from_millis(FALL * INTERVAL_MS)
            );
            assert!(
                took <= budget + Duration::from_millis(500),
                "took {took:?}, budget {budget:?}"
            );

            let during = control.snapshot().await.plan.clone();
            assert_eq!(during.vips[0].down, vec![b2]);
            let flows_during = picks(&during);
            for (a, b) in flows_before.iter().zip(&flows_during) {
                if *a != b2 {
                    assert_eq!(a, b, "a flow of a healthy backend moved");
                } else {
                    assert_ne!(*b, b2);
                }
            }
            // The kernel holds that table.
            let published = control
                .published_digest(during.vips[0].key())
                .await
                .unwrap();
            assert_eq!(published, Some(during.vips[0].table.digest()));
            // The state is visible with its error.
            let h = control.health();
            let entry = &h[&("web".to_string(), b2)];
            assert_eq!(entry.state, HealthState::Down);
            assert_eq!(entry.last_error.as_deref(), Some("connection refused"));
            // And told as an event.
            let mut saw_down = false;
            while let Ok(e) = events.try_recv() {
                if let Event::Health {
                    backend,
                    state,
                    error,
                    ..
                } = &*e
                {
                    saw_down |= *backend == b2
                        && state == "down"
                        && error.as_deref() == Some("connection refused");
                }
            }
            assert!(saw_down, "no health event for the down backend");

            // Back: within rise x interval, and exactly the old table.
            let _again = serve("10.99.0.12", None);
            let budget = Duration::from_millis(RISE * INTERVAL_MS + TIMEOUT_MS);
            let took = until(budget + Duration::from_secs(2), || async {
                slots_of(&control, b2).await > 0
            })
            .await;
            println!(
                "up after {took:?} (rise x interval = {:?})",
                Duration::from_millis(RISE * INTERVAL_MS)
            );
            assert!(
                took <= budget + Duration::from_millis(500),
                "took {took:?}, budget {budget:?}"
            );
            let after = control.snapshot().await.plan.clone();
            assert_eq!(after.vips[0].table.digest(), before.vips[0].table.digest());
            assert_eq!(picks(&after), flows_before);

            // All down: fail open, said in the plan and as an event.
            servers[0].abort();
            servers[2].abort();
            _again.abort();
            until(Duration::from_secs(5), || async {
                control.snapshot().await.plan.vips[0].failed_open
            })
            .await;
            let open = control.snapshot().await.plan.clone();
            assert_eq!(
                open.vips[0].table.digest(),
                before.vips[0].table.digest(),
                "fail open keeps every backend"
            );
            let mut saw_fail_open = false;
            while let Ok(e) = events.try_recv() {
                saw_fail_open |= matches!(
                    &*e,
                    Event::FailOpen {
                        failed_open: true,
                        ..
                    }
                );
            }
            assert!(saw_fail_open);

            cancel.cancel();
            checks.await.unwrap();
        })
    });
}

#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn http_checks_follow_the_status_and_a_restart_keeps_down_backends_down() {
    in_backend_netns(|| {
        runtime(async {
            let status = Arc::new(std::sync::atomic::AtomicU16::new(200));
            let _s: Vec<JoinHandle<()>> = ["10.99.0.11", "10.99.0.12", "10.99.0.13"]
                .iter()
                .map(|a| serve(a, Some(status.clone())))
                .collect();
            let check = json!({"kind": "http", "path": "/healthz", "interval_ms": INTERVAL_MS,
                               "timeout_ms": TIMEOUT_MS, "rise": RISE, "fall": FALL});
            let dp = Arc::new(Dataplane::load().unwrap());
            let state = std::env::temp_dir().join(format!("lethe-health-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&state);
            let control = Arc::new(
                Controller::start(dp.clone(), Some(Store::new(&state)), config(check.clone()))
                    .await
                    .unwrap(),
            );
            let cancel = CancellationToken::new();
            let checks = tokio::spawn(health::supervise(control.clone(), cancel.clone()));
            until(Duration::from_secs(3), || async {
                control
                    .health()
                    .values()
                    .filter(|h| h.checks_ok >= 1)
                    .count()
                    == 3
            })
            .await;
            assert!(control
                .health()
                .values()
                .all(|h| h.state == HealthState::Up));

            // 503 everywhere: all down, fail open, with the status as error.
            status.store(503, std::sync::atomic::Ordering::Relaxed);
            until(Duration::from_secs(5), || async {
                control.snapshot().await.plan.vips[0].failed_open
            })
            .await;
            let h = control.health();
            assert!(h
                .values()
                .all(|h| h.last_error.as_deref() == Some("HTTP status 503")));

            // A 3xx is healthy; an expected status narrows it.
            status.store(302, std::sync::atomic::Ordering::Relaxed);
            until(Duration::from_secs(5), || async {
                !control.snapshot().await.plan.vips[0].failed_open
            })
            .await;
            until(Duration::from_secs(5), || async {
                control
                    .health()
                    .values()
                    .all(|h| h.state == HealthState::Up)
            })
            .await;

            // One backend down when the daemon "restarts": the new controller
            // reads it from the kernel's table and keeps it down.
            let one = ip("10.99.0.11");
            let mut c = config(check.clone());
            c.vips[0].health_check = serde_json::from_value(
                json!({"kind": "tcp", "port": 9, "interval_ms": 60000, "timeout_ms": 100}),
            )
            .unwrap();
            cancel.cancel();
            checks.await.unwrap();
            // Take .11 down by hand through the controller's own path.
            let spec = health::checks(&c)
                .remove(&("web".to_string(), one))
                .unwrap();
            for _ in 0..3 {
                control
                    .report_health(&spec, Err("connection refused".into()))
                    .await;
            }
            assert_eq!(control.snapshot().await.plan.vips[0].down, vec![one]);
            let restarted = Controller::start(dp, None, c.clone()).await.unwrap();
            let snap = restarted.snapshot().await;
            assert_eq!(
                snap.plan.vips[0].down,
                vec![one],
                "a restart put a down backend back"
            );
            assert_eq!(
                restarted.health()[&("web".to_string(), one)].state,
                HealthState::Down
            );

            // A restart onto fresh maps (a move to another layout): no table
            // to read, the saved health says who was down.
            let fresh = Arc::new(Dataplane::load().unwrap());
            let moved = Arc::new(
                Controller::start(fresh, Some(Store::new(&state)), c)
                    .await
                    .unwrap(),
            );
            let down = moved.snapshot().await.plan.vips[0].down.clone();
            // The VIP deleted: its down backend leaves the saved health
            // too (else a VIP made again would start with it down).
            moved
                .change(Change::DeleteVip("web".into()), None)
                .await
                .unwrap();
            let saved_down = Store::new(&state).load_down().unwrap();
            std::fs::remove_dir_all(&state).unwrap();
            assert_eq!(
                down,
                vec![one],
                "a move to fresh maps put a down backend back"
            );
            assert!(saved_down.is_empty(), "{saved_down:?}");
        })
    });
}

/// Changes meet health: a change that leaves only down backends fails
/// open and says so, as a health transition would; turning the check off
/// puts a down backend back in the table in that same change.
#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn changes_announce_fail_open_and_an_unchecked_vip_has_no_down_backends() {
    in_backend_netns(|| {
        runtime(async {
            // .12 has no server: it goes down.
            let _s: Vec<JoinHandle<()>> = ["10.99.0.11", "10.99.0.13"]
                .iter()
                .map(|a| serve(a, None))
                .collect();
            let dp = Arc::new(Dataplane::load().unwrap());
            let full = config(tcp_check());
            let control = Arc::new(Controller::start(dp, None, full.clone()).await.unwrap());
            let mut events = control.events.subscribe();
            let cancel = CancellationToken::new();
            let checks = tokio::spawn(health::supervise(control.clone(), cancel.clone()));
            let b2 = ip("10.99.0.12");
            until(Duration::from_secs(5), || async {
                slots_of(&control, b2).await == 0
            })
            .await;
            let mut fail_open_events = || {
                let mut seen = Vec::new();
                while let Ok(e) = events.try_recv() {
                    if let Event::FailOpen { failed_open, .. } = &*e {
                        seen.push(*failed_open);
                    }
                }
                seen
            };
            assert_eq!(fail_open_events(), Vec::<bool>::new());
            // /metrics says so, each family's samples after its own header.
            let metrics = metrics_text(&control).await;
            assert!(
                metrics.contains(r#"lethe_backend_up{vip="web",backend="10.99.0.12"} 0"#),
                "{metrics}"
            );
            let mut family = String::new();
            for line in metrics.lines() {
                if let Some(rest) = line.strip_prefix("# TYPE ") {
                    family = rest.split(' ').next().unwrap().to_string();
                } else if !line.starts_with('#') && !line.is_empty() {
                    let name = line.split(['{', ' ']).next().unwrap();
                    assert!(
                        name == family
                            || name
                                .strip_prefix(family.as_str())
                                .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s)),
                        "{name} among the samples of {family}"
                    );
                }
            }

            // Only the down backend left: the change fails open.
            let mut only_b2 = full.clone();
            only_b2.vips[0].backends.retain(|b| b.address == b2);
            let snap = control
                .change(Change::ReplaceConfig(only_b2), None)
                .await
                .unwrap();
            assert!(snap.plan.vips[0].failed_open);
            assert_eq!(
                fail_open_events(),
                vec![true],
                "fail open by a change, untold"
            );

            // All three back, the check off: .12 is in the table at once.
            let mut unchecked = full.clone();
            unchecked.vips[0].health_check = lethe::config::HealthCheck::None;
            let snap = control
                .change(Change::ReplaceConfig(unchecked), None)
                .await
                .unwrap();
            assert!(
                snap.plan.vips[0].down.is_empty(),
                "{:?}",
                snap.plan.vips[0].down
            );
            assert!(slots_of(&control, b2).await > 0);
            assert_eq!(fail_open_events(), vec![false]);
            let published = control
                .published_digest(snap.plan.vips[0].key())
                .await
                .unwrap();
            assert_eq!(published, Some(snap.plan.vips[0].table.digest()));

            // Failing open again, then the VIP deleted: its fail open ends.
            let mut only_b2 = full.clone();
            only_b2.vips[0].backends.retain(|b| b.address == b2);
            control
                .change(Change::ReplaceConfig(only_b2), None)
                .await
                .unwrap();
            // (Once its check has failed again, if the check's health was
            // forgotten while it was off.)
            until(Duration::from_secs(5), || async {
                control.snapshot().await.plan.vips[0].failed_open
            })
            .await;
            assert_eq!(fail_open_events(), vec![true]);
            control
                .change(Change::ReplaceConfig(Config::default()), None)
                .await
                .unwrap();
            assert_eq!(
                fail_open_events(),
                vec![false],
                "a VIP deleted while failing open never stopped"
            );

            cancel.cancel();
            checks.await.unwrap();
        })
    });
}

/// Makes a pinned map read-only for every syscall from now on.
fn freeze(path: &std::path::Path) {
    use std::os::fd::{AsFd, AsRawFd};
    let map = libbpf_rs::MapHandle::from_pinned_path(path).unwrap();
    // SAFETY: a valid map fd.
    let rc = unsafe { libbpf_rs::libbpf_sys::bpf_map_freeze(map.as_fd().as_raw_fd()) };
    assert_eq!(rc, 0, "freezing {}", path.display());
}

/// A health change the data plane refuses (here the kernel: the outer
/// table maps are frozen, so no table can be published) is retried, not
/// dropped after one log line: a dead backend would keep its slots until
/// some unrelated change. Each refusal is counted.
#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn a_health_change_the_data_plane_refuses_is_retried() {
    let pins = common::pins::PinDir::new("healthretry");
    let dir = pins.0.clone();
    in_backend_netns(move || {
        runtime(async move {
            let dp = Arc::new(Dataplane::load_pinned(&dir).unwrap());
            let c =
                config(json!({"kind": "tcp", "port": 9, "interval_ms": 60000, "timeout_ms": 100}));
            let control = Arc::new(Controller::start(dp, None, c.clone()).await.unwrap());
            for name in ["tables", "tables_fixed"] {
                freeze(&dir.join(name));
            }
            let one = ip("10.99.0.11");
            let spec = health::checks(&c)
                .remove(&("web".to_string(), one))
                .unwrap();
            for _ in 0..spec.timing.fall {
                control
                    .report_health(&spec, Err("connection refused".into()))
                    .await;
            }
            assert_eq!(
                control.health()[&("web".to_string(), one)].state,
                HealthState::Down
            );
            let failures = || {
                control
                    .stats
                    .health_apply_failures
                    .load(std::sync::atomic::Ordering::Relaxed)
            };
            assert_eq!(failures(), 1);
            assert!(
                control.snapshot().await.plan.vips[0].down.is_empty(),
                "recorded as published"
            );
            // Retried after 0.5 s, then 1 s later, ...
            until(Duration::from_secs(5), || async { failures() >= 3 }).await;
        })
    });
}
