//! Maglev figures: build time, balance and disruption, as a markdown table.
//! Run: cargo bench --bench maglev
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

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
}
