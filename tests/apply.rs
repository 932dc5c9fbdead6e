//! Applying plans to the real maps: what is published equals the plan,
//! every kind of change takes effect (checked packet by packet against the
//! model), and table swaps are atomic while packets run.
//!
//! Privileged: needs root (BPF, a network namespace). Run by scripts/test.sh.

mod common;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use lethe::abi::{Action, Mode, Reason};
use lethe::config::{Backend, Config};
use lethe::dataplane::Dataplane;
use lethe::flow_hash::FlowKey;
use lethe::model::{self, Network};
use lethe::plan::Plan;

use common::config::fixture_config;
use common::netns::in_new_netns;
use common::packets::Flow;
use common::pins::{freeze, PinDir};
use common::topology::Topology;

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn backends(list: &[&str]) -> Vec<Backend> {
    list.iter()
        .map(|a| Backend {
            address: addr(a),
            port: None,
            weight: 1,
        })
        .collect()
}

/// Sends `n` flows to every VIP of the plan and checks the kernel against
/// the model: verdict and bytes.
fn agree(dp: &Dataplane, topo: &Topology, plan: &Plan, n: u16) {
    let lt0 = topo.ifindex("lt0");
    let mac = topo.iface_mac("lt0");
    for v in &plan.vips {
        for i in 0..n {
            let src = if v.vip.address.is_ipv4() {
                "198.51.100.1"
            } else {
                "2001:db8:c::1"
            };
            let mut f = Flow::tcp(
                src,
                1000 + i * 7,
                &v.vip.address.to_string(),
                if v.vip.port == 0 { 1 + i } else { v.vip.port },
            );
            f.udp = v.vip.protocol == lethe::config::Protocol::Udp;
            let frame = f.frame(mac);
            let run = dp.test_run(&frame, lt0).unwrap();
            let want = model::process(plan, topo as &dyn Network, lt0, &frame);
            assert_eq!(
                run.action,
                Some(want.action),
                "VIP {} flow {i}: {}",
                v.vip.name,
                want.reason
            );
            assert_eq!(run.frame, want.frame, "VIP {} flow {i}", v.vip.name);
        }
    }
}

/// Every VIP's published table holds the plan's backends, slot by slot.
fn assert_published(dp: &Dataplane, plan: &Plan) {
    for v in &plan.vips {
        let published = dp.published_table(&v.key()).unwrap();
        if v.table.is_empty() {
            assert_eq!(published, None, "{}", v.vip.name);
        } else {
            let want: Vec<IpAddr> = v
                .table
                .slots
                .iter()
                .map(|&i| v.table.backends[i as usize])
                .collect();
            assert_eq!(published.as_deref(), Some(&want[..]), "{}", v.vip.name);
        }
    }
}

#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn published_tables_equal_the_plan() {
    let plan = Plan::new(&fixture_config()).unwrap();
    let dp = Dataplane::load().unwrap();
    dp.apply(&plan).unwrap();
    assert_published(&dp, &plan);
}

/// A change of more new tables than one batched publish takes (64 of
/// 65537 slots) goes live group by group, into both outer maps; so does a
/// second change of every VIP: new backend sets, and a new table size for
/// every fifth VIP (its table moves to the VIP's spare table id).
#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn a_change_of_many_vips_publishes_every_table() {
    let config = |round: u32| -> Config {
        let vips: Vec<serde_json::Value> = (0..70u32)
            .map(|i| {
                let size = if i % 5 == 0 { [251, 65537][round as usize] } else { 65537 };
                let backends: Vec<serde_json::Value> = (round..round + 3)
                    .map(|b| serde_json::json!({"address": format!("10.1.{i}.{}", b + 1)}))
                    .collect();
                serde_json::json!({"name": format!("v{i}"), "address": format!("10.200.0.{}", i + 1),
                    "port": 80, "protocol": "tcp", "mode": "dsr", "table_size": size,
                    "backends": backends})
            })
            .collect();
        serde_json::from_value(serde_json::json!({"vips": vips})).unwrap()
    };
    let dp = Dataplane::load().unwrap();
    for round in 0..2 {
        let plan = Plan::new(&config(round)).unwrap();
        dp.apply(&plan).unwrap();
        assert_published(&dp, &plan);
    }
}

