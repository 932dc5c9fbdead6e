//! Per-packet cost of every path through the XDP program, as a ratio to a
//! trivial XDP_PASS program measured the same way in the same run.
//!
//! Run as root: `cargo bench --bench packet`
//! (`LETHE_BENCH_CALLS`, default 200000, and `LETHE_BENCH_RUNS`, default 5;
//! `LETHE_BENCH_ONLY=text` keeps the paths whose name contains it;
//! `LETHE_BENCH_BLOCKS=1` prints every block's floor and path means to
//! stderr, repeat 1: on a shared host the whole CPU slows down for seconds
//! at a time, floor and path alike, which blocks show and means hide).
//!
//! Method (SPEC.md, Performance): BPF_PROG_TEST_RUN on the real program
//! with the fixture topology in a private network namespace, the process
//! pinned to one CPU. One syscall per packet (repeat 1: the kernel copies a
//! fresh frame in for each), the kernel-reported duration averaged over
//! CALLS calls per path and run; the floor runs in blocks of 1000 calls
//! alternating with the path's, on the same frame and context, so drift
//! and noise reach both. RUNS runs over all paths; the table shows medians
//! (ratio: the median of each run's ratio). Paths whose output, run again,
//! gives the same output and reason (untouched packets, dsr's MAC rewrite)
//! are also measured with repeat N, where the kernel reruns the program on
//! the same buffer, timed by the wall clock (the kernel's own figure is in
//! whole ns, truncated; it is shown next to it). Both programs are attached
//! to spare veths during the run: they sit in the kernel's XDP dispatcher
//! (called directly, as in production, not through a retpoline), and a
//! repeat-N call does not rebuild the dispatcher around itself — without
//! this, wall-clock time per repetition reads ~20 times too high.

#[allow(dead_code)]
#[path = "../tests/common/netns.rs"]
mod netns;
#[allow(dead_code)]
#[path = "../tests/common/packets.rs"]
mod packets;
#[allow(dead_code)]
#[path = "../tests/common/topology.rs"]
mod topology;

use std::net::IpAddr;
use std::time::Instant;

use etherparse::PacketBuilder;
use lethe::abi::Reason;
use lethe::config::Config;
use lethe::dataplane::{pin_thread_to_cpu, AttachMode, Dataplane, PassProgram};
use lethe::plan::Plan;

use netns::in_new_netns;
use packets::{fix_ipv4_csum, Flow, CLIENT_MAC};
use topology::Topology;

/// Calls per block before switching between the floor and the path.
const BLOCK: u32 = 1000;
/// Repetitions per call, and calls per path and run, of the repeat-N method.
const REPEAT: u32 = 50_000;
const REPEAT_CALLS: usize = 20;

/// SPEC.md: VIP → encapsulation at most this many times the floor, one
/// call per packet; non-VIP pass at most NON_VIP_TARGET times, repeat N.
const ENCAP_TARGET: f64 = 1.8;
const NON_VIP_TARGET: f64 = 1.7;

struct Path {
    name: &'static str,
    frame: Vec<u8>,
    reason: Reason,
    /// Held to ENCAP_TARGET.
    encap: bool,
    /// Run against the program with no nat VIP configured.
    plain: bool,
}

fn path(name: &'static str, frame: Vec<u8>, reason: Reason) -> Path {
    Path {
        name,
        frame,
        reason,
        encap: false,
        plain: false,
    }
}

impl Path {
    fn encap(mut self) -> Path {
        self.encap = true;
        self
    }

    fn plain(mut self) -> Path {
        self.plain = true;
        self
    }
}

