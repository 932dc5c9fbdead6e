//! The kernel program against the Rust reference model on generated
//! packets: valid flows to every VIP and to no VIP, then corrupted copies
//! (cut short, bytes overwritten, lengths and header fields set wrong).
//! Verdict, counted reason, output bytes, and the kernel's decision record
//! (VIP, backend) must agree on every packet.
//!
//! The generator is seeded: LETHE_FUZZ_SEED=<n> replays a run, and
//! LETHE_FUZZ_PACKETS=<n> changes how many packets (default 12,000).
//!
//! Privileged: needs root (BPF, a network namespace). Run by scripts/test.sh.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lethe::abi::Reason;
use lethe::config::Protocol;
use lethe::dataplane::{Counter, Dataplane};
use lethe::model::{self, Network};
use lethe::plan::Plan;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use common::config::fixture_config;
use common::netns::in_new_netns;
use common::packets::{fix_ipv4_csum, Flow};
use common::topology::Topology;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn random_addr(rng: &mut SmallRng, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(rng.gen::<u32>()))
    } else {
        IpAddr::V6(Ipv6Addr::from(rng.gen::<u128>()))
    }
}

/// A valid flow: mostly to a VIP of the plan, sometimes near one, sometimes
/// anywhere.
fn flow(rng: &mut SmallRng, plan: &Plan) -> Flow {
    let roll = rng.gen_range(0..100);
    if roll >= 90 {
        // A backend's reply: the nat return path (or, from other ports and
        // addresses, nobody's).
        let nat: Vec<_> = plan.nat_returns.keys().collect();
        let &(backend, port, proto) = nat[rng.gen_range(0..nat.len())];
        let client = if backend.is_ipv4() {
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, rng.gen()))
        } else {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, rng.gen()))
        };
        let f = Flow {
            src: backend,
            dst: if rng.gen_bool(0.9) {
                client
            } else {
                random_addr(rng, backend.is_ipv4())
            },
            sport: if port == 0 || rng.gen_bool(0.1) {
                rng.gen()
            } else {
                port
            },
            dport: rng.gen(),
            udp: proto == Protocol::Udp,
            tos: 0,
            vlan: None,
            payload: Vec::new(),
        };
        return f.payload(rng.gen_range(0..100));
    }
    let (dst, dport, udp) = if roll < 70 {
        let v = &plan.vips[rng.gen_range(0..plan.vips.len())].vip;
        let port = if v.port == 0 || rng.gen_bool(0.1) {
            rng.gen()
        } else {
            v.port
        };
        let udp = if rng.gen_bool(0.05) {
            v.protocol == Protocol::Tcp
        } else {
            v.protocol == Protocol::Udp
        };
        (v.address, port, udp)
    } else {
        let v4 = rng.gen_bool(0.5);
        (random_addr(rng, v4), rng.gen(), rng.gen_bool(0.5))
    };
    let payload = match rng.gen_range(0..10) {
        0 => rng.gen_range(1400..1480), // around the MTU, with and without encap
        1 => 0,
        _ => rng.gen_range(0..200),
    };
    let mut f = Flow {
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst,
        sport: rng.gen(),
        dport,
        udp,
        tos: if rng.gen_bool(0.3) { rng.gen() } else { 0 },
        vlan: if rng.gen_bool(0.15) {
            Some(rng.gen_range(1..4095))
        } else {
            None
        },
        payload: Vec::new(),
    };
    f.src = random_addr(rng, dst.is_ipv4());
    f.payload(payload)
}