#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn every_kind_of_change_takes_effect() {
    in_new_netns(|| {
        let topo = Topology::create();
        let dp = Dataplane::load().unwrap();
        dp.allow_tx_port(topo.ifindex("lt2")).unwrap();
        let mut config = fixture_config();
        let step = |what: &str, config: &Config| {
            let plan = Plan::new(config).unwrap_or_else(|e| panic!("{what}: {e}"));
            dp.apply(&plan).unwrap_or_else(|e| panic!("{what}: {e}"));
            agree(&dp, &topo, &plan, 40);
            plan
        };
        step("initial", &config);
        let web4 = |c: &mut Config| {
            c.vips
                .iter_mut()
                .find(|v| v.name == "web4")
                .unwrap()
                .clone()
        };
        let idx = config.vips.iter().position(|v| v.name == "web4").unwrap();

        config.vips[idx].backends.remove(0);
        step("backend removed", &config);
        config.vips[idx].backends.push(Backend {
            address: addr("10.1.0.11"),
            port: None,
            weight: 3,
        });
        step("backend added with weight 3", &config);
        config.vips[idx].backends[0].weight = 0;
        step("backend drained (weight 0)", &config);
        config.vips[idx].table_size = 7919;
        step("table size changed", &config);
        config.vips[idx].table_size = 65_537;
        config.vips[idx].backends = backends(&[]);
        let plan = step("all backends removed", &config);
        let lt0 = topo.ifindex("lt0");
        let frame = Flow::tcp("198.51.100.1", 5, "10.100.0.1", 80).frame(topo.iface_mac("lt0"));
        assert_eq!(dp.test_run(&frame, lt0).unwrap().action, Some(Action::Drop));
        let _ = plan;
        config.vips[idx].backends = backends(&["10.1.0.12", "10.1.0.13"]);
        step("backends back", &config);
        config.vips[idx].mode = Mode::Ipip;
        config.vips[idx].backends = backends(&["10.9.0.1", "fd00:9::1"]);
        step("mode changed to ipip, mixed-family backends", &config);
        config.vips[idx].sticky = true;
        step("sticky on", &config);
        config.hash_seed = 12345;
        step("hash seed changed", &config);
        let removed = web4(&mut config);
        config.vips.remove(idx);
        step("VIP removed", &config);
        let out = model::process(
            &Plan::new(&config).unwrap(),
            &topo as &dyn Network,
            lt0,
            &frame,
        );
        assert_eq!(out.reason, Reason::NotVip);
        config.vips.push(removed);
        step("VIP added back", &config);
        config.vips.truncate(3);
        step("most VIPs removed", &config);
        step("the whole fixture config again", &fixture_config());
    });
}

