//! The backend-side decap program on the real kernel: fixtures for each
//! header kind it strips and for packets it must leave alone; a round trip
//! through the load balancer's own ipip and gue encapsulations; and a
//! generated comparison with the model.
//!
//! Privileged: needs root (BPF; the round trip, a network namespace).

mod common;

use std::net::IpAddr;

use etherparse::{IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, UdpHeader};
use lethe::abi::{Action, DecapReason};
use lethe::dataplane::{Counter, Dataplane, DecapProgram};
use lethe::model::decap::{decap, DecapConfig};
use lethe::plan::Plan;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use common::config::fixture_config;
use common::netns::in_new_netns;
use common::packets::{fix_ipv4_csum, Flow};
use common::topology::Topology;

const GUE: u16 = 6080;
const HOST4: &str = "10.1.0.11";
const HOST6: &str = "fd00:1::11";
const MAC: [u8; 6] = [0x02, 0, 0, 0, 0x11, 0x0b];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn config() -> DecapConfig {
    DecapConfig {
        gue_port: GUE,
        local: vec![ip(HOST4), ip(HOST6), ip("10.1.0.99")],
    }
}

/// An encapsulated frame: the inner packet of `inner` (its L3 on), in an
/// outer IPv4/IPv6 header to `to`, optionally in UDP to `gue`.
fn wrap(inner: &Flow, to: &str, gue: Option<u16>) -> Vec<u8> {
    let frame = inner.frame(MAC);
    let l3 = &frame[14..];
    let to = ip(to);
    let mut payload = Vec::new();
    if let Some(port) = gue {
        UdpHeader {
            source_port: 0xc123,
            destination_port: port,
            length: (l3.len() + 8) as u16,
            checksum: 0,
        }
        .write(&mut payload)
        .unwrap();
    }
    payload.extend_from_slice(l3);
    let inner_proto = if inner.src.is_ipv4() {
        IpNumber::IPV4
    } else {
        IpNumber::IPV6
    };
    let next = if gue.is_some() {
        IpNumber::UDP
    } else {
        inner_proto
    };
    let mut out = frame[..12].to_vec();
    match to {
        IpAddr::V4(d) => {
            out.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut h =
                Ipv4Header::new(payload.len() as u16, 64, next, [10, 1, 0, 1], d.octets()).unwrap();
            h.header_checksum = h.calc_header_checksum();
            h.write(&mut out).unwrap();
        }
        IpAddr::V6(d) => {
            out.extend_from_slice(&0x86ddu16.to_be_bytes());
            Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::try_new(7).unwrap(),
                payload_length: payload.len() as u16,
                next_header: next,
                hop_limit: 64,
                source: ip("fd00:1::1")
                    .to_string()
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
                destination: d.octets(),
            }
            .write(&mut out)
            .unwrap();
        }
    }
    out.extend_from_slice(&payload);
    out
}

fn tcp4() -> Flow {
    Flow::tcp("198.51.100.7", 40_000, "10.100.0.1", 80)
}

fn tcp6() -> Flow {
    Flow::tcp("2001:db8:c::7", 40_000, "fd00:100::1", 80)
}

struct Case {
    name: &'static str,
    input: Vec<u8>,
    reason: DecapReason,
    /// The frame expected out: the inner packet's own frame, or the input.
    output: Vec<u8>,
}

fn stripped(name: &'static str, input: Vec<u8>, inner: &Flow, reason: DecapReason) -> Case {
    Case {
        name,
        input,
        reason,
        output: inner.frame(MAC),
    }
}

fn untouched(name: &'static str, input: Vec<u8>, reason: DecapReason) -> Case {
    Case {
        name,
        output: input.clone(),
        input,
        reason,
    }
}

