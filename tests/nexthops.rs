//! The program's next-hop cache (`nexthops`, bpf/maps.h): a cached answer
//! is used for its backend only from the port it was looked up from, a
//! generation bump or the end of its lifetime makes the program ask the
//! route lookup again, and the daemon's rtnetlink listener bumps the
//! generation when a neighbour, route or link changes.
//!
//! Lifetimes are set long (an hour) where a test needs a cached answer to
//! stay, so what it checks does not depend on timing.
//!
//! Privileged: needs root (BPF, a network namespace). Run by scripts/test.sh.

mod common;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lethe::abi::Action;
use lethe::config::Config;
use lethe::dataplane::Dataplane;
use lethe::model::{self, Network};
use lethe::plan::Plan;

use common::netns::{in_new_netns, sh};
use common::packets::Flow;
use common::pins::PinDir;
use common::topology::{fmt_mac, Topology};

/// At least an hour, in jiffies (HZ is at most 1000).
const HOUR: u32 = 3_600_000;
/// A MAC no neighbour in the topology has.
const MOVED: [u8; 6] = [0x02, 0xee, 0, 0, 0, 0x11];

/// One dsr VIP over IPv4, one ipip VIP over IPv6 and one nat VIP over
/// IPv4, one on-link backend each (lt0), so every flow goes to that
/// backend; nat clients are behind the gateway 10.1.0.254.
fn config() -> Config {
    serde_json::from_value(serde_json::json!({
        "vips": [
            {"name": "d4", "address": "10.100.0.1", "port": 80, "protocol": "tcp", "mode": "dsr",
             "backends": [{"address": "10.1.0.11"}]},
            {"name": "t6", "address": "fd00:100::1", "port": 80, "protocol": "tcp", "mode": "ipip",
             "backends": [{"address": "fd00:1::11"}]},
            {"name": "n4", "address": "10.100.0.9", "port": 80, "protocol": "tcp", "mode": "nat",
             "backends": [{"address": "10.1.0.12", "port": 8080}]}
        ]
    }))
    .unwrap()
}

struct Bench {
    topo: Topology,
    plan: Plan,
    dp: Arc<Dataplane>,
}

impl Bench {
    fn new(ttl_jiffies: u32) -> Bench {
        // The cache is per CPU: a run on another CPU than the one that
        // filled it would look up afresh, and prove nothing.
        lethe::dataplane::pin_thread_to_cpu(0).unwrap();
        let topo = Topology::create();
        let plan = Plan::new(&config()).unwrap();
        let dp = Arc::new(Dataplane::load().unwrap());
        dp.allow_tx_port(topo.ifindex("lt2")).unwrap();
        dp.apply(&plan).unwrap();
        dp.set_nexthop_ttl_jiffies(ttl_jiffies).unwrap();
        Bench { topo, plan, dp }
    }

    fn frame(&self, vip: &str, payload: usize) -> Vec<u8> {
        let src = if vip.contains(':') {
            "2001:db8:c::1"
        } else {
            "198.51.100.1"
        };
        Flow::tcp(src, 40000, vip, 80)
            .payload(payload)
            .frame(self.topo.iface_mac("lt0"))
    }

    /// A reply of the nat VIP's backend to a client (the return path).
    fn reply(&self) -> Vec<u8> {
        Flow::tcp("10.1.0.12", 8080, "198.51.100.1", 40000).frame(self.topo.iface_mac("lt0"))
    }

    /// The frame's destination MAC after the program, from ingress `port`.
    fn dmac(&self, vip: &str, port: &str) -> (Option<Action>, [u8; 6]) {
        let run = self
            .dp
            .test_run(&self.frame(vip, 20), self.topo.ifindex(port))
            .unwrap();
        (run.action, run.frame[..6].try_into().unwrap())
    }

    /// Runs the frame and checks it against the model of the topology as
    /// created (neighbours and routes unchanged).
    fn agrees(&self, vip: &str, port: &str) {
        let frame = self.frame(vip, 20);
        let ifindex = self.topo.ifindex(port);
        let run = self.dp.test_run(&frame, ifindex).unwrap();
        let want = model::process(&self.plan, &self.topo as &dyn Network, ifindex, &frame);
        assert_eq!(
            run.action,
            Some(want.action),
            "{vip} from {port}: {}",
            want.reason
        );
        assert_eq!(run.frame, want.frame, "{vip} from {port}");
    }
}

fn backend_mac(b: &Bench, backend: &str) -> [u8; 6] {
    b.topo
        .neighbour_mac(backend.parse::<IpAddr>().unwrap())
        .unwrap()
}