/// While one thread flips a VIP's table between two backend sets (and two
/// sizes) thousands of times, another runs packets through the program:
/// every packet goes where one of the two plans sends it, never elsewhere.
#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn table_swaps_are_atomic_under_traffic() {
    in_new_netns(|| {
        let topo = Topology::create();
        let dp = Dataplane::load().unwrap();
        let mut a = fixture_config();
        a.vips.retain(|v| v.name == "web4");
        a.vips[0].backends = backends(&["10.1.0.11", "10.1.0.12"]);
        let mut b = a.clone();
        b.vips[0].backends = backends(&["10.1.0.12", "10.1.0.13"]);
        // The same two tables at another size: the spare-slot flip.
        let (mut a2, mut b2) = (a.clone(), b.clone());
        a2.vips[0].table_size = 7919;
        b2.vips[0].table_size = 7919;
        let plans = [Plan::new(&a).unwrap(), Plan::new(&b).unwrap()];
        let resized = [Plan::new(&a2).unwrap(), Plan::new(&b2).unwrap()];
        dp.apply(&plans[0]).unwrap();

        let lt0 = topo.ifindex("lt0");
        let mac = topo.iface_mac("lt0");
        // Per flow: the backend MAC under each of the four tables.
        let flows: Vec<(Vec<u8>, [Vec<u8>; 4])> = (0..64u16)
            .map(|i| {
                let f = Flow::tcp("198.51.100.9", 30_000 + i, "10.100.0.1", 80);
                let frame = f.frame(mac);
                let key = FlowKey {
                    src: f.src,
                    dst: f.dst,
                    sport: f.sport,
                    dport: f.dport,
                    proto: 6,
                };
                let dmac = |p: &Plan| {
                    let backend = model::pick(p, &key).unwrap().backend;
                    topo.neighbour_mac(backend).unwrap().to_vec()
                };
                (
                    frame,
                    [
                        dmac(&plans[0]),
                        dmac(&resized[0]),
                        dmac(&plans[1]),
                        dmac(&resized[1]),
                    ],
                )
            })
            .collect();

        let swaps = 2000;
        let done = AtomicBool::new(false);
        let (seen, bad) = std::thread::scope(|s| {
            let runner = s.spawn(|| {
                let (mut seen, mut bad) = ([0u64; 2], Vec::new());
                let mut i = 0;
                while !done.load(Ordering::Relaxed) {
                    let (frame, want) = &flows[i % flows.len()];
                    let run = dp.test_run(frame, lt0).unwrap();
                    let got = run.frame[..6].to_vec();
                    let first = want[..2].contains(&got);
                    let second = want[2..].contains(&got);
                    match (run.action == Some(Action::Tx), first, second) {
                        (true, true, false) => seen[0] += 1,
                        (true, false, true) => seen[1] += 1,
                        (true, true, true) => {}
                        _ if bad.len() < 20 => bad.push(format!(
                            "flow {}: {:?} {:02x?}, want one of {:02x?}",
                            i % flows.len(),
                            run.action,
                            got,
                            want
                        )),
                        _ => {}
                    }
                    i += 1;
                }
                (seen, bad)
            });
            for n in 0..swaps {
                // Every tenth pair of swaps also changes the table size.
                let set = if (n / 2) % 10 == 9 { &resized } else { &plans };
                dp.apply(&set[(n + 1) % 2]).unwrap();
            }
            done.store(true, Ordering::Relaxed);
            runner.join().unwrap()
        });
        println!(
            "{swaps} swaps; packets matching only the first plan: {}, only the second: {}",
            seen[0], seen[1]
        );
        let other_reasons: Vec<_> = dp
            .reason_counters()
            .unwrap()
            .into_iter()
            .filter(|(r, c)| *r != Reason::FwdTx && c.packets > 0)
            .collect();
        assert!(
            bad.is_empty(),
            "packets matching neither plan: {bad:?}; reasons other than fwd_tx: {other_reasons:?}"
        );
        assert!(
            seen[0] > 0 && seen[1] > 0,
            "traffic did not overlap the swaps: {seen:?}"
        );
    });
}

/// IPv6 VIP addresses whose words cancel in the index hash share one home
/// entry in vip_index under every seed: past VIP_PROBES of them the index
/// cannot hold them all and the program finds the rest in `vips`, a
/// port-specific VIP there still before an all-ports one of the same
/// address that the index holds.
#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn vips_the_index_cannot_place_are_found_in_the_vips_map() {
    in_new_netns(|| {
        let topo = Topology::create();
        let dp = Dataplane::load().unwrap();
        let mut config = Config::default();
        let n = lethe::abi::VIP_PROBES + 3;
        let colliding: Vec<IpAddr> = (1..=n)
            .map(|i| {
                let k = i.wrapping_mul(0x0101_0101);
                let mut o = [0u8; 16];
                o[..4].copy_from_slice(&[0xfd, 0, 0, 0]);
                o[4..8].copy_from_slice(&k.rotate_right(8).to_le_bytes());
                o[8..12].copy_from_slice(&k.rotate_right(16).to_le_bytes());
                IpAddr::from(o)
            })
            .collect();
        let template = fixture_config()
            .vips
            .into_iter()
            .find(|v| v.address.is_ipv6() && v.mode == Mode::Dsr && v.port != 0)
            .expect("an IPv6 dsr VIP in the fixture config");
        for (i, a) in colliding.iter().enumerate() {
            let mut v = template.clone();
            v.name = format!("c{i}");
            v.address = *a;
            v.port = 443;
            config.vips.push(v);
        }
        // The address that sorts last: its port-443 key is one the index
        // leaves out. Its all-ports VIP has another home.
        let last = *colliding
            .iter()
            .max_by_key(|a| match a {
                IpAddr::V6(v) => v.octets(),
                IpAddr::V4(_) => unreachable!(),
            })
            .unwrap();
        let mut all = template.clone();
        all.name = "all-ports".into();
        all.address = last;
        all.port = 0;
        config.vips.push(all);
        let plan = Plan::new(&config).unwrap();
        dp.apply(&plan).unwrap();

        let lt0 = topo.ifindex("lt0");
        let mac = topo.iface_mac("lt0");
        for a in &colliding {
            let frame = Flow::tcp("2001:db8:c::1", 4000, &a.to_string(), 443).frame(mac);
            let t = dp.trace(&frame, lt0).unwrap();
            let vip = t.vip.expect("a VIP matched");
            assert_eq!((vip.address, vip.port), (*a, 443));
            assert_eq!(t.reason, Some(Reason::FwdTx), "{a}");
        }
        let frame = Flow::tcp("2001:db8:c::1", 4000, &last.to_string(), 80).frame(mac);
        let vip = dp
            .trace(&frame, lt0)
            .unwrap()
            .vip
            .expect("the all-ports VIP");
        assert_eq!((vip.address, vip.port), (last, 0));
        agree(&dp, &topo, &plan, 20);
    });
}