fn cases() -> Vec<Case> {
    let udp4 = Flow::udp("198.51.100.7", 5353, "10.100.0.1", 53);
    let mut tagged_in = wrap(&tcp4(), HOST4, None);
    tagged_in.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
    let mut tagged_out = tcp4().frame(MAC);
    tagged_out.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
    let mut frag = wrap(&tcp4(), HOST4, None);
    frag[14 + 6] = 0x20;
    fix_ipv4_csum(&mut frag[14..]);
    let mut cut = wrap(&tcp4(), HOST4, None);
    cut.truncate(14 + 20 + 19);
    let mut wrong_version = wrap(&tcp4(), HOST4, None);
    wrong_version[14 + 20] = 0x65;
    // ECN marks the outer header picked up on the way (RFC 6040): the
    // outer IPv4 TOS or IPv6 traffic class given `ecn`.
    let marked = |inner: &Flow, to: &str, gue: Option<u16>, ecn: u8| {
        let mut f = wrap(inner, to, gue);
        if f[14] >> 4 == 4 {
            f[15] = (f[15] & !3) | ecn;
            fix_ipv4_csum(&mut f[14..]);
        } else {
            f[15] = (f[15] & !0x30) | (ecn << 4);
        }
        f
    };
    let (ect1, ect0, ce) = (1, 2, 3);
    vec![
        stripped(
            "outer CE onto an ECT(0) inner packet, IPv4 in IPv4",
            marked(&tcp4().tos(0x28 | ect0), HOST4, None, ce),
            &tcp4().tos(0x28 | ce),
            DecapReason::Ipip,
        ),
        stripped(
            "outer CE onto an ECT(1) inner packet, IPv6 in IPv6",
            marked(&tcp6().tos(ect1), HOST6, None, ce),
            &tcp6().tos(ce),
            DecapReason::Ip6ip6,
        ),
        stripped(
            "outer ECT(1) onto an ECT(0) inner packet, GUE over IPv6, IPv4 inside",
            marked(&udp4.clone().tos(ect0), HOST6, Some(GUE), ect1),
            &udp4.clone().tos(ect1),
            DecapReason::Gue6,
        ),
        stripped(
            "outer CE, inner packet not ECN-capable: delivered as it is",
            marked(&tcp4(), HOST4, Some(GUE), ce),
            &tcp4(),
            DecapReason::Gue4,
        ),
        stripped(
            "outer ECT(0) leaves an ECT(1) inner packet as it is",
            marked(&tcp6().tos(ect1), HOST6, None, ect0),
            &tcp6().tos(ect1),
            DecapReason::Ip6ip6,
        ),
        stripped(
            "IPv4 in IPv4",
            wrap(&tcp4(), HOST4, None),
            &tcp4(),
            DecapReason::Ipip,
        ),
        stripped(
            "IPv6 in IPv6",
            wrap(&tcp6(), HOST6, None),
            &tcp6(),
            DecapReason::Ip6ip6,
        ),
        stripped(
            "IPv4 in IPv6",
            wrap(&udp4, HOST6, None),
            &udp4,
            DecapReason::Ip4in6,
        ),
        stripped(
            "GUE over IPv4, IPv4 inside",
            wrap(&tcp4(), HOST4, Some(GUE)),
            &tcp4(),
            DecapReason::Gue4,
        ),
        stripped(
            "GUE over IPv4, IPv6 inside",
            wrap(&tcp6(), HOST4, Some(GUE)),
            &tcp6(),
            DecapReason::Gue4,
        ),
        stripped(
            "GUE over IPv6, IPv6 inside",
            wrap(&tcp6(), HOST6, Some(GUE)),
            &tcp6(),
            DecapReason::Gue6,
        ),
        stripped(
            "GUE over IPv6, IPv4 inside",
            wrap(&udp4, HOST6, Some(GUE)),
            &udp4,
            DecapReason::Gue6,
        ),
        Case {
            name: "802.1Q-tagged IPv4 in IPv4: tag kept",
            input: tagged_in,
            reason: DecapReason::Ipip,
            output: tagged_out,
        },
        untouched(
            "encapsulated to another host",
            wrap(&tcp4(), "10.1.0.12", None),
            DecapReason::NotLocal,
        ),
        untouched(
            "IPv6 encapsulated to another host",
            wrap(&tcp6(), "fd00:1::12", None),
            DecapReason::NotLocal,
        ),
        untouched(
            "UDP to another port",
            wrap(&tcp4(), HOST4, Some(6081)),
            DecapReason::NotEncap,
        ),
        untouched(
            "plain TCP to the host",
            Flow::tcp("198.51.100.7", 1, HOST4, 80).frame(MAC),
            DecapReason::NotEncap,
        ),
        untouched(
            "plain IPv6 UDP to the host",
            Flow::udp("2001:db8::1", 1, HOST6, 53).frame(MAC),
            DecapReason::NotEncap,
        ),
        untouched(
            "ARP",
            {
                let mut f = tcp4().frame(MAC);
                f[12..14].copy_from_slice(&[0x08, 0x06]);
                f
            },
            DecapReason::NotEncap,
        ),
        untouched("outer IPv4 fragment", frag, DecapReason::Fragment),
        untouched("inner header cut short", cut, DecapReason::Malformed),
        untouched(
            "inner version not what the outer says",
            wrong_version,
            DecapReason::Malformed,
        ),
        untouched(
            "outer IPv4 header cut short",
            wrap(&tcp4(), HOST4, None)[..14 + 19].to_vec(),
            DecapReason::Malformed,
        ),
        untouched(
            "GUE whose payload is not IP",
            {
                let mut f = wrap(&tcp4(), HOST4, Some(GUE));
                f[14 + 28] = 0x15;
                f
            },
            DecapReason::Malformed,
        ),
    ]
}