#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn a_cached_next_hop_holds_until_the_generation_changes() {
    in_new_netns(|| {
        let b = Bench::new(HOUR);
        for (vip, backend) in [("10.100.0.1", "10.1.0.11"), ("fd00:100::1", "fd00:1::11")] {
            b.agrees(vip, "lt0");
            let old = backend_mac(&b, backend);
            sh(&format!(
                "ip neigh replace {backend} lladdr {} dev lt0 nud permanent",
                fmt_mac(&MOVED)
            ));
            // Cached: the change is not seen (no listener in this test).
            assert_eq!(b.dmac(vip, "lt0"), (Some(Action::Tx), old), "{vip}");
            b.dp.invalidate_nexthops().unwrap();
            assert_eq!(b.dmac(vip, "lt0"), (Some(Action::Tx), MOVED), "{vip}");
        }
    });
}

/// A program loaded on reused pins (a restarted daemon) trusts none of the
/// next hops an earlier program cached in the pinned `nexthops`: routes and
/// neighbours may have changed while no daemon listened. The program reads
/// its own copy of the generation (global data, zeroed at load): loading
/// must set it past the pinned record's, or the second program, which
/// changes nothing else here, takes the first one's stale answer.
#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn a_program_loaded_on_reused_pins_trusts_no_cached_next_hop() {
    in_new_netns(|| {
        lethe::dataplane::pin_thread_to_cpu(0).unwrap();
        let dir = PinDir::new("reused-nexthops");
        let topo = Topology::create();
        let plan = Plan::new(&config()).unwrap();
        let load = || {
            let dp = Dataplane::load_pinned(&dir.0).unwrap();
            dp.apply(&plan).unwrap();
            dp
        };
        let frame = Flow::tcp("198.51.100.1", 40000, "10.100.0.1", 80)
            .payload(20)
            .frame(topo.iface_mac("lt0"));
        let dmac = |dp: &Dataplane| {
            let run = dp.test_run(&frame, topo.ifindex("lt0")).unwrap();
            (run.action, <[u8; 6]>::try_from(&run.frame[..6]).unwrap())
        };
        let first = load();
        first.allow_tx_port(topo.ifindex("lt2")).unwrap();
        first.set_nexthop_ttl_jiffies(HOUR).unwrap();
        let old = topo
            .neighbour_mac("10.1.0.11".parse::<IpAddr>().unwrap())
            .unwrap();
        assert_eq!(dmac(&first), (Some(Action::Tx), old));
        sh(&format!(
            "ip neigh replace 10.1.0.11 lladdr {} dev lt0 nud permanent",
            fmt_mac(&MOVED)
        ));
        // Cached, and nobody told the first program.
        assert_eq!(dmac(&first), (Some(Action::Tx), old));
        let second = load();
        assert_eq!(dmac(&second), (Some(Action::Tx), MOVED));
    });
}

#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn a_client_next_hop_of_nat_return_traffic_is_cached_too() {
    in_new_netns(|| {
        let b = Bench::new(HOUR);
        let lt0 = b.topo.ifindex("lt0");
        let reply = b.reply();
        let want = model::process(&b.plan, &b.topo as &dyn Network, lt0, &reply);
        let run = b.dp.test_run(&reply, lt0).unwrap();
        assert_eq!(
            (run.action, &run.frame),
            (Some(want.action), &want.frame),
            "{}",
            want.reason
        );
        let gateway = backend_mac(&b, "10.1.0.254");
        assert_eq!(run.frame[..6], gateway);
        sh(&format!(
            "ip neigh replace 10.1.0.254 lladdr {} dev lt0 nud permanent",
            fmt_mac(&MOVED)
        ));
        let run = b.dp.test_run(&reply, lt0).unwrap();
        assert_eq!(
            (run.action, &run.frame[..6]),
            (Some(Action::Tx), &gateway[..]),
            "cached"
        );
        b.dp.invalidate_nexthops().unwrap();
        let run = b.dp.test_run(&reply, lt0).unwrap();
        assert_eq!(
            (run.action, &run.frame[..6]),
            (Some(Action::Tx), &MOVED[..])
        );
        assert_eq!(run.frame[6..], want.frame[6..], "only the next hop changed");
    });
}