/// quick_filter's second stage follows the plan both ways: a VIP that
/// moves to another port of its address takes its old port's bit with it,
/// and an all-ports VIP's mark comes and goes with it.
#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn the_second_stage_follows_vip_ports() {
    in_new_netns(|| {
        let topo = Topology::create();
        let lt0 = topo.ifindex("lt0");
        let mac = topo.iface_mac("lt0");
        let dp = Dataplane::load().unwrap();
        // To web4's address, its IP length one byte beyond the frame:
        // parsed (bad_ip_len) while a VIP may hold the port, passed at the
        // second stage (not_vip) while none can.
        let flawed = |port: u16| {
            let mut f = Flow::tcp("198.51.100.1", 5353, "10.100.0.1", port).frame(mac);
            let n = (f.len() - 14 + 1) as u16;
            f[16..18].copy_from_slice(&n.to_be_bytes());
            f
        };
        let full = fixture_config();
        let mut moved = full.clone();
        for v in moved.vips.iter_mut().filter(|v| v.name == "web4") {
            v.port = 8081;
        }
        let mut all_ports = full.clone();
        let mut web4all = full.vips.iter().find(|v| v.name == "web4").unwrap().clone();
        (web4all.name, web4all.port) = ("web4all".into(), 0);
        all_ports.vips.push(web4all);
        let (bad, passed) = (Reason::BadIpLen, Reason::NotVip);
        // (configuration, want for port 80, want for port 9999)
        for (config, want80, want9999) in [
            (&full, bad, passed),
            (&moved, passed, passed),
            (&full, bad, passed),
            (&all_ports, bad, bad),
            (&full, bad, passed),
        ] {
            let plan = Plan::new(config).unwrap();
            dp.apply(&plan).unwrap();
            // The premise: the address keeps its bit (dns4, and web4 on
            // its new port), and no other key shares a port's.
            let (client, vip) = (addr("198.51.100.1"), addr("10.100.0.1"));
            assert!(!plan.quick.passes(&client, &vip));
            for (port, want) in [(80, want80), (9999, want9999)] {
                assert_eq!(
                    plan.quick.second_stage(&client, &vip)
                        && plan.quick.port_passes(&vip, port, lethe::abi::IPPROTO_TCP),
                    want == passed,
                    "port {port}"
                );
                let frame = flawed(port);
                let got = dp.trace(&frame, lt0).unwrap().reason;
                assert_eq!(got, Some(want), "port {port}");
                let model = model::process(&plan, &topo as &dyn Network, lt0, &frame);
                assert_eq!(model.reason, want, "model, port {port}");
            }
        }
    });
}