/// An ICMP error (or other ICMP message) about a reply of a VIP flow: the
/// VIP's packet to a client, quoted in part or in full.
fn icmp_message(rng: &mut SmallRng, plan: &Plan, mac: [u8; 6]) -> Vec<u8> {
    let v = &plan.vips[rng.gen_range(0..plan.vips.len())].vip;
    let v4 = v.address.is_ipv4();
    let port = if v.port == 0 || rng.gen_bool(0.1) {
        rng.gen()
    } else {
        v.port
    };
    let mut reply = Flow {
        src: v.address,
        dst: random_addr(rng, v4),
        sport: port,
        dport: rng.gen(),
        udp: if rng.gen_bool(0.1) {
            rng.gen()
        } else {
            v.protocol == Protocol::Udp
        },
        tos: 0,
        vlan: None,
        payload: Vec::new(),
    };
    reply = reply.payload(rng.gen_range(0..200));
    let full = reply.frame([0; 6])[14..].to_vec();
    let n = match rng.gen_range(0..4) {
        0 => full.len(),
        1 => rng.gen_range(0..full.len()),
        _ => (if v4 { 28 } else { 48 }).min(full.len()),
    };
    let router = random_addr(rng, v4);
    let eth = etherparse::PacketBuilder::ethernet2(common::packets::CLIENT_MAC, mac);
    let mut out = Vec::new();
    match (router, v.address) {
        (IpAddr::V4(r), IpAddr::V4(d)) => {
            let t = match rng.gen_range(0..5) {
                0 => etherparse::Icmpv4Type::TimeExceeded(
                    etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
                ),
                1 => etherparse::Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader {
                    id: 1,
                    seq: 2,
                }),
                _ => etherparse::Icmpv4Type::DestinationUnreachable(
                    etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                        next_hop_mtu: rng.gen(),
                    },
                ),
            };
            eth.ipv4(r.octets(), d.octets(), 64)
                .icmpv4(t)
                .write(&mut out, &full[..n])
                .unwrap();
        }
        (IpAddr::V6(r), IpAddr::V6(d)) => {
            let t = match rng.gen_range(0..5) {
                0 => etherparse::Icmpv6Type::EchoRequest(etherparse::IcmpEchoHeader {
                    id: 1,
                    seq: 2,
                }),
                1 => etherparse::Icmpv6Type::DestinationUnreachable(
                    etherparse::icmpv6::DestUnreachableCode::Port,
                ),
                _ => etherparse::Icmpv6Type::PacketTooBig { mtu: rng.gen() },
            };
            eth.ipv6(r.octets(), d.octets(), 64)
                .icmpv6(t)
                .write(&mut out, &full[..n])
                .unwrap();
        }
        _ => unreachable!(),
    }
    out
}

/// An ICMP error to a client about a packet a nat backend received
/// (client -> backend:port), sent by the backend itself or by a router on
/// the way: the nat return path's ICMP case.
fn nat_icmp_message(rng: &mut SmallRng, plan: &Plan, mac: [u8; 6]) -> Vec<u8> {
    let nat: Vec<_> = plan.nat_returns.keys().collect();
    let &(backend, port, proto) = nat[rng.gen_range(0..nat.len())];
    let v4 = backend.is_ipv4();
    let client = if v4 {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, rng.gen()))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, rng.gen()))
    };
    let received = Flow {
        src: client,
        dst: backend,
        sport: rng.gen(),
        dport: if port == 0 || rng.gen_bool(0.1) {
            rng.gen()
        } else {
            port
        },
        udp: proto == Protocol::Udp,
        tos: 0,
        vlan: None,
        payload: Vec::new(),
    }
    .payload(rng.gen_range(0..200));
    let full = received.frame([0; 6])[14..].to_vec();
    let n = match rng.gen_range(0..4) {
        0 => full.len(),
        1 => rng.gen_range(0..full.len()),
        _ => (if v4 { 28 } else { 48 }).min(full.len()),
    };
    let origin = if rng.gen_bool(0.6) {
        backend
    } else {
        random_addr(rng, v4)
    };
    let eth = etherparse::PacketBuilder::ethernet2(common::packets::CLIENT_MAC, mac);
    let mut out = Vec::new();
    match (origin, client) {
        (IpAddr::V4(o), IpAddr::V4(c)) => eth
            .ipv4(o.octets(), c.octets(), 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                if rng.gen_bool(0.5) {
                    etherparse::icmpv4::DestUnreachableHeader::Port
                } else {
                    etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                        next_hop_mtu: rng.gen(),
                    }
                },
            ))
            .write(&mut out, &full[..n])
            .unwrap(),
        (IpAddr::V6(o), IpAddr::V6(c)) => eth
            .ipv6(o.octets(), c.octets(), 64)
            .icmpv6(if rng.gen_bool(0.5) {
                etherparse::Icmpv6Type::DestinationUnreachable(
                    etherparse::icmpv6::DestUnreachableCode::Port,
                )
            } else {
                etherparse::Icmpv6Type::PacketTooBig { mtu: rng.gen() }
            })
            .write(&mut out, &full[..n])
            .unwrap(),
        _ => unreachable!(),
    }
    out
}

