//! End to end, in the lab of `scripts/lab.sh` (client, router, one or two
//! LBs running `lethe serve`, three backends running an HTTP server that
//! names itself, Lethe's decap on the backends): real TCP connections
//! through every mode and family, daemon crashes and restarts and program
//! upgrades under traffic, health checks taking a stopped server out and
//! back, and two LBs behind a multipath route making one decision.
//!
//! Privileged: needs root. Each test makes its own lab under a prefix
//! unique to the run and removes it (pins included) also on failure.
//! Every sender has tx checksum offload off (lab.sh), so a wrong checksum
//! is a counted error on the receiver, never hidden.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{self, Conn};
use common::lab::{gone, wait_until, Lab};

/// The lab's VIPs (scripts/lab.sh `config`), port 80; backends b1, b2, b3
/// weighted 1:1:2.
const VIPS: [(&str, &str); 8] = [
    ("dsr4", "10.100.0.1"),
    ("dsr6", "fd00:100::1"),
    ("ipip4", "10.100.0.2"),
    ("ipip6", "fd00:100::2"),
    ("gue4", "10.100.0.3"),
    ("gue6", "fd00:100::3"),
    ("nat4", "10.100.0.4"),
    ("nat6", "fd00:100::4"),
];
/// Connections per VIP in the mode x family test.
const CONNECTIONS: usize = 600;
const WEIGHTS: [(&str, f64); 3] = [("b1", 0.25), ("b2", 0.25), ("b3", 0.5)];
/// The lab's health checks: interval 500 ms, timeout 300 ms, fall 2, rise 2.
const INTERVAL: Duration = Duration::from_millis(500);
const FALL: u32 = 2;
const RISE: u32 = 2;

/// One request to every VIP: paths are warm (neighbours resolved on every
/// host) before a test measures anything.
fn warm_up(lab: &Lab) {
    let failures = lab.in_ns("client", || {
        VIPS.iter()
            .filter_map(|(name, _)| {
                http::get(vip(name), "/")
                    .err()
                    .map(|e| format!("{name}: {e}"))
            })
            .collect::<Vec<_>>()
    });
    assert!(failures.is_empty(), "warm-up: {failures:?}");
}

fn vip(name: &str) -> SocketAddr {
    let (_, a) = VIPS.iter().find(|(n, _)| *n == name).unwrap();
    SocketAddr::new(a.parse().unwrap(), 80)
}

/// `n` connections to `dst`, `parallel` at a time, each one request;
/// backend -> count, and every failure.
fn connections(
    dst: SocketAddr,
    n: usize,
    parallel: usize,
) -> (BTreeMap<String, usize>, Vec<String>) {
    let workers: Vec<_> = (0..parallel)
        .map(|w| {
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut failed = Vec::new();
                for i in (w..n).step_by(parallel) {
                    match http::get(dst, "/") {
                        Ok(r) => seen.push(r.backend),
                        Err(e) => failed.push(format!("{dst} connection {i}: {e}")),
                    }
                }
                (seen, failed)
            })
        })
        .collect();
    let mut counts = BTreeMap::new();
    let mut failures = Vec::new();
    for w in workers {
        let (seen, failed) = w.join().unwrap();
        for b in seen {
            *counts.entry(b).or_insert(0) += 1;
        }
        failures.extend(failed);
    }
    (counts, failures)
}

/// New connections to `dsts` in a loop until `stop`: (completed, failures).
fn stream(dsts: Vec<SocketAddr>, stop: Arc<AtomicBool>) -> (usize, Vec<String>) {
    let mut ok = 0;
    let mut failed = Vec::new();
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for &dst in &dsts {
            match http::get(dst, "/") {
                Ok(_) => ok += 1,
                Err(e) => failed.push(format!("{dst} at {:?}: {e}", start.elapsed())),
            }
        }
    }
    (ok, failed)
}