/// quick_filter, the program's first test, follows the plan both ways.
/// While a VIP has an address (or a nat VIP a backend), a flawed packet to
/// that address (from that backend) is parsed and its flaw found; once the
/// VIP is gone, the same packet leaves at the first test as no VIP's.
#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn the_first_test_follows_vip_addresses_and_nat_backends() {
    in_new_netns(|| {
        let topo = Topology::create();
        let lt0 = topo.ifindex("lt0");
        let mac = topo.iface_mac("lt0");
        let dp = Dataplane::load().unwrap();
        // IP length one byte beyond the frame.
        let flawed = |src: &str, dst: &str| {
            let mut f = Flow::tcp(src, 5353, dst, 80).frame(mac);
            // IPv6 payload length, or IPv4 total length.
            let (at, counted_from) = if dst.contains(':') {
                (18, 54)
            } else {
                (16, 14)
            };
            let n = (f.len() - counted_from + 1) as u16;
            f[at..at + 2].copy_from_slice(&n.to_be_bytes());
            f
        };
        let cases = [
            ("198.51.100.1", "10.100.0.1"),   // web4, dns4
            ("2001:db8:c::1", "fd00:100::1"), // web6
            ("10.1.0.13", "198.51.100.1"),    // natudp4's backend
        ];
        let full = fixture_config();
        let mut less = full.clone();
        less.vips.retain(|v| {
            v.address != addr("10.100.0.1")
                && v.address != addr("fd00:100::1")
                && !v.backends.iter().any(|b| b.address == addr("10.1.0.13"))
        });
        for (config, want) in [
            (&full, Reason::BadIpLen),
            (&less, Reason::NotVip),
            (&full, Reason::BadIpLen),
        ] {
            let plan = Plan::new(config).unwrap();
            dp.apply(&plan).unwrap();
            for (src, dst) in cases {
                // The premise: no other VIP or backend shares the bits.
                assert_eq!(
                    plan.quick.passes(&addr(src), &addr(dst)),
                    want == Reason::NotVip,
                    "{src} -> {dst}"
                );
                let frame = flawed(src, dst);
                let got = dp.trace(&frame, lt0).unwrap().reason;
                assert_eq!(got, Some(want), "{src} -> {dst}");
                let model = model::process(&plan, &topo as &dyn Network, lt0, &frame);
                assert_eq!(model.reason, want, "model: {src} -> {dst}");
            }
        }
    });
}

/// A nat backend's replies find their VIP from its first forwarded packet
/// on: its return-path entry is written before any table names it. While
/// a backend is added and removed over and over, a reply sent right after
/// a packet went to it is never passed untouched (`not_vip`, the backend's
/// own address towards the client) — unless the backend was being removed
/// meanwhile.
#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn a_nat_backend_answers_as_its_vip_from_its_first_packet() {
    in_new_netns(|| {
        let topo = Topology::create();
        let dp = Dataplane::load().unwrap();
        let mut without = fixture_config();
        without.vips.retain(|v| v.name == "nat4");
        let with_port = |a: &str| Backend {
            port: Some(8080),
            ..backends(&[a]).remove(0)
        };
        without.vips[0].backends = vec![with_port("10.1.0.11")];
        let mut with = without.clone();
        with.vips[0].backends.push(with_port("10.1.0.12"));
        let plans = [Plan::new(&without).unwrap(), Plan::new(&with).unwrap()];
        dp.apply(&plans[0]).unwrap();
        let (lt0, mac) = (topo.ifindex("lt0"), topo.iface_mac("lt0"));
        let added: IpAddr = addr("10.1.0.12");

        // Even: the backend is being added or is in; odd: being removed.
        let phase = std::sync::atomic::AtomicU64::new(1);
        let done = AtomicBool::new(false);
        let (to_added, bad) = std::thread::scope(|s| {
            let runner = s.spawn(|| {
                let (mut to_added, mut bad) = (0u64, Vec::new());
                let mut i = 0u16;
                while !done.load(Ordering::Relaxed) {
                    i = i.wrapping_add(1);
                    let before = phase.load(Ordering::SeqCst);
                    let f = Flow::tcp("198.51.100.9", 10_000 + i % 4096, "10.100.0.20", 80);
                    let run = dp.test_run(&f.frame(mac), lt0).unwrap();
                    // The rewritten IPv4 destination.
                    if run.action != Some(Action::Tx) || run.frame[30..34] != [10, 1, 0, 12] {
                        continue;
                    }
                    to_added += 1;
                    let reply = Flow::tcp("10.1.0.12", 8080, "198.51.100.9", f.sport);
                    let traced = dp.trace(&reply.frame(mac), lt0).unwrap();
                    let after = phase.load(Ordering::SeqCst);
                    if before == after
                        && before % 2 == 0
                        && traced.reason == Some(Reason::NotVip)
                        && bad.len() < 10
                    {
                        bad.push(format!(
                            "phase {before}: the reply from {added} was not_vip"
                        ));
                    }
                }
                (to_added, bad)
            });
            for n in 0..300u64 {
                phase.store(2 * n, Ordering::SeqCst);
                dp.apply(&plans[1]).unwrap();
                phase.store(2 * n + 1, Ordering::SeqCst);
                dp.apply(&plans[0]).unwrap();
            }
            done.store(true, Ordering::Relaxed);
            runner.join().unwrap()
        });
        assert!(bad.is_empty(), "{bad:?}");
        assert!(to_added > 0, "no packet went to the added backend");
        println!("{to_added} packets to the added backend, each reply answered as the VIP");
    });
}