/// Damages a frame the way broken senders and middleboxes do.
fn corrupt(rng: &mut SmallRng, frame: &mut Vec<u8>, l3: usize) {
    let v4 = frame.get(l3).map(|b| b >> 4) == Some(4);
    for _ in 0..rng.gen_range(1..=2) {
        match rng.gen_range(0..10) {
            // Cut short anywhere (BPF_PROG_TEST_RUN needs 14 bytes).
            0 | 1 => {
                let n = rng.gen_range(14..=frame.len());
                frame.truncate(n);
            }
            // Any header byte, any value.
            2 | 3 => {
                let end = frame.len().min(l3 + 48);
                let at = rng.gen_range(0..end);
                frame[at] = rng.gen();
            }
            // EtherType.
            4 => {
                let t: u16 = *[0x0800u16, 0x86dd, 0x8100, 0x0806, rng.gen()]
                    .get(rng.gen_range(0..5))
                    .unwrap();
                frame[12..14].copy_from_slice(&t.to_be_bytes());
            }
            // IP length fields.
            5 | 6 if frame.len() >= l3 + 8 => {
                let n: u16 = match rng.gen_range(0..3) {
                    0 => rng.gen(),
                    1 => (frame.len() - l3) as u16 + rng.gen_range(0..4),
                    _ => rng.gen_range(0..64),
                };
                let at = if v4 { l3 + 2 } else { l3 + 4 };
                frame[at..at + 2].copy_from_slice(&n.to_be_bytes());
                if v4 && rng.gen_bool(0.5) && frame.len() >= l3 + 20 {
                    fix_ipv4_csum(&mut frame[l3..]);
                }
            }
            // IPv4 IHL / fragment bits, or IPv6 next header.
            7 | 8 if frame.len() >= l3 + 20 => {
                if v4 {
                    if rng.gen_bool(0.5) {
                        frame[l3] = 0x40 | rng.gen_range(0..16);
                    } else {
                        frame[l3 + 6] = rng.gen::<u8>() & 0x3f;
                        frame[l3 + 7] = rng.gen();
                    }
                    if frame.len() >= l3 + usize::from(frame[l3] & 0xf) * 4 {
                        fix_ipv4_csum(&mut frame[l3..]);
                    }
                } else {
                    frame[l3 + 6] = *[0u8, 43, 44, 51, 58, 60, 59, 135, rng.gen()]
                        .get(rng.gen_range(0..9))
                        .unwrap();
                }
            }
            // Trailing bytes beyond the IP length (Ethernet padding).
            _ => {
                let n = rng.gen_range(1..40);
                frame.extend((0..n).map(|_| rng.gen::<u8>()));
            }
        }
    }
}

/// The first 96 bytes in hex, enough to see every header.
fn head(frame: &[u8]) -> String {
    let hex: Vec<String> = frame.iter().take(96).map(|b| format!("{b:02x}")).collect();
    format!("{} ({} bytes)", hex.join(""), frame.len())
}

fn reason_delta(before: &[(Reason, Counter)], after: &[(Reason, Counter)]) -> Vec<(Reason, u64)> {
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| b.1 != a.1)
        .map(|(b, a)| (a.0, a.1.packets - b.1.packets))
        .collect()
}