/// Downloads `bytes` from `dst` at about `rate` bytes/s, so the transfer
/// spans whatever the test does meanwhile.
fn paced_download(dst: SocketAddr, bytes: u64, rate: f64) -> Result<http::Reply, String> {
    let start = Instant::now();
    let mut got = 0u64;
    let mut conn = Conn::open(dst, None).map_err(|e| format!("{dst}: {e}"))?;
    conn.request(&format!("/bytes/{bytes}"), 0, true, |n| {
        got += n as u64;
        let due = Duration::from_secs_f64(got as f64 / rate);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    })
    .map_err(|e| format!("{dst} download: {e} after {got} bytes"))
}

fn assert_shares(what: &str, counts: &BTreeMap<String, usize>) {
    let total: usize = counts.values().sum();
    for (b, want) in WEIGHTS {
        let share = *counts.get(b).unwrap_or(&0) as f64 / total as f64;
        // 600 connections: one standard deviation of a share is at most
        // 0.02 (0.5); 0.1 is five of them.
        assert!(
            (share - want).abs() <= 0.1,
            "{what}: {b} got {share:.3} of {total} connections, weight says {want}: {counts:?}"
        );
    }
}

fn vip_packets(lab: &Lab, lb: &str) -> BTreeMap<String, u64> {
    let stats = lab.get(lb, "/v1/stats");
    stats["vips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["packets"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The id of the XDP program on `iface` in `ns`, from `ip -d -j link`.
fn xdp_prog_id(lab: &Lab, ns: &str, iface: &str) -> u64 {
    let out = lab.sh(ns, &format!("ip -d -j link show dev {iface}"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["xdp"]["prog"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no XDP program on {iface}: {out}"))
}

#[test]
#[ignore = "privileged: needs root (namespaces, BPF); run by scripts/test.sh"]
fn every_mode_and_family_carries_real_tcp_balanced_by_weight() {
    let lab = Lab::up("m", false);
    let results = lab.in_ns("client", || {
        VIPS.iter()
            .map(|&(name, _)| {
                let dst = vip(name);
                let (counts, mut failures) = connections(dst, CONNECTIONS, 6);
                // 2 MiB up, 3 MB down, each on its own connection.
                match Conn::open(dst, None).and_then(|mut c| c.request("/", 2 << 20, true, |_| {}))
                {
                    Ok(r) if r.body == format!("{} {}\n", r.backend, 2 << 20) => {}
                    Ok(r) => failures.push(format!("{name} upload: {r:?}")),
                    Err(e) => failures.push(format!("{name} upload: {e}")),
                }
                match http::get(dst, "/bytes/3000000") {
                    Ok(r) if r.body_len == 3_000_000 => {}
                    Ok(r) => failures.push(format!("{name} download: {r:?}")),
                    Err(e) => failures.push(format!("{name} download: {e}")),
                }
                (name, counts, failures)
            })
            .collect::<Vec<_>>()
    });
    for (name, counts, failures) in &results {
        eprintln!("{name:6} {counts:?}");
        assert!(
            failures.is_empty(),
            "{name}: {} failures: {failures:#?}",
            failures.len()
        );
        assert_eq!(counts.values().sum::<usize>(), CONNECTIONS);
        assert_shares(name, counts);
    }
    // Through the XDP program, not the kernel: every VIP counted packets.
    let packets = vip_packets(&lab, "lb");
    for (name, _) in VIPS {
        assert!(
            packets[name] > CONNECTIONS as u64 * 3,
            "{name}: only {} packets counted",
            packets[name]
        );
    }
    let bad = lab.checksum_errors();
    assert!(bad.is_empty(), "checksum errors: {bad:?}");
}

#[test]
#[ignore = "privileged: needs root (namespaces, BPF); run by scripts/test.sh"]
fn kill_9_and_restart_under_a_long_transfer_and_new_connections_lose_nothing() {
    let lab = Lab::up("k", false);
    warm_up(&lab);
    let before = lab.digests("lb");
    let prog_before = xdp_prog_id(&lab, "lb", "l-r");
    let stop = Arc::new(AtomicBool::new(false));
    // 40 MB at 10 MB/s: spans the crash, the time without a daemon, and
    // the restart.
    let download = lab.spawn_in("client", || paced_download(vip("ipip4"), 40_000_000, 10e6));
    let streams: Vec<_> = [["dsr4", "nat6"], ["gue4", "ipip6"], ["dsr6", "nat4"]]
        .iter()
        .map(|pair| {
            let dsts = pair.iter().map(|n| vip(n)).collect();
            let stop = stop.clone();
            lab.spawn_in("client", move || stream(dsts, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    lab.kill9("lb");
    assert!(
        !lab.try_sh("lb", "curl -sf http://127.0.0.1:9180/live")
            .status
            .success(),
        "the daemon is gone"
    );
    // No daemon: the pinned program keeps forwarding.
    std::thread::sleep(Duration::from_secs(1));
    lab.start("lb");
    let after = lab.digests("lb");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let mut completed = 0;
    for s in streams {
        let (ok, failed) = s.join().unwrap();
        assert!(
            failed.is_empty(),
            "{} failed connections: {failed:#?}\n{}",
            failed.len(),
            std::fs::read_to_string(lab.state.join("lb.log")).unwrap_or_default()
        );
        completed += ok;
    }
    let reply = download.join().unwrap().expect("the long transfer");
    assert_eq!(reply.body_len, 40_000_000);
    eprintln!(
        "{completed} connections and a 40 MB transfer through kill -9 and restart, none failed"
    );
    assert!(completed > 100, "only {completed} connections made");
    assert_eq!(before, after, "the restart restored the same tables");
    let log = std::fs::read_to_string(lab.state.join("lb.log")).unwrap();
    assert!(log.contains("program upgraded in place"), "{log}");
    assert!(!log.contains("ERROR") && !log.contains("error:"), "{log}");
    // The restart loaded its program and swapped it into the pinned link.
    assert_ne!(xdp_prog_id(&lab, "lb", "l-r"), prog_before);
    let bad = lab.checksum_errors();
    assert!(bad.is_empty(), "checksum errors: {bad:?}");
}

#[test]
#[ignore = "privileged: needs root (namespaces, BPF); run by scripts/test.sh"]
fn a_program_upgrade_under_traffic_loses_nothing() {
    let lab = Lab::up("u", false);
    warm_up(&lab);
    let before = lab.digests("lb");
    let progs: Vec<u64> = ["l-r", "l-b"]
        .iter()
        .map(|i| xdp_prog_id(&lab, "lb", i))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let download = lab.spawn_in("client", || paced_download(vip("gue6"), 30_000_000, 10e6));
    let streams: Vec<_> = [["dsr4", "ipip6"], ["nat4", "gue6"]]
        .iter()
        .map(|pair| {
            let dsts = pair.iter().map(|n| vip(n)).collect();
            let stop = stop.clone();
            lab.spawn_in("client", move || stream(dsts, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // An operator's upgrade: stop the daemon (SIGTERM; the links stay),
    // start the new one, which replaces the program in the pinned links.
    let pid = lab.pid("lb");
    // SAFETY: kill(2) of the daemon the lab started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_until(Duration::from_secs(5), "the daemon to stop", || gone(pid));
    lab.start("lb");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for s in streams {
        let (ok, failed) = s.join().unwrap();
        assert!(
            failed.is_empty(),
            "{} failed connections: {failed:#?}",
            failed.len()
        );
        assert!(ok > 20, "only {ok} connections made");
    }
    let reply = download.join().unwrap().expect("the long transfer");
    assert_eq!(reply.body_len, 30_000_000);
    for (iface, before) in ["l-r", "l-b"].iter().zip(progs) {
        assert_ne!(
            xdp_prog_id(&lab, "lb", iface),
            before,
            "{iface}: program replaced"
        );
    }
    let log = std::fs::read_to_string(lab.state.join("lb.log")).unwrap();
    assert!(log.contains("program upgraded in place"), "{log}");
    assert!(!log.contains("ERROR") && !log.contains("error:"), "{log}");
    assert_eq!(before, lab.digests("lb"));
}

#[test]
#[ignore = "privileged: needs root (namespaces, BPF); run by scripts/test.sh"]
fn a_stopped_backend_leaves_within_fall_times_interval_and_comes_back() {
    let lab = Lab::up("h", false);
    let dst = vip("dsr4");
    // Keep-alive connections, spread over the backends.
    let mut conns: Vec<(Conn, String)> = lab.in_ns("client", move || {
        (0..60)
            .map(|_| {
                let mut c = Conn::open(dst, None).unwrap();
                let r = c.request("/", 0, false, |_| {}).unwrap();
                (c, r.backend)
            })
            .collect()
    });
    assert!(conns.iter().any(|(_, b)| b == "b2"));

    let killed = Instant::now();
    lab.kill9("b2");
    // Out of the table the kernel holds, not only marked down.
    wait_until(Duration::from_secs(10), "b2 out of the table", || {
        lab.table_down("lb", "dsr4") == ["10.1.0.12"]
    });
    let took = killed.elapsed();
    assert_eq!(lab.health("lb", "dsr4", "10.1.0.12"), "down");
    eprintln!("b2 down after {took:?} (fall {FALL} x interval {INTERVAL:?})");
    // A refused connection fails a check at once: the second failure comes
    // at most fall x interval after the kill; the slack is the table swap
    // (synchronize_rcu, debug build) and this poll.
    assert!(
        took <= INTERVAL * FALL + Duration::from_millis(600),
        "took {took:?}"
    );

    // Connections to the others keep their backend; new ones avoid b2.
    conns.retain(|(_, b)| b != "b2");
    for (c, b) in conns.iter_mut() {
        let r = c.request("/", 0, false, |_| {}).expect("a kept connection");
        assert_eq!(&r.backend, b, "a connection moved");
    }
    let (counts, failures) = lab.in_ns("client", move || connections(dst, 100, 4));
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(!counts.contains_key("b2"), "{counts:?}");

    // b2's server again (recorded so `lab.sh down` stops it).
    let mut server = std::process::Command::new("nsenter")
        .arg(format!("--net={}", lab.netns("b2")))
        .arg("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lab_http.py"))
        .args(["--name", "b2", "--port", "80", "--port", "8080", "--state"])
        .arg(&lab.state)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::fs::write(lab.state.join("b2.pid"), server.id().to_string()).unwrap();
    let took = wait_until(Duration::from_secs(10), "b2 back in the table", || {
        lab.table_down("lb", "dsr4").is_empty()
    });
    assert_eq!(lab.health("lb", "dsr4", "10.1.0.12"), "up");
    eprintln!("b2 up after {took:?} (rise {RISE} x interval {INTERVAL:?})");
    let (counts, failures) = lab.in_ns("client", move || connections(dst, 100, 4));
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(counts.get("b2").is_some_and(|&n| n > 5), "{counts:?}");
    for (c, b) in conns.iter_mut() {
        let r = c.request("/", 0, false, |_| {}).expect("a kept connection");
        assert_eq!(&r.backend, b, "a connection moved when b2 came back");
    }
    let _ = server.kill();
    let _ = server.wait();
}

/// Points the router's VIP routes at the given LBs (one next hop each).
fn route_via(lab: &Lab, lbs: &[&str]) {
    let hops = |v6: bool| {
        lbs.iter()
            .map(|lb| {
                let n = if *lb == "lb" { 0 } else { 1 };
                if v6 {
                    format!(" nexthop via fd00:1{n}::2")
                } else {
                    format!(" nexthop via 10.0.1{n}.2")
                }
            })
            .collect::<String>()
    };
    lab.sh(
        "router",
        &format!(
            "ip route del 10.100.0.0/24; ip route add 10.100.0.0/24{}; \
             ip -6 route del fd00:100::/64; ip -6 route add fd00:100::/64{}",
            hops(false),
            hops(true)
        ),
    );
}

/// One request per source port, each flow reset after (no TIME_WAIT), so
/// the same flows can be made again: source port -> backend.
fn flows(lab: &Lab, dst: SocketAddr, ports: std::ops::Range<u16>) -> BTreeMap<u16, String> {
    let src: IpAddr = if dst.is_ipv4() {
        "10.0.0.2".parse().unwrap()
    } else {
        "fd00::2".parse().unwrap()
    };
    lab.in_ns("client", move || {
        ports
            .map(|p| {
                let mut c = Conn::open(dst, Some(SocketAddr::new(src, p)))
                    .unwrap_or_else(|e| panic!("{dst} from port {p}: {e}"));
                let r = c
                    .request("/", 0, false, |_| {})
                    .unwrap_or_else(|e| panic!("{dst} from port {p}: {e}"));
                c.abort();
                (p, r.backend)
            })
            .collect()
    })
}

#[test]
#[ignore = "privileged: needs root (namespaces, BPF); run by scripts/test.sh"]
fn two_lbs_behind_ecmp_make_one_decision() {
    let lab = Lab::up("e", true);
    assert_eq!(
        lab.digests("lb"),
        lab.digests("lb2"),
        "same config, same tables"
    );
    for (name, ports) in [
        ("dsr4", 41000..41064),
        ("gue6", 42000..42064),
        ("nat4", 43000..43064),
    ] {
        let dst = vip(name);
        route_via(&lab, &["lb"]);
        let through_lb = flows(&lab, dst, ports.clone());
        route_via(&lab, &["lb2"]);
        let through_lb2 = flows(&lab, dst, ports.clone());
        assert_eq!(
            through_lb, through_lb2,
            "{name}: a flow's backend depends on the LB"
        );

        route_via(&lab, &["lb", "lb2"]);
        let before = [
            vip_packets(&lab, "lb")[name],
            vip_packets(&lab, "lb2")[name],
        ];
        let through_both = flows(&lab, dst, ports.clone());
        let after = [
            vip_packets(&lab, "lb")[name],
            vip_packets(&lab, "lb2")[name],
        ];
        assert_eq!(through_lb, through_both, "{name}");
        let spread = [after[0] - before[0], after[1] - before[1]];
        eprintln!(
            "{name}: 64 flows over ECMP: lb {} packets, lb2 {} packets",
            spread[0], spread[1]
        );
        assert!(
            spread[0] > 0 && spread[1] > 0,
            "{name}: flows not spread: {spread:?}"
        );
    }

    // Long-lived connections over both LBs; then lb2's daemon dies, its
    // next hop goes and its program is detached: no flow changes backend.
    let lb2_before = vip_packets(&lab, "lb2").values().sum::<u64>();
    let mut conns: Vec<(Conn, String)> = lab.in_ns("client", || {
        ["dsr4", "ipip6", "nat6"]
            .iter()
            .flat_map(|name| {
                (0..30).map(|_| {
                    let mut c = Conn::open(vip(name), None).unwrap();
                    let r = c.request("/", 0, false, |_| {}).unwrap();
                    (c, r.backend)
                })
            })
            .collect()
    });
    let lb2_carried = vip_packets(&lab, "lb2").values().sum::<u64>() - lb2_before;
    lab.kill9("lb2");
    route_via(&lab, &["lb"]);
    lab.sh(
        "lb2",
        &format!(
            "{} down --instance {}-lb2",
            env!("CARGO_BIN_EXE_lethe"),
            lab.prefix
        ),
    );
    assert!(
        lab.try_sh("lb2", "ip -d -j link show dev l-r | grep -q '\"xdp\"'")
            .status
            .code()
            == Some(1)
    );
    for (c, b) in conns.iter_mut() {
        let r = c
            .request("/", 0, false, |_| {})
            .expect("a connection across the LB change");
        assert_eq!(&r.backend, b, "a flow moved to another backend");
    }
    assert!(lb2_carried > 0, "no long-lived flow went through lb2");
}