/// A backend that gets a new record (here: its port changes) keeps its
/// counters: what it counted under the old id carries on.
#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn a_backend_renumbered_keeps_its_counters() {
    in_new_netns(|| {
        let topo = Topology::create();
        let dp = Dataplane::load().unwrap();
        let mut a = fixture_config();
        a.vips.retain(|v| v.name == "web4");
        a.vips[0].backends = backends(&["10.1.0.11"]);
        let mut b = a.clone();
        b.vips[0].backends[0].port = Some(8080);
        let (pa, pb) = (Plan::new(&a).unwrap(), Plan::new(&b).unwrap());
        let key = pa.vips[0].key();
        let x = addr("10.1.0.11");
        let (lt0, mac) = (topo.ifindex("lt0"), topo.iface_mac("lt0"));
        let send = |n: u16| {
            for i in 0..n {
                let f = Flow::tcp("198.51.100.9", 20_000 + i, "10.100.0.1", 80);
                let run = dp.test_run(&f.frame(mac), lt0).unwrap();
                assert_eq!(run.action, Some(Action::Tx));
            }
        };
        dp.apply(&pa).unwrap();
        send(5);
        let before = dp.backend_counter(&key, x).unwrap().unwrap();
        assert_eq!(before.packets, 5);
        dp.apply(&pb).unwrap();
        let after = dp.backend_counter(&key, x).unwrap().unwrap();
        assert_eq!(after, before, "the counters went back with the new record");
        send(3);
        assert_eq!(dp.backend_counter(&key, x).unwrap().unwrap().packets, 8);
        // Out of the VIP and back: a new series.
        let mut none = a.clone();
        none.vips[0].backends = backends(&["10.1.0.12"]);
        dp.apply(&Plan::new(&none).unwrap()).unwrap();
        dp.apply(&pa).unwrap();
        assert_eq!(dp.backend_counter(&key, x).unwrap().unwrap().packets, 0);
    });
}