/// One VIP per path, on the fixture topology (tests/common/topology.rs):
/// backends 10.1.0.11-13 / fd00:1::11-13 on lt0, 10.2.0.11 behind lt2 (an
/// allowed port), 10.9/16 and fd00:9::/32 behind a gateway on lt0.
fn bench_config(with_nat: bool) -> Config {
    let mut vips = vec![
        serde_json::json!({"name": "dsr4", "address": "10.100.0.1", "port": 80, "protocol": "tcp", "mode": "dsr",
         "backends": [{"address": "10.1.0.11"}, {"address": "10.1.0.12"}, {"address": "10.1.0.13"}]}),
        serde_json::json!({"name": "dsr6", "address": "fd00:100::1", "port": 80, "protocol": "tcp", "mode": "dsr",
         "backends": [{"address": "fd00:1::11"}, {"address": "fd00:1::12"}, {"address": "fd00:1::13"}]}),
        serde_json::json!({"name": "far4", "address": "10.100.0.4", "port": 80, "protocol": "tcp", "mode": "dsr",
         "backends": [{"address": "10.2.0.11"}]}),
        serde_json::json!({"name": "ipip4", "address": "10.100.0.2", "port": 80, "protocol": "tcp", "mode": "ipip",
         "backends": [{"address": "10.9.0.1"}, {"address": "10.9.0.2"}, {"address": "10.9.0.3"}]}),
        serde_json::json!({"name": "ipip6", "address": "fd00:100::2", "port": 443, "protocol": "tcp", "mode": "ipip",
         "backends": [{"address": "fd00:9::1"}, {"address": "fd00:9::2"}, {"address": "fd00:9::3"}]}),
        serde_json::json!({"name": "ipip6src", "address": "fd00:100::3", "port": 443, "protocol": "tcp", "mode": "ipip",
         "backends": [{"address": "fd00:8::1"}, {"address": "fd00:8::2"}]}),
        serde_json::json!({"name": "ipip4in6", "address": "10.100.0.3", "port": 53, "protocol": "udp", "mode": "ipip",
         "backends": [{"address": "fd00:9::1"}, {"address": "fd00:9::2"}]}),
        serde_json::json!({"name": "gue4", "address": "10.100.0.30", "port": 80, "protocol": "tcp", "mode": "gue",
         "backends": [{"address": "10.9.0.1"}, {"address": "10.9.0.2"}]}),
        serde_json::json!({"name": "gue6", "address": "fd00:100::30", "port": 443, "protocol": "tcp", "mode": "gue",
         "backends": [{"address": "fd00:9::1"}, {"address": "fd00:9::2"}]}),
        serde_json::json!({"name": "empty4", "address": "10.100.0.8", "port": 80, "protocol": "tcp", "mode": "dsr",
         "backends": []}),
        serde_json::json!({"name": "unres4", "address": "10.100.0.5", "port": 80, "protocol": "tcp", "mode": "dsr",
         "backends": [{"address": "10.1.0.99"}]}),
        serde_json::json!({"name": "unreach4", "address": "10.100.0.6", "port": 80, "protocol": "tcp", "mode": "ipip",
         "backends": [{"address": "192.0.2.1"}]}),
        serde_json::json!({"name": "behindgw4", "address": "10.100.0.7", "port": 80, "protocol": "tcp", "mode": "dsr",
         "backends": [{"address": "10.9.0.1"}]}),
        serde_json::json!({"name": "notx4", "address": "10.100.0.9", "port": 80, "protocol": "tcp", "mode": "dsr",
         "backends": [{"address": "10.3.0.11"}]}),
    ];
    if with_nat {
        vips.extend([
            serde_json::json!({"name": "nat4", "address": "10.100.0.20", "port": 80, "protocol": "tcp", "mode": "nat",
             "backends": [{"address": "10.1.0.11", "port": 8080}, {"address": "10.1.0.12", "port": 8080}]}),
            serde_json::json!({"name": "nat6", "address": "fd00:100::20", "port": 443, "protocol": "tcp", "mode": "nat",
             "backends": [{"address": "fd00:1::11", "port": 8443}]}),
        ]);
    }
    serde_json::from_value(serde_json::json!({"hash_seed": 7, "vips": vips})).expect("bench config")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp4(dst: &str, dport: u16) -> Flow {
    Flow::tcp("198.51.100.7", 40_001, dst, dport)
}

fn tcp6(dst: &str, dport: u16) -> Flow {
    Flow::tcp("2001:db8:c::7", 40_001, dst, dport)
}

fn edit(mut frame: Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    f(&mut frame);
    frame
}

/// An ICMP error (IPv4 fragmentation-needed, ICMPv6 packet-too-big) from a
/// router to `to` quoting the first `n` bytes of `quoted`'s IP packet.
fn icmp_error(lb_mac: [u8; 6], router: &str, to: &str, quoted: &Flow, n: usize) -> Vec<u8> {
    let quote = &quoted.frame([0; 6])[14..14 + n];
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, lb_mac);
    let mut out = Vec::new();
    match (ip(router), ip(to)) {
        (IpAddr::V4(r), IpAddr::V4(t)) => eth
            .ipv4(r.octets(), t.octets(), 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1400,
                },
            ))
            .write(&mut out, quote),
        (IpAddr::V6(r), IpAddr::V6(t)) => eth
            .ipv6(r.octets(), t.octets(), 64)
            .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1400 })
            .write(&mut out, quote),
        _ => unreachable!("mixed families"),
    }
    .expect("build ICMP error");
    out
}