#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn kernel_matches_model_on_generated_packets() {
    let seed = env_u64("LETHE_FUZZ_SEED", 0x1e7e_2026);
    let total = env_u64("LETHE_FUZZ_PACKETS", 12_000);
    in_new_netns(move || {
        let topo = Topology::create();
        // Half the VIPs sample every packet: events must not change a decision.
        let mut config = fixture_config();
        for (i, v) in config.vips.iter_mut().enumerate() {
            v.event_sample_rate = (i % 2) as u32;
        }
        let plan = Plan::new(&config).expect("valid config");
        let dp = Dataplane::load().expect("load XDP program");
        dp.allow_tx_port(topo.ifindex("lt2")).unwrap();
        dp.apply(&plan).expect("apply plan");
        let lt0 = topo.ifindex("lt0");
        let mac = topo.iface_mac("lt0");
        let mut rng = SmallRng::seed_from_u64(seed);

        let mut by_reason: BTreeMap<Reason, (u64, u64)> = BTreeMap::new();
        let mut mismatches = Vec::new();
        let mut corrupted = 0;
        for n in 0..total {
            let (mut frame, l3) = if rng.gen_bool(0.12) {
                (icmp_message(&mut rng, &plan, mac), 14)
            } else if rng.gen_bool(0.05) {
                (nat_icmp_message(&mut rng, &plan, mac), 14)
            } else {
                let f = flow(&mut rng, &plan);
                (f.frame(mac), if f.vlan.is_some() { 18 } else { 14 })
            };
            // Some IPv4 senders leave DF clear: too big is then not answered.
            if frame[l3] >> 4 == 4 && rng.gen_bool(0.1) {
                frame[l3 + 6] &= !0x40;
                fix_ipv4_csum(&mut frame[l3..]);
            }
            let damaged = rng.gen_bool(0.45);
            if damaged {
                corrupted += 1;
                corrupt(&mut rng, &mut frame, l3);
            }
            let before = dp.reason_counters().unwrap();
            let run = dp.trace(&frame, lt0).expect("test_run with a trace record");
            let after = dp.reason_counters().unwrap();
            let want = model::process(&plan, &topo as &dyn Network, lt0, &frame);
            let counted = reason_delta(&before, &after);
            let entry = by_reason.entry(want.reason).or_default();
            if damaged {
                entry.1 += 1;
            } else {
                entry.0 += 1;
            }
            let want_vip = want.vip.map(|i| plan.vips[i].key());
            let decided = run.reason == Some(want.reason)
                && run.vip == want_vip
                && run.backend == want.backend;
            if run.action != Some(want.action)
                || counted != vec![(want.reason, 1)]
                || run.frame != want.frame
                || !decided
            {
                if mismatches.len() < 10 {
                    mismatches.push(format!(
                        "packet #{n}: kernel {:?} {:?} (trace {:?} {:?} {:?}), model {} {} {:?} {:?}\n  input  {}\n  kernel {}\n  model  {}",
                        run.action, counted, run.reason, run.vip, run.backend, want.action, want.reason, want_vip, want.backend,
                        head(&frame), head(&run.frame), head(&want.frame)
                    ));
                } else {
                    mismatches.push(String::new());
                }
            }
        }

        println!("\nkernel vs model: {total} packets ({corrupted} corrupted), seed {seed:#x}");
        println!("{:<16} {:>8} {:>10}", "reason", "valid", "corrupted");
        for (reason, (valid, bad)) in &by_reason {
            println!("{:<16} {:>8} {:>10}", reason.name(), valid, bad);
        }
        println!("mismatches: {}", mismatches.len());
        assert!(
            mismatches.is_empty(),
            "{} mismatches (seed {seed:#x}); first ones:\n{}",
            mismatches.len(),
            mismatches
                .iter()
                .filter(|m| !m.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        // The generator must reach every path the topology offers, or the
        // comparison proves less than it claims.
        let reached: Vec<Reason> = by_reason.keys().copied().collect();
        for r in [
            Reason::FwdTx,
            Reason::FwdRedirect,
            Reason::NotIp,
            Reason::NotVip,
            Reason::L4Proto,
            Reason::Ipv4Options,
            Reason::Fragment,
            Reason::Ipv6Ext,
            Reason::NoNeigh,
            Reason::TruncVlan,
            Reason::TruncIp,
            Reason::BadIpVersion,
            Reason::BadIhl,
            Reason::BadIpLen,
            Reason::TruncL4,
            Reason::NoBackend,
            Reason::NoRoute,
            Reason::NotAdjacent,
            Reason::FragNeeded,
            Reason::NoTxPort,
            Reason::IcmpInner,
            Reason::TooBig,
        ] {
            assert!(reached.contains(&r), "generator never reached {r}");
        }
        let forwarded: u64 = [Reason::FwdTx, Reason::FwdRedirect]
            .iter()
            .map(|r| by_reason.get(r).map_or(0, |c| c.0 + c.1))
            .sum();
        assert!(forwarded > total / 6, "only {forwarded} packets forwarded");
    });
}