/// A change that removes a VIP and changes another's table, refused by the
/// kernel (the outer table maps frozen), loses nothing: the removed VIP
/// still sends each flow where it did, counting under the same id, the
/// other keeps its table, and the restore that follows a failed change
/// (the plan before, applied again) succeeds while the refusal lasts. The
/// removed VIP used to leave the index before the rest was even tried.
#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn a_refused_change_that_removes_a_vip_loses_nothing() {
    let pins = PinDir::new("refusedremoval");
    let dir = pins.0.clone();
    in_new_netns(move || {
        let topo = Topology::create();
        let (lt0, mac) = (topo.ifindex("lt0"), topo.iface_mac("lt0"));
        let dp = Dataplane::load_pinned(&dir).unwrap();
        let mut both = fixture_config();
        both.vips
            .retain(|v| v.name == "web4" || v.name == "sticky4");
        let mut changed = both.clone();
        changed.vips.retain(|v| v.name == "sticky4");
        changed.vips[0].backends.pop();
        let before = Plan::new(&both).unwrap();
        dp.apply(&before).unwrap();
        let web4 = before
            .vips
            .iter()
            .find(|v| v.vip.name == "web4")
            .unwrap()
            .key();
        let frames: Vec<Vec<u8>> = (0..16)
            .map(|i| Flow::tcp("198.51.100.1", 6000 + i, "10.100.0.1", 80).frame(mac))
            .collect();
        let sent_to = |when: &str| -> Vec<Option<IpAddr>> {
            frames
                .iter()
                .map(|f| {
                    let t = dp.trace(f, lt0).unwrap();
                    assert_eq!(t.reason, Some(Reason::FwdTx), "web4, {when}");
                    t.backend
                })
                .collect()
        };
        let sent = sent_to("before");
        let counted = dp.vip_counter(&web4).unwrap().unwrap();

        for name in ["tables", "tables_fixed"] {
            freeze(&dir, name);
        }
        let err = dp
            .apply(&Plan::new(&changed).unwrap())
            .expect_err("the kernel refuses every table write");
        println!("refused: {err}");
        assert_eq!(sent_to("after the refused change"), sent);
        let now = dp.vip_counter(&web4).unwrap().expect("web4 installed");
        assert_eq!(
            now.packets,
            counted.packets + frames.len() as u64,
            "web4 counts under another id"
        );
        assert_published(&dp, &before);

        dp.apply(&before)
            .expect("the restore, while the refusal lasts");
        assert_eq!(sent_to("after the restore"), sent);
        assert_published(&dp, &before);
    });
}

/// A VIP replaced by an all-ports VIP of its address in one change (and
/// back again) answers throughout: the new key enters the index with the
/// flip that takes the old one out. With a flip for each, packets to the
/// port were passed as no VIP's (`not_vip`) in between.
#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn a_vip_that_moves_to_all_ports_answers_throughout() {
    in_new_netns(|| {
        let topo = Topology::create();
        let (lt0, mac) = (topo.ifindex("lt0"), topo.iface_mac("lt0"));
        let dp = Dataplane::load().unwrap();
        let mut one_port = fixture_config();
        one_port.vips.retain(|v| v.name == "web4");
        let mut all_ports = one_port.clone();
        all_ports.vips[0].port = 0;
        let plans = [
            Plan::new(&one_port).unwrap(),
            Plan::new(&all_ports).unwrap(),
        ];
        dp.apply(&plans[0]).unwrap();
        let frames: Vec<Vec<u8>> = (0..64)
            .map(|i| Flow::tcp("198.51.100.9", 40_000 + i, "10.100.0.1", 80).frame(mac))
            .collect();

        let done = AtomicBool::new(false);
        let (sent, bad, first_bad) = std::thread::scope(|s| {
            let runner = s.spawn(|| {
                let (mut sent, mut bad, mut first_bad) = (0usize, 0usize, Vec::new());
                while !done.load(Ordering::Relaxed) {
                    let run = dp.test_run(&frames[sent % frames.len()], lt0).unwrap();
                    if run.action != Some(Action::Tx) {
                        bad += 1;
                        if first_bad.len() < 5 {
                            first_bad.push(format!("packet {sent}: {:?}", run.action));
                        }
                    }
                    sent += 1;
                }
                (sent, bad, first_bad)
            });
            for n in 0..100 {
                dp.apply(&plans[(n + 1) % 2]).unwrap();
            }
            done.store(true, Ordering::Relaxed);
            runner.join().unwrap()
        });
        println!("{sent} packets during 100 moves");
        assert_eq!(bad, 0, "of {sent} packets, not forwarded: {first_bad:?}");
    });
}

/// Records in `backends` that are in use (family != 0), as pinned in `dir`.
fn backend_records_in_use(dir: &std::path::Path) -> usize {
    use lethe::dataplane::types::lethe_backend;
    use lethe::dataplane::Pod;
    use libbpf_rs::{MapCore, MapFlags, MapHandle};
    let backends = MapHandle::from_pinned_path(dir.join("backends")).unwrap();
    backends
        .lookup_batch(4096, MapFlags::ANY, MapFlags::ANY)
        .unwrap()
        .filter(|(_, v)| lethe_backend::from_bytes(v).is_some_and(|r| r.family != 0))
        .count()
}