fn paths(lb_mac: [u8; 6]) -> Vec<Path> {
    let frame = |f: &Flow| f.frame(lb_mac);
    let dsr4 = frame(&tcp4("10.100.0.1", 80));
    let ipv4 = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = dsr4.clone();
        f(&mut v);
        fix_ipv4_csum(&mut v[14..]);
        v
    };
    let reply4 = |vip: &str, port: u16| Flow::tcp(vip, port, "198.51.100.7", 40_001).payload(100);
    let reply6 = |vip: &str, port: u16| Flow::tcp(vip, port, "2001:db8:c::7", 40_001).payload(100);
    let mut big_no_df = frame(&tcp4("10.100.0.2", 80).payload(1500 - 40));
    big_no_df[14 + 6] = 0;
    fix_ipv4_csum(&mut big_no_df[14..]);
    let mut icmp_about_icmp = icmp_error(
        lb_mac,
        "10.1.0.254",
        "10.100.0.1",
        &reply4("10.100.0.1", 80),
        28,
    );
    icmp_about_icmp[14 + 28 + 9] = 1; // the quoted packet's protocol: ICMP
    fix_ipv4_csum(&mut icmp_about_icmp[14 + 28..]);
    vec![
        path(
            "not a VIP, IPv4 tcp to the host",
            frame(&tcp4("10.1.0.1", 22)),
            Reason::NotVip,
        ),
        path(
            "not a VIP, IPv6 udp to another address",
            frame(&Flow::udp("2001:db8:c::7", 1, "2001:db8::99", 53)),
            Reason::NotVip,
        ),
        path(
            "not a VIP, IPv4 tcp to a VIP address, another port",
            frame(&tcp4("10.100.0.1", 81)),
            Reason::NotVip,
        ),
        path(
            "not a VIP, IPv4 tcp to the host, no nat VIP configured",
            frame(&tcp4("10.1.0.1", 22)),
            Reason::NotVip,
        )
        .plain(),
        path("dsr IPv4", dsr4.clone(), Reason::FwdTx),
        path("dsr IPv6", frame(&tcp6("fd00:100::1", 80)), Reason::FwdTx),
        path(
            "dsr IPv4, 802.1Q tag",
            frame(&tcp4("10.100.0.1", 80).vlan(42)),
            Reason::FwdTx,
        ),
        path(
            "dsr IPv4 to another port (redirect)",
            frame(&tcp4("10.100.0.4", 80)),
            Reason::FwdRedirect,
        ),
        path(
            "ipip IPv4-in-IPv4",
            frame(&tcp4("10.100.0.2", 80)),
            Reason::FwdTx,
        )
        .encap(),
        path(
            "ipip IPv6-in-IPv6",
            frame(&tcp6("fd00:100::2", 443)),
            Reason::FwdTx,
        )
        .encap(),
        path(
            "ipip IPv6-in-IPv6, route with a preferred source",
            frame(&tcp6("fd00:100::3", 443)),
            Reason::FwdTx,
        )
        .encap(),
        path(
            "ipip IPv4-in-IPv6",
            frame(&Flow::udp("198.51.100.7", 5353, "10.100.0.3", 53)),
            Reason::FwdTx,
        )
        .encap(),
        path("gue IPv4", frame(&tcp4("10.100.0.30", 80)), Reason::FwdTx).encap(),
        path(
            "gue IPv6 (UDP checksum from inner headers)",
            frame(&tcp6("fd00:100::30", 443)),
            Reason::FwdTx,
        )
        .encap(),
        path(
            "nat in IPv4 tcp (port mapped)",
            frame(&tcp4("10.100.0.20", 80)),
            Reason::FwdTx,
        ),
        path(
            "nat in IPv6 tcp (port mapped)",
            frame(&tcp6("fd00:100::20", 443)),
            Reason::FwdTx,
        ),
        path(
            "nat out IPv4 (backend → client)",
            frame(&Flow::tcp("10.1.0.11", 8080, "198.51.100.7", 40_001)),
            Reason::FwdTx,
        ),
        path(
            "nat out IPv6 (backend → client)",
            frame(&Flow::tcp("fd00:1::11", 8443, "2001:db8:c::7", 40_001)),
            Reason::FwdTx,
        ),
        path(
            "ICMP frag-needed to a dsr VIP",
            icmp_error(
                lb_mac,
                "10.1.0.254",
                "10.100.0.1",
                &reply4("10.100.0.1", 80),
                28,
            ),
            Reason::FwdTx,
        ),
        path(
            "ICMPv6 too-big to an ipip VIP",
            icmp_error(
                lb_mac,
                "fd00:1::fe",
                "fd00:100::2",
                &reply6("fd00:100::2", 443),
                48,
            ),
            Reason::FwdTx,
        ),
        path(
            "ICMP frag-needed to a nat VIP (inner rewrite)",
            icmp_error(
                lb_mac,
                "10.1.0.254",
                "10.100.0.20",
                &reply4("10.100.0.20", 80),
                48,
            ),
            Reason::FwdTx,
        ),
        path(
            "dsr, too big for the path: ICMP answer",
            frame(&tcp4("10.100.0.1", 80).payload(1500 - 40 + 1)),
            Reason::TooBig,
        ),
        // Passed or dropped: each class of packet Lethe does not balance.
        path(
            "ARP EtherType",
            edit(dsr4.clone(), |f| f[12..14].copy_from_slice(&[0x08, 0x06])),
            Reason::NotIp,
        ),
        path(
            "802.1Q tag cut short",
            edit(frame(&tcp4("10.100.0.1", 80).vlan(42)), |f| f.truncate(16)),
            Reason::TruncVlan,
        ),
        path(
            "IPv4 header cut short",
            edit(dsr4.clone(), |f| f.truncate(14 + 12)),
            Reason::TruncIp,
        ),
        path(
            "IPv6 EtherType, IPv4 header",
            edit(dsr4.clone(), |f| f[12..14].copy_from_slice(&[0x86, 0xdd])),
            Reason::BadIpVersion,
        ),
        path("IPv4 IHL 4", ipv4(&|f| f[14] = 0x44), Reason::BadIhl),
        path(
            "IPv4 total length beyond the frame",
            ipv4(&|f| f[16..18].copy_from_slice(&1000u16.to_be_bytes())),
            Reason::BadIpLen,
        ),
        path(
            "TCP header cut short",
            ipv4(&|f| {
                f.truncate(14 + 30);
                f[16..18].copy_from_slice(&30u16.to_be_bytes())
            }),
            Reason::TruncL4,
        ),
        path(
            "GRE to a VIP address",
            ipv4(&|f| f[14 + 9] = 47),
            Reason::L4Proto,
        ),
        path(
            "IPv4 options",
            ipv4_with_options(&dsr4),
            Reason::Ipv4Options,
        ),
        path(
            "IPv4 fragment",
            ipv4(&|f| f[14 + 6] |= 0x20),
            Reason::Fragment,
        ),
        path(
            "IPv6 fragment header",
            edit(frame(&tcp6("fd00:100::1", 80)), |f| f[14 + 6] = 44),
            Reason::Fragment,
        ),
        path(
            "IPv6 hop-by-hop header",
            edit(frame(&tcp6("fd00:100::1", 80)), |f| f[14 + 6] = 0),
            Reason::Ipv6Ext,
        ),
        path(
            "ICMP error about an ICMP packet",
            icmp_about_icmp,
            Reason::IcmpInner,
        ),
        path(
            "VIP without backends",
            frame(&tcp4("10.100.0.8", 80)),
            Reason::NoBackend,
        ),
        path(
            "backend without neighbour entry",
            frame(&tcp4("10.100.0.5", 80)),
            Reason::NoNeigh,
        ),
        path(
            "backend behind an unreachable route",
            frame(&tcp4("10.100.0.6", 80)),
            Reason::NoRoute,
        ),
        path(
            "dsr backend behind a gateway",
            frame(&tcp4("10.100.0.7", 80)),
            Reason::NotAdjacent,
        ),
        path(
            "egress port not allowed",
            frame(&tcp4("10.100.0.9", 80)),
            Reason::NoTxPort,
        ),
        path("too big for ipip, no DF", big_no_df, Reason::FragNeeded),
        path(
            "nat backend's answer to this host",
            frame(&Flow::tcp("10.1.0.11", 8080, "10.1.0.1", 33_000)),
            Reason::ReturnPassed,
        ),
    ]
}

