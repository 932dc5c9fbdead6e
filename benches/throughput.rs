//! Packets per second forwarded by one core, through a veth, per mode, next
//! to the traffic generator alone.
//!
//! Run as root: `cargo bench --bench throughput`
//! (`LETHE_BENCH_SECS`, default 2, seconds per measurement; `LETHE_BENCH_RUNS`,
//! default 3, runs of every row, interleaved; the table shows medians).
//!
//! In a private network namespace: a veth pair gen ↔ lb. The generator
//! (bpf/bench.bpf.c, BPF_PROG_TEST_RUN in live-frames mode) writes 60-byte
//! TCP SYNs to a VIP, a random source port each, and sends them out of
//! gen; they arrive on lb, where the program under test runs natively.
//! Lethe (and the trivial forwarder) send them back out of lb with XDP_TX;
//! a dropping XDP program on gen is the sink, and veth counts what reaches
//! it. The process is pinned to one CPU; veth runs its receive side (NAPI)
//! in softirq on the CPU that sent, so generating, Lethe and the sink all
//! share that one core: the rows differ only by the program on lb.

#[allow(dead_code)]
#[path = "../tests/common/netns.rs"]
mod netns;
#[allow(dead_code)]
#[path = "../tests/common/packets.rs"]
mod packets;

use std::process::Command;
use std::time::{Duration, Instant};

use lethe::config::Config;
use lethe::dataplane::{pin_thread_to_cpu, AttachMode, Dataplane, TrafficGenerator, XdpLink};
use lethe::plan::Plan;

use netns::{ifindex, in_new_netns, sh};
use packets::Flow;

const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 1];
/// Frames per BPF_PROG_TEST_RUN call.
const FRAMES_PER_CALL: u32 = 250_000;

fn config() -> Config {
    let backends = serde_json::json!([{"address": "10.1.0.11"}, {"address": "10.1.0.12"}, {"address": "10.1.0.13"}]);
    let remote = serde_json::json!([{"address": "10.9.0.1"}, {"address": "10.9.0.2"}, {"address": "10.9.0.3"}]);
    serde_json::from_value(serde_json::json!({"vips": [
        {"name": "dsr", "address": "10.100.0.1", "port": 80, "protocol": "tcp", "mode": "dsr", "backends": backends},
        {"name": "ipip", "address": "10.100.0.2", "port": 80, "protocol": "tcp", "mode": "ipip", "backends": remote},
        {"name": "gue", "address": "10.100.0.3", "port": 80, "protocol": "tcp", "mode": "gue", "backends": remote},
        {"name": "nat", "address": "10.100.0.4", "port": 80, "protocol": "tcp", "mode": "nat", "backends": backends},
    ]}))
    .expect("bench config")
}

/// What runs on lb for a row.
#[derive(Clone, Copy)]
enum OnLb {
    Drop,
    Tx,
    Lethe,
}

struct Setup {
    name: &'static str,
    on_lb: OnLb,
    vip: &'static str,
}

const SETUPS: &[Setup] = &[
    Setup {
        name: "generator alone: gen → lb, XDP_DROP on lb",
        on_lb: OnLb::Drop,
        vip: "10.100.0.1",
    },
    Setup {
        name: "trivial forwarder: XDP_TX on lb, back to gen",
        on_lb: OnLb::Tx,
        vip: "10.100.0.1",
    },
    Setup {
        name: "Lethe dsr (MACs rewritten, XDP_TX)",
        on_lb: OnLb::Lethe,
        vip: "10.100.0.1",
    },
    Setup {
        name: "Lethe ipip (IPv4-in-IPv4 via a gateway, XDP_TX)",
        on_lb: OnLb::Lethe,
        vip: "10.100.0.2",
    },
    Setup {
        name: "Lethe gue (IPv4, XDP_TX)",
        on_lb: OnLb::Lethe,
        vip: "10.100.0.3",
    },
    Setup {
        name: "Lethe nat (destination rewritten, XDP_TX)",
        on_lb: OnLb::Lethe,
        vip: "10.100.0.4",
    },
];