/// A change the kernel refuses halfway (the table that goes into `tables`
/// published, the one for `tables_fixed` refused: frozen) is undone by the
/// restore that follows (the plan before, applied again): the VIP whose
/// table went live drops again for want of a backend, and the record of
/// the backend the refused table would have named is freed. The restore
/// used to keep the live table (the bookkeeping said "no table"), fail on
/// the refused one, and leave the record in use.
#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn a_change_refused_halfway_is_undone_by_the_restore() {
    let pins = PinDir::new("halfway");
    let dir = pins.0.clone();
    in_new_netns(move || {
        let topo = Topology::create();
        let (lt0, mac) = (topo.ifindex("lt0"), topo.iface_mac("lt0"));
        let dp = Dataplane::load_pinned(&dir).unwrap();
        let original: Config = serde_json::from_value(serde_json::json!({"vips": [
            {"name": "v", "address": "10.100.0.1", "port": 80, "protocol": "tcp", "mode": "dsr",
             "table_size": 7919, "backends": [{"address": "10.1.0.11", "weight": 0}]},
            {"name": "w", "address": "10.100.0.3", "port": 443, "protocol": "tcp", "mode": "dsr",
             "backends": [{"address": "10.1.0.11"}, {"address": "10.1.0.12"}]}]}))
        .unwrap();
        let mut changed = original.clone();
        changed.vips[0].backends[0].weight = 1;
        changed.vips[1].backends.extend(backends(&["10.1.0.13"]));
        let before = Plan::new(&original).unwrap();
        dp.apply(&before).unwrap();
        let frame = Flow::tcp("198.51.100.1", 7000, "10.100.0.1", 80).frame(mac);
        let to_v = || dp.trace(&frame, lt0).unwrap().reason;
        assert_eq!(to_v(), Some(Reason::NoBackend));
        assert_eq!(backend_records_in_use(&dir), 3);

        freeze(&dir, "tables_fixed");
        let err = dp
            .apply(&Plan::new(&changed).unwrap())
            .expect_err("the kernel refuses w's table");
        println!("refused: {err}");
        let restored = dp.apply(&before);
        assert_eq!(
            to_v(),
            Some(Reason::NoBackend),
            "v forwards with the refused change's table"
        );
        assert_eq!(
            backend_records_in_use(&dir),
            3,
            "backend records in use beside the 3 configured"
        );
        restored.expect("the restore, while the refusal lasts");
        assert_published(&dp, &before);
    });
}

/// A change that replaces every VIP by another, as many as the maps hold,
/// applies: the new VIPs need the ids the old ones hold, so here the old
/// ones leave first, with an index flip of their own (the one case where
/// a change flips the index twice).
#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn a_change_that_replaces_as_many_vips_as_the_maps_hold_applies() {
    in_new_netns(|| {
        let topo = Topology::create();
        let (lt0, mac) = (topo.ifindex("lt0"), topo.iface_mac("lt0"));
        let dp = Dataplane::load().unwrap();
        let config = |port: u16| -> Config {
            let vips: Vec<serde_json::Value> = (0..lethe::abi::MAX_VIPS)
                .map(|i| {
                    let backends = match i {
                        0 => serde_json::json!([{"address": "10.1.0.11"}]),
                        _ => serde_json::json!([]),
                    };
                    serde_json::json!({"name": format!("v{i}"),
                        "address": format!("10.{}.{}.1", 200 + i / 256, i % 256),
                        "port": port, "protocol": "tcp", "mode": "dsr", "table_size": 7,
                        "backends": backends})
                })
                .collect();
            serde_json::from_value(serde_json::json!({"vips": vips})).unwrap()
        };
        for (port, other) in [(80, 81), (81, 80)] {
            dp.apply(&Plan::new(&config(port)).unwrap())
                .unwrap_or_else(|e| panic!("every VIP on port {port}: {e}"));
            for (to, want) in [(port, Reason::FwdTx), (other, Reason::NotVip)] {
                let frame = Flow::tcp("198.51.100.1", 5000, "10.200.0.1", to).frame(mac);
                let got = dp.trace(&frame, lt0).unwrap().reason;
                assert_eq!(got, Some(want), "VIPs on port {port}, a packet to {to}");
            }
        }
    });
}
