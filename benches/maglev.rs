//! Maglev figures: build time, balance and disruption, as a markdown table.
//! Run: cargo bench --bench maglev
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use lethe::maglev::{build, MaglevTable, WeightedBackend};

fn backends(n: u32, weighted: bool) -> Vec<WeightedBackend> {
    (0..n)
        .map(|i| WeightedBackend {
            address: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
            weight: if weighted {
                (i.wrapping_mul(2_654_435_761) >> 13) % 4 + 1
            } else {
                1
            },
        })
        .collect()
}

fn balance(b: &[WeightedBackend], t: &MaglevTable) -> (f64, f64) {
    let total: f64 = b.iter().map(|b| f64::from(b.weight)).sum();
    let counts = t.slot_counts();
    let mut sorted = b.to_vec();
    sorted.sort_by_key(|b| b.address);
    let ratios = sorted
        .iter()
        .zip(counts)
        .map(|(b, c)| f64::from(c) / (f64::from(t.size()) * f64::from(b.weight) / total));
    ratios.fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(r), hi.max(r)))
}

fn moved(a: &MaglevTable, b: &MaglevTable) -> f64 {
    let n = (0..a.size())
        .filter(|&s| a.backend_at(s) != b.backend_at(s))
        .count();
    100.0 * n as f64 / f64::from(a.size())
}

fn time_build(b: &[WeightedBackend], m: u32) -> f64 {
    let runs = 15;
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(build(b, m).unwrap());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn main() {
    println!("| M | N | weights | build ms (median of 15) | share/weight min | max | remove 1: moved % | add 1: moved % |");
    println!("|---|---|---|---|---|---|---|---|");
    for m in [65_537u32, 655_373] {
        for n in [10u32, 100, 1000, 10_000] {
            for weighted in [false, true] {
                let b = backends(n, weighted);
                let t = build(&b, m).unwrap();
                let (lo, hi) = balance(&b, &t);
                let less = build(&b[1..], m).unwrap();
                let more = backends(n + 1, weighted);
                let more = build(&more, m).unwrap();
                println!(
                    "| {m} | {n} | {} | {:.3} | {lo:.4} | {hi:.4} | {:.3} | {:.3} |",
                    if weighted { "1-4" } else { "equal" },
                    time_build(&b, m),
                    moved(&t, &less),
                    moved(&t, &more),
                );
            }
        }
    }

    steadiness();
}

/// The same build again and again, paced as the control bench's REST
/// changes come (one every ~20 ms), each followed by a fixed loop of
/// multiplications that touches no memory: how far one build's time moves
/// with the host alone; the control bench's p99 rides on it. When both are
/// several times their median at the same moments, the CPU itself slowed
/// down (here: a vCPU given a fraction of a core for a second or so); when
/// only the builds are, the memory they touch did (caches or memory shared
/// with the host's other tenants). Either way the host, not the code.
fn steadiness() {
    const BUILDS: usize = 250;
    let b = backends(1000, false);
    let (builds, spins): (Vec<f64>, Vec<f64>) = (0..BUILDS)
        .map(|i| {
            let less = if i % 2 == 0 { &b[1..] } else { &b[..] };
            let t = Instant::now();
            std::hint::black_box(build(less, 65_537).unwrap());
            let build_ms = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let mut x = std::hint::black_box(1u64);
            // A dependent chain the compiler cannot shorten (~1 ms here).
            for _ in 0..250_000 {
                x ^= x >> 29;
                x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            }
            std::hint::black_box(x);
            let spin_ms = t.elapsed().as_secs_f64() * 1e3;
            std::thread::sleep(Duration::from_millis(20));
            (build_ms, spin_ms)
        })
        .unzip();
    // p50, p99, max.
    let spread = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        (
            s[v.len() / 2],
            s[((v.len() - 1) as f64 * 0.99).round() as usize],
            s[v.len() - 1],
        )
    };
    let ((b50, b99, bmax), (s50, _, smax)) = (spread(&builds), spread(&spins));
    let slow_build: Vec<bool> = builds.iter().map(|&t| t > 2.0 * b50).collect();
    let slow_spin: Vec<bool> = spins.iter().map(|&t| t > 2.0 * s50).collect();
    let both = slow_build
        .iter()
        .zip(&slow_spin)
        .filter(|(a, b)| **a && **b)
        .count();
    println!(
        "\nHost steadiness: one build (M=65537, 1000 or 999 equal backends) {BUILDS} times, 20 ms apart: \
         p50 {b50:.3} ms, p99 {b99:.3} ms, max {bmax:.3} ms; over twice its p50 in {} of {BUILDS}. \
         After each, a loop of multiplications that reads no memory: p50 {s50:.3} ms, max {smax:.3} ms; \
         over twice its p50 in {}, {both} of them right after a slow build.",
        slow_build.iter().filter(|&&s| s).count(),
        slow_spin.iter().filter(|&&s| s).count(),
    );
}