/// The frame with a 4-byte IPv4 option (NOP x4), lengths and checksum fixed.
fn ipv4_with_options(frame: &[u8]) -> Vec<u8> {
    let mut out = frame[..34].to_vec();
    out.extend_from_slice(&[1, 1, 1, 1]);
    out.extend_from_slice(&frame[34..]);
    out[14] = 0x46;
    let tot = u16::from_be_bytes([out[16], out[17]]) + 4;
    out[16..18].copy_from_slice(&tot.to_be_bytes());
    fix_ipv4_csum(&mut out[14..]);
    out
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Mean kernel-reported ns per call of the path and of the floor, `calls`
/// each, in alternating blocks.
fn one_per_call(dp: &Dataplane, floor: &PassProgram, p: &Path, ingress: u32, calls: u32) -> Sample {
    let want = p.reason.implied_action() as u32;
    let blocks = std::env::var_os("LETHE_BENCH_BLOCKS").is_some();
    let (mut lethe_ns, mut floor_ns) = (0u64, 0u64);
    for _ in 0..calls.div_ceil(BLOCK) {
        let (lethe_before, floor_before) = (lethe_ns, floor_ns);
        for _ in 0..BLOCK {
            floor_ns += u64::from(floor.timed_run(&p.frame, ingress, 1).expect("floor run").ns);
        }
        for _ in 0..BLOCK {
            let t = dp.timed_run(&p.frame, ingress, 1).expect("run");
            assert_eq!(t.retval, want, "{}: verdict changed during the run", p.name);
            lethe_ns += u64::from(t.ns);
        }
        if blocks {
            let mean = |ns: u64| ns as f64 / f64::from(BLOCK);
            eprintln!(
                "block {:.2} {:.2} {}",
                mean(floor_ns - floor_before),
                mean(lethe_ns - lethe_before),
                p.name
            );
        }
    }
    let n = f64::from(calls.div_ceil(BLOCK) * BLOCK);
    Sample {
        lethe: lethe_ns as f64 / n,
        floor: floor_ns as f64 / n,
        kernel: (0.0, 0.0),
    }
}

/// Median wall-clock ns per repetition over REPEAT_CALLS calls of REPEAT
/// repetitions each, path and floor alternating; and the kernel's own
/// figures, for comparison (whole ns per repetition, truncated: too coarse
/// for a floor of a few ns).
fn repeated(dp: &Dataplane, floor: &PassProgram, p: &Path, ingress: u32) -> Sample {
    let (mut lethe, mut base, mut k_lethe, mut k_base) = (vec![], vec![], vec![], vec![]);
    for _ in 0..REPEAT_CALLS {
        let t = Instant::now();
        let k = floor
            .timed_run(&p.frame, ingress, REPEAT)
            .expect("floor run");
        base.push(t.elapsed().as_nanos() as f64 / f64::from(REPEAT));
        k_base.push(f64::from(k.ns));
        let t = Instant::now();
        let k = dp.timed_run(&p.frame, ingress, REPEAT).expect("run");
        lethe.push(t.elapsed().as_nanos() as f64 / f64::from(REPEAT));
        k_lethe.push(f64::from(k.ns));
    }
    Sample {
        lethe: median(lethe),
        floor: median(base),
        kernel: (median(k_lethe), median(k_base)),
    }
}

struct Sample {
    lethe: f64,
    floor: f64,
    /// The kernel-reported (path, floor) ns, repeat N only.
    kernel: (f64, f64),
}

/// Whether repeating is valid: the program's output, run again, gives the
/// same output and the same reason (as when the packet is left untouched).
fn fixed_point(dp: &Dataplane, p: &Path, ingress: u32) -> bool {
    let first = dp.trace(&p.frame, ingress).expect("trace");
    let second = dp.trace(&first.frame, ingress).expect("trace");
    second.reason == Some(p.reason) && second.frame == first.frame
}

#[derive(Default)]
struct Row {
    lethe: Vec<f64>,
    floor: Vec<f64>,
    ratio: Vec<f64>,
    kernel: Vec<(f64, f64)>,
}

impl Row {
    fn push(&mut self, s: Sample) {
        self.lethe.push(s.lethe);
        self.floor.push(s.floor);
        self.ratio.push(s.lethe / s.floor);
        self.kernel.push(s.kernel);
    }

    fn range(&self) -> (f64, f64) {
        let lo = self.ratio.iter().copied().fold(f64::MAX, f64::min);
        let hi = self.ratio.iter().copied().fold(f64::MIN, f64::max);
        (lo, hi)
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**not met**"
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn main() {
    if !is_root() {
        eprintln!("packet bench: needs root (BPF programs, a network namespace); run with sudo");
        std::process::exit(1);
    }
    let calls = env_or("LETHE_BENCH_CALLS", 200_000) as u32;
    let runs = env_or("LETHE_BENCH_RUNS", 5);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = cpus - 1;
    in_new_netns(move || bench(calls, runs, cpu));
}

fn bench(calls: u32, runs: usize, cpu: usize) {
    pin_thread_to_cpu(cpu).expect("sched_setaffinity");
    let topo = Topology::create();
    let ingress = topo.ifindex("lt0");
    // The kernel picks an IPv6 source (for the outer header) by scoring
    // every candidate address, unless the route names one.
    netns::sh("ip -6 route add fd00:8::/32 via fd00:1::fe dev lt0 src fd00:1::1");
    let dp = Dataplane::load().expect("load the XDP program (root?)");
    dp.allow_tx_port(topo.ifindex("lt2")).unwrap();
    dp.apply(&Plan::new(&bench_config(true)).expect("plan"))
        .expect("apply");
    let plain = Dataplane::load().expect("load");
    plain.allow_tx_port(topo.ifindex("lt2")).unwrap();
    plain
        .apply(&Plan::new(&bench_config(false)).expect("plan"))
        .expect("apply");
    let floor = PassProgram::load().expect("load the XDP_PASS program");
    // Into the XDP dispatcher, like attached programs (see the top).
    let _links = [
        floor.attach(netns::ifindex("lt1"), AttachMode::Native),
        dp.attach(netns::ifindex("lt3"), AttachMode::Native),
        plain.attach(netns::ifindex("lt5"), AttachMode::Native),
    ]
    .map(|l| l.expect("attach to a spare veth"));

    let mut paths = paths(topo.iface_mac("lt0"));
    // LETHE_BENCH_ONLY=text: only the paths whose name contains it.
    if let Ok(only) = std::env::var("LETHE_BENCH_ONLY") {
        paths.retain(|p| p.name.contains(&only));
    }
    let prog = |p: &Path| if p.plain { &plain } else { &dp };
    // Every path must do what its name says before it is timed.
    for p in &paths {
        let t = prog(p).trace(&p.frame, ingress).expect("trace");
        assert_eq!(
            (t.action, t.reason),
            (Some(p.reason.implied_action()), Some(p.reason)),
            "{}: the program does not take this path",
            p.name
        );
    }

    let started = Instant::now();
    let mut rows: Vec<Row> = paths.iter().map(|_| Row::default()).collect();
    for _ in 0..runs {
        for (p, row) in paths.iter().zip(&mut rows) {
            row.push(one_per_call(prog(p), &floor, p, ingress, calls));
        }
    }
    let one_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let repeatable: Vec<&Path> = paths
        .iter()
        .filter(|p| fixed_point(prog(p), p, ingress))
        .collect();
    let mut rep_rows: Vec<Row> = repeatable.iter().map(|_| Row::default()).collect();
    for _ in 0..runs {
        for (p, row) in repeatable.iter().zip(&mut rep_rows) {
            row.push(repeated(prog(p), &floor, p, ingress));
        }
    }
    let rep_secs = started.elapsed().as_secs_f64();

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "Kernel {}, pinned to CPU {cpu}; the fixture topology (tests/common/topology.rs) \
         in a private netns; floor: bpf/pass.bpf.c (XDP_PASS), same frame and context, \
         measured in alternating blocks of {BLOCK} calls with each path; both programs \
         attached to spare veths (called through the XDP dispatcher, as in production). \
         Δ: ns over the floor, i.e. the program's own work.\n",
        kernel.trim()
    );
    println!(
        "### One call per packet (repeat 1, fresh frame): kernel-reported ns, \
         mean of {calls} calls, median of {runs} runs ({one_secs:.0} s)\n"
    );
    println!("| path | verdict, reason | ns/packet | floor ns | Δ ns | ratio | ratio range | SPEC | met |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (p, row) in paths.iter().zip(&rows) {
        let ratio = median(row.ratio.clone());
        let (spec, met) = if p.encap {
            (format!("≤ {ENCAP_TARGET}×"), verdict(ratio <= ENCAP_TARGET))
        } else {
            (String::new(), "")
        };
        let (lethe, base) = (median(row.lethe.clone()), median(row.floor.clone()));
        let (lo, hi) = row.range();
        println!(
            "| {} | {} {} | {lethe:.1} | {base:.1} | {:.1} | {ratio:.2}× | {lo:.2}–{hi:.2} | {spec} | {met} |",
            p.name,
            p.reason.implied_action().name(),
            p.reason.name(),
            lethe - base,
        );
    }
    println!(
        "\nNot reachable here: `trunc_eth` (BPF_PROG_TEST_RUN refuses frames under 14 bytes, \
         as drivers drop runts), and `bad_backend`, `no_src_addr`, `encap_failed`, \
         `mode_unsupported`, `internal` (no valid configuration leads there)."
    );
    println!(
        "\n### Repeat N ({REPEAT} runs of the program per call, on one buffer): wall-clock ns \
         per run, median of {REPEAT_CALLS} calls, median of {runs} runs ({rep_secs:.0} s)\n\n\
         Only paths whose output is a fixed point of the program (run again: same bytes, \
         same reason), so every repetition takes the same path: packets left untouched, \
         dsr's MAC rewrite. Kernel-reported: the kernel's own per-run figure (whole ns, \
         truncated), path / floor.\n"
    );
    println!("| path | reason | ns/packet | floor ns | Δ ns | ratio | ratio range | kernel-reported | SPEC | met |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (p, row) in repeatable.iter().zip(&rep_rows) {
        let ratio = median(row.ratio.clone());
        let (spec, met) = if p.reason == Reason::NotVip {
            (
                format!("≤ {NON_VIP_TARGET}×"),
                verdict(ratio <= NON_VIP_TARGET),
            )
        } else {
            (String::new(), "")
        };
        let (lethe, base) = (median(row.lethe.clone()), median(row.floor.clone()));
        let (lo, hi) = row.range();
        let k_lethe = median(row.kernel.iter().map(|k| k.0).collect());
        let k_base = median(row.kernel.iter().map(|k| k.1).collect());
        println!(
            "| {} | {} | {lethe:.1} | {base:.1} | {:.1} | {ratio:.2}× | {lo:.2}–{hi:.2} | {k_lethe:.0} / {k_base:.0} | {spec} | {met} |",
            p.name,
            p.reason.name(),
            lethe - base,
        );
    }
}