#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn outer_sources_follow_the_routes_when_resolved_again() {
    in_new_netns(|| {
        let b = Bench::new(HOUR);
        let lt0 = b.topo.ifindex("lt0");
        let frame = b.frame("fd00:100::1", 20);
        let outer_src = || {
            let run = b.dp.test_run(&frame, lt0).unwrap();
            assert_eq!(run.action, Some(Action::Tx));
            IpAddr::from(<[u8; 16]>::try_from(&run.frame[14 + 8..14 + 24]).unwrap())
        };
        let first: IpAddr = "fd00:1::1".parse().unwrap();
        let moved: IpAddr = "fd00:1::5".parse().unwrap();
        assert_eq!(outer_src(), first);
        sh("ip -6 addr add fd00:1::5/64 dev lt0 nodad");
        sh("ip -6 route add fd00:1::11/128 dev lt0 src fd00:1::5");
        // Resolved once, when the record was written.
        assert_eq!(outer_src(), first);
        assert_eq!(b.dp.refresh_sources(&b.plan).unwrap(), 1);
        assert_eq!(outer_src(), moved);
        // Nothing changed since: nothing rewritten.
        assert_eq!(b.dp.refresh_sources(&b.plan).unwrap(), 0);
        b.agrees("10.100.0.1", "lt0");
    });
}

#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn a_cached_next_hop_expires() {
    in_new_netns(|| {
        let b = Bench::new(1);
        b.agrees("10.100.0.1", "lt0");
        sh(&format!(
            "ip neigh replace 10.1.0.11 lladdr {} dev lt0 nud permanent",
            fmt_mac(&MOVED)
        ));
        // Well past the lifetime: one jiffy is 10 ms at most.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(b.dmac("10.100.0.1", "lt0"), (Some(Action::Tx), MOVED));
    });
}

#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn a_next_hop_cached_from_one_port_is_not_used_from_another() {
    in_new_netns(|| {
        let b = Bench::new(HOUR);
        // From lt0 the backend is on the ingress port: XDP_TX. From lt2 it
        // is not, and lt0 is not in tx_ports: dropped. A cache keyed by
        // backend alone would answer XDP_TX with lt0's MACs.
        for _ in 0..3 {
            b.agrees("10.100.0.1", "lt0");
            b.agrees("10.100.0.1", "lt2");
            b.agrees("fd00:100::1", "lt0");
            b.agrees("fd00:100::1", "lt2");
        }
    });
}

/// Polls until `f` holds, for at most 5 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: not within 5 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn route_neighbour_and_link_changes_reach_the_program_through_the_listener() {
    in_new_netns(|| {
        let b = Bench::new(HOUR);
        // Its worker thread is created from this one, so it is in this
        // namespace, and so is the listener's socket.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let cancel = tokio_util::sync::CancellationToken::new();
        let sources = Arc::new(AtomicUsize::new(0));
        let watcher = rt.spawn(lethe::route_watch::watch(
            b.dp.clone(),
            {
                let sources = sources.clone();
                move || {
                    sources.fetch_add(1, Ordering::SeqCst);
                }
            },
            cancel.clone(),
        ));
        // Subscribed before anything changes.
        std::thread::sleep(Duration::from_millis(200));

        // A neighbour's new MAC: next hops only.
        b.agrees("10.100.0.1", "lt0");
        sh(&format!(
            "ip neigh replace 10.1.0.11 lladdr {} dev lt0 nud permanent",
            fmt_mac(&MOVED)
        ));
        eventually("the moved neighbour", || {
            b.dmac("10.100.0.1", "lt0") == (Some(Action::Tx), MOVED)
        });

        // A route's new path: the backend now goes through the gateway
        // (dsr: not adjacent, dropped).
        let before = sources.load(Ordering::SeqCst);
        sh("ip route add 10.1.0.11/32 via 10.1.0.254 dev lt0");
        eventually("the new route", || {
            b.dmac("10.100.0.1", "lt0").0 == Some(Action::Drop)
        });
        eventually("the source refresh asked for", || {
            sources.load(Ordering::SeqCst) > before
        });
        sh("ip route del 10.1.0.11/32");
        eventually("the route removed", || {
            b.dmac("10.100.0.1", "lt0").0 == Some(Action::Tx)
        });

        // A link's new MTU: an encapsulated packet that fitted no longer
        // does, and the client is told (ICMPv6 packet too big).
        let big = b.frame("fd00:100::1", 1400);
        let l3 = |f: &[u8]| f[14 + 6]; // IPv6 next header
        let lt0 = b.topo.ifindex("lt0");
        let run = b.dp.test_run(&big, lt0).unwrap();
        assert_eq!(
            (run.action, l3(&run.frame)),
            (Some(Action::Tx), 41),
            "fits at 1500"
        );
        sh("ip link set lt0 mtu 1400");
        eventually("the smaller MTU", || {
            let run = b.dp.test_run(&big, lt0).unwrap();
            (run.action, l3(&run.frame)) == (Some(Action::Tx), 58)
        });

        cancel.cancel();
        rt.block_on(watcher).unwrap();
    });
}