/// Sum of veth's per-queue counter `rx_queue_N_<what>` of `dev`.
fn veth_rx(dev: &str, what: &str) -> u64 {
    let out = Command::new("ethtool")
        .args(["-S", dev])
        .output()
        .expect("ethtool");
    let suffix = format!("_{what}:");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            (l.starts_with("rx_queue_") && l.contains(&suffix))
                .then(|| l.rsplit(' ').next()?.parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

struct Sample {
    sent: u64,
    received: u64,
    secs: f64,
}

/// Generates for `secs` seconds; counts what reaches `sink_dev`'s XDP drop.
fn measure(gen: &TrafficGenerator, gen_ifindex: u32, sink_dev: &str, secs: f64) -> Sample {
    let before = veth_rx(sink_dev, "xdp_drops");
    let mut sent = 0u64;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        gen.send(gen_ifindex, FRAMES_PER_CALL)
            .expect("live frames run");
        sent += u64::from(FRAMES_PER_CALL);
    }
    let secs = start.elapsed().as_secs_f64();
    // The last frames are in flight for microseconds at most.
    std::thread::sleep(Duration::from_millis(20));
    Sample {
        sent,
        received: veth_rx(sink_dev, "xdp_drops") - before,
        secs,
    }
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

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
        eprintln!(
            "throughput bench: needs root (BPF programs, a network namespace); run with sudo"
        );
        std::process::exit(1);
    }
    let secs: f64 = env_or("LETHE_BENCH_SECS", 2.0);
    let runs: usize = env_or("LETHE_BENCH_RUNS", 3);
    let cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
    in_new_netns(move || bench(secs, runs, cpu));
}

fn bench(secs: f64, runs: usize, cpu: usize) {
    pin_thread_to_cpu(cpu).expect("sched_setaffinity");
    sh("sysctl -qw net.ipv4.conf.all.forwarding=1");
    sh(&format!(
        "ip link add gen type veth peer name lb && ip link set lb address {}",
        LB_MAC.map(|b| format!("{b:02x}")).join(":")
    ));
    sh("ip link set gen up && ip link set lb up && ip addr add 10.1.0.1/24 dev lb");
    for (addr, mac) in [
        ("10.1.0.11", "02:00:00:00:02:11"),
        ("10.1.0.12", "02:00:00:00:02:12"),
        ("10.1.0.13", "02:00:00:00:02:13"),
        ("10.1.0.254", "02:00:00:00:02:fe"),
    ] {
        sh(&format!(
            "ip neigh replace {addr} lladdr {mac} dev lb nud permanent"
        ));
    }
    sh("ip route add 10.9.0.0/16 via 10.1.0.254 dev lb");
    let (gen_if, lb_if) = (ifindex("gen"), ifindex("lb"));

    let mut gen = TrafficGenerator::load().expect("load the generator (root?)");
    let dp = Dataplane::load().expect("load the XDP program");
    dp.apply(&Plan::new(&config()).expect("plan"))
        .expect("apply");
    let _sink = gen.attach_drop(gen_if).expect("attach the sink");

    let started = Instant::now();
    let mut samples: Vec<Vec<Sample>> = SETUPS.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (s, out) in SETUPS.iter().zip(&mut samples) {
            let frame = Flow::tcp("198.51.100.7", 40_001, s.vip, 80)
                .payload(6)
                .frame(LB_MAC);
            gen.set_frame(&frame, 14 + 20).expect("template");
            let link: XdpLink = match s.on_lb {
                OnLb::Drop => gen.attach_drop(lb_if),
                OnLb::Tx => gen.attach_tx(lb_if),
                OnLb::Lethe => dp.attach(lb_if, AttachMode::Native),
            }
            .expect("attach on lb");
            let sink = match s.on_lb {
                OnLb::Drop => "lb",
                _ => "gen",
            };
            out.push(measure(&gen, gen_if, sink, secs));
            drop(link);
        }
    }
    let fwd = dp
        .reason_counters()
        .expect("counters")
        .into_iter()
        .filter(|(r, _)| r.name().starts_with("fwd_"))
        .map(|(_, c)| c.packets)
        .sum::<u64>();

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "Kernel {}, one core (CPU {cpu}) generating and forwarding; 60-byte frames; \
         {secs} s per measurement, median of {runs} ({:.0} s in all). Lethe forwarded \
         {fwd} packets over all its rows.\n",
        kernel.trim(),
        started.elapsed().as_secs_f64()
    );
    println!("| setup | generated Mpps | delivered Mpps | lost % | ns per delivered packet | vs trivial forwarder |");
    println!("|---|---|---|---|---|---|");
    let ns_of = |v: &Vec<Sample>| {
        median(
            v.iter()
                .map(|s| s.secs * 1e9 / s.received.max(1) as f64)
                .collect(),
        )
    };
    let tx_ns = ns_of(&samples[1]);
    for (s, v) in SETUPS.iter().zip(&samples) {
        let gen_mpps = median(v.iter().map(|s| s.sent as f64 / s.secs / 1e6).collect());
        let got_mpps = median(v.iter().map(|s| s.received as f64 / s.secs / 1e6).collect());
        let lost = median(
            v.iter()
                .map(|s| 100.0 * (s.sent.saturating_sub(s.received)) as f64 / s.sent as f64)
                .collect(),
        );
        let ns = ns_of(v);
        let extra = match s.on_lb {
            OnLb::Lethe => format!("+{:.0} ns", ns - tx_ns),
            _ => String::new(),
        };
        println!(
            "| {} | {gen_mpps:.2} | {got_mpps:.2} | {lost:.1} | {ns:.0} | {extra} |",
            s.name
        );
    }
}