fn counters(p: &DecapProgram) -> Vec<(DecapReason, Counter)> {
    p.counters().unwrap()
}

#[test]
#[ignore = "privileged: needs root (BPF); run by scripts/test.sh"]
fn decap_fixtures() {
    let prog = DecapProgram::load().unwrap();
    let cfg = config();
    prog.configure(cfg.gue_port, &cfg.local).unwrap();
    let mut failures = Vec::new();
    println!("\n{:<48} {:<10} reason", "decap fixture", "result");
    for c in cases() {
        let before = counters(&prog);
        let run = prog.test_run(&c.input).unwrap();
        let after = counters(&prog);
        let moved: Vec<DecapReason> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b.1 != a.1)
            .map(|(_, a)| a.0)
            .collect();
        let model = decap(&cfg, &c.input);
        let mut problems = Vec::new();
        if run.action != Some(Action::Pass) {
            problems.push(format!("verdict {:?}", run.action));
        }
        if moved != vec![c.reason] {
            problems.push(format!("counted {moved:?}"));
        }
        if run.frame != c.output {
            problems.push(format!(
                "frame\n  got  {:02x?}\n  want {:02x?}",
                run.frame, c.output
            ));
        }
        if model.reason != c.reason || model.frame != c.output {
            problems.push(format!("model says {:?}", model.reason));
        }
        println!(
            "{} {:<46} {:<10} {}",
            if problems.is_empty() { "ok" } else { "NO" },
            c.name,
            if c.reason.stripped() {
                "stripped"
            } else {
                "passed"
            },
            c.reason.name()
        );
        if !problems.is_empty() {
            failures.push(format!("{}: {}", c.name, problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // GUE off: GUE packets are left alone.
    prog.configure(0, &cfg.local).unwrap();
    let run = prog.test_run(&wrap(&tcp4(), HOST4, Some(GUE))).unwrap();
    assert_eq!(run.frame, wrap(&tcp4(), HOST4, Some(GUE)));
}

/// What the load balancer encapsulates, decap restores byte for byte.
#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn round_trip_through_the_load_balancers_encapsulations() {
    in_new_netns(|| {
        let topo = Topology::create();
        let mut config = fixture_config();
        config.gue_port = GUE;
        let plan = Plan::new(&config).unwrap();
        let lb = Dataplane::load().unwrap();
        lb.allow_tx_port(topo.ifindex("lt2")).unwrap();
        lb.apply(&plan).unwrap();
        let backends = DecapProgram::load().unwrap();
        // The backends of the fixture config's ipip and gue VIPs.
        let local: Vec<IpAddr> = [
            "10.9.0.1",
            "10.9.0.2",
            "fd00:9::1",
            "fd00:9::2",
            "fd00:9::3",
            "fd00:2::11",
        ]
        .iter()
        .map(|a| ip(a))
        .collect();
        backends.configure(GUE, &local).unwrap();
        let lt0 = topo.ifindex("lt0");
        let mac = topo.iface_mac("lt0");
        let mut n = 0;
        for (dst, dport, udp) in [
            ("10.100.0.2", 1234, false),  // ipip 4in4
            ("10.100.0.1", 53, true),     // ipip 4in6
            ("fd00:100::2", 443, false),  // ipip 6in6
            ("10.100.0.30", 80, false),   // gue over 4
            ("fd00:100::30", 443, false), // gue over 6
            ("10.100.0.31", 53, true),    // gue 4 over 6
        ] {
            for sport in 0..50u16 {
                let src = if dst.contains(':') {
                    "2001:db8:c::9"
                } else {
                    "198.51.100.9"
                };
                let mut f =
                    Flow::tcp(src, 30_000 + sport, dst, dport).payload(usize::from(sport) * 7);
                f.udp = udp;
                let original = f.frame(mac);
                let out = lb.test_run(&original, lt0).unwrap();
                assert!(
                    matches!(out.action, Some(Action::Tx | Action::Redirect)),
                    "{dst}"
                );
                let back = backends.test_run(&out.frame).unwrap();
                assert_eq!(back.action, Some(Action::Pass));
                assert_eq!(
                    &back.frame[12..],
                    &original[12..],
                    "{dst}:{dport} from port {sport}"
                );
                assert_eq!(
                    &back.frame[..12],
                    &out.frame[..12],
                    "the L2 header of the received frame"
                );
                n += 1;
            }
        }
        println!("{n} packets encapsulated by the load balancer and restored by decap");
    });
}

#[test]
#[ignore = "privileged: needs root (BPF); run by scripts/test.sh"]
fn decap_kernel_matches_model_on_generated_packets() {
    let prog = DecapProgram::load().unwrap();
    let cfg = config();
    prog.configure(cfg.gue_port, &cfg.local).unwrap();
    let mut rng = SmallRng::seed_from_u64(0xdeca9);
    let mut seen = std::collections::BTreeMap::new();
    let (mut mismatches, total) = (0, 6000);
    for _ in 0..total {
        let inner = if rng.gen_bool(0.5) { tcp4() } else { tcp6() }.payload(rng.gen_range(0..300));
        let to = *[HOST4, HOST6, "10.1.0.12", "fd00:1::12"]
            .get(rng.gen_range(0..4))
            .unwrap();
        let gue = match rng.gen_range(0..3) {
            0 => None,
            1 => Some(GUE),
            _ => Some(rng.gen()),
        };
        let mut f = wrap(&inner, to, gue);
        for _ in 0..rng.gen_range(0..3) {
            match rng.gen_range(0..4) {
                0 => f.truncate(rng.gen_range(14..=f.len())),
                1 => {
                    let at = rng.gen_range(12..f.len().min(14 + 48 + 8));
                    f[at] = rng.gen();
                }
                2 => f
                    .splice(12..12, [0x81, 0x00, 0x00, rng.gen()])
                    .for_each(drop),
                _ => f.extend((0..rng.gen_range(1..30)).map(|_| rng.gen::<u8>())),
            }
        }
        let run = prog.test_run(&f).unwrap();
        let want = decap(&cfg, &f);
        *seen.entry(want.reason).or_insert(0) += 1;
        if run.action != Some(Action::Pass) || run.frame != want.frame {
            mismatches += 1;
            if mismatches < 5 {
                eprintln!(
                    "mismatch: model {:?}\n in  {:02x?}\n got {:02x?}\n want {:02x?}",
                    want.reason, f, run.frame, want.frame
                );
            }
        }
    }
    println!("decap kernel vs model: {total} packets, by reason {seen:?}, mismatches {mismatches}");
    assert_eq!(mismatches, 0);
    for r in DecapReason::ALL {
        assert!(
            seen.contains_key(&r),
            "the generator never reached {}",
            r.name()
        );
    }
}

/// A private bpffs instance for one test, unmounted (pins and all) on drop.
struct PrivateBpffs(std::path::PathBuf);

impl PrivateBpffs {
    fn new(name: &str) -> PrivateBpffs {
        let dir = std::env::temp_dir().join(format!("lethe-bpffs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        common::netns::sh(&format!("mount -t bpf bpf {}", dir.display()));
        PrivateBpffs(dir)
    }
}

impl Drop for PrivateBpffs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn lethe(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lethe"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `lethe decap attach` on a veth: real IPIP and GUE frames reach a UDP
/// socket bound to the VIP on lo, after the command has exited; status
/// counts them; detach removes it.
#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn decap_attach_delivers_real_packets_and_detaches() {
    use common::netns::{ifindex, sh};
    use common::rawsock::RawSocket;
    in_new_netns(|| {
        let bpffs = PrivateBpffs::new("decap");
        let root = bpffs.0.to_str().unwrap().to_string();
        sh(&format!(
            "ip link add dc0 address 02:00:00:00:aa:01 type veth peer name dc1 address {} && ip link set dc0 up && ip link set dc1 up",
            common::topology::fmt_mac(&MAC)
        ));
        sh(&format!(
            "ip addr add {HOST4}/24 dev dc1 && ip -6 addr add {HOST6}/64 dev dc1 nodad"
        ));
        sh("ip addr add 10.100.0.1/32 dev lo && ip -6 addr add fd00:100::1/128 dev lo");
        sh("sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.dc1.rp_filter=0");
        sh("ip route add 198.51.100.0/24 dev dc1 && ip -6 route add 2001:db8:c::/48 dev dc1");

        let (ok, out) = lethe(&[
            "decap",
            "attach",
            "dc1",
            "--gue-port",
            "6080",
            "--bpffs",
            &root,
        ]);
        assert!(ok, "{out}");
        assert!(
            out.contains("decap attached on dc1") && out.contains(HOST4),
            "{out}"
        );
        let shown = String::from_utf8_lossy(
            &std::process::Command::new("ip")
                .args(["link", "show", "dc1"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned();
        assert!(
            shown.contains("prog/xdp"),
            "not attached after the command exited: {shown}"
        );

        let v4 = std::net::UdpSocket::bind("10.100.0.1:5353").unwrap();
        let v6 = std::net::UdpSocket::bind("[fd00:100::1]:5353").unwrap();
        for s in [&v4, &v6] {
            s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
        }
        let sock = RawSocket::bind(ifindex("dc0")).unwrap();
        let send =
            |inner: Flow, to: &str, gue: Option<u16>| sock.send(&wrap(&inner, to, gue)).unwrap();
        let udp = |src: &str, dst: &str, text: &str| {
            let mut f = Flow::udp(src, 1111, dst, 5353);
            f.payload = text.as_bytes().to_vec();
            f
        };
        let mut buf = [0u8; 256];
        for (inner, to, gue, sock_, text) in [
            (
                udp("198.51.100.7", "10.100.0.1", "ipip"),
                HOST4,
                None,
                &v4,
                "ipip",
            ),
            (
                udp("198.51.100.7", "10.100.0.1", "gue4"),
                HOST4,
                Some(6080),
                &v4,
                "gue4",
            ),
            (
                udp("198.51.100.7", "10.100.0.1", "4in6"),
                HOST6,
                None,
                &v4,
                "4in6",
            ),
            (
                udp("2001:db8:c::7", "fd00:100::1", "6in6"),
                HOST6,
                None,
                &v6,
                "6in6",
            ),
            (
                udp("2001:db8:c::7", "fd00:100::1", "gue6"),
                HOST6,
                Some(6080),
                &v6,
                "gue6",
            ),
        ] {
            send(inner, to, gue);
            let (n, from) = sock_
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(&buf[..n], text.as_bytes());
            assert_eq!(
                from.port(),
                1111,
                "{text}: the client's own address and port"
            );
        }

        let (ok, out) = lethe(&["decap", "status", "--bpffs", &root]);
        assert!(ok, "{out}");
        let count = |name: &str| -> u64 {
            out.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        assert_eq!(
            (
                count("ipip"),
                count("gue4"),
                count("ip4in6"),
                count("ip6ip6"),
                count("gue6")
            ),
            (1, 1, 1, 1, 1),
            "{out}"
        );

        // Attaching again keeps it (same addresses, same program build? a
        // new load: upgraded in place).
        let (ok, out) = lethe(&["decap", "attach", "dc1", "--bpffs", &root]);
        assert!(ok && out.contains("upgraded in place"), "{out}");
        let (ok, out) = lethe(&["decap", "detach", "dc1", "--bpffs", &root]);
        assert!(ok && out.contains("removed"), "{out}");
        let shown = String::from_utf8_lossy(
            &std::process::Command::new("ip")
                .args(["link", "show", "dc1"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned();
        assert!(!shown.contains("prog/xdp"), "{shown}");
        let (ok, out) = lethe(&["decap", "detach", "dc1", "--bpffs", &root]);
        assert!(
            !ok && out.contains("no decap program attached to dc1"),
            "{out}"
        );
    });
}
