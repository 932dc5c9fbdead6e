//! Decision events from the real program: a sampled packet gives one event
//! whose every field matches the model's decision; sampling off gives none;
//! 1 in N gives about 1/N; a full ring loses events, counted, and packets
//! are decided the same.
//!
//! Privileged: needs root (BPF, a network namespace). Run by scripts/test.sh.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lethe::abi::Action;
use lethe::dataplane::events::{read_events, RawEvent};
use lethe::dataplane::Dataplane;
use lethe::model::{self, Network};
use lethe::plan::Plan;

use common::config::fixture_config;
use common::netns::in_new_netns;
use common::packets::Flow;
use common::topology::Topology;

/// Runs `f` while a reader thread collects events; returns them.
fn collect(dp: &Dataplane, f: impl FnOnce()) -> Vec<RawEvent> {
    let stop = Arc::new(AtomicBool::new(false));
    let got = Arc::new(Mutex::new(Vec::new()));
    let ring = dp.event_ring().unwrap();
    let reader = {
        let (stop, got) = (stop.clone(), got.clone());
        std::thread::spawn(move || {
            read_events(ring, &stop, |e| got.lock().unwrap().push(e)).unwrap()
        })
    };
    f();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap();
    let v = got.lock().unwrap().clone();
    v
}

#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn sampled_decisions_arrive_with_the_models_fields() {
    in_new_netns(|| {
        let topo = Topology::create();
        let mut config = fixture_config();
        for v in &mut config.vips {
            v.event_sample_rate = match v.name.as_str() {
                "web4" | "dns4" | "unreach4" => 1,
                "web6" => 4,
                _ => 0,
            };
        }
        let plan = Plan::new(&config).unwrap();
        let dp = Dataplane::load().unwrap();
        dp.apply(&plan).unwrap();
        let lt0 = topo.ifindex("lt0");
        let mac = topo.iface_mac("lt0");
        let flows: Vec<Flow> = (0..200u16)
            .flat_map(|i| {
                [
                    Flow::tcp("198.51.100.1", 1000 + i, "10.100.0.1", 80), // web4, dsr
                    Flow::udp("198.51.100.1", 1000 + i, "10.100.0.1", 53), // dns4, 4in6
                    Flow::tcp("198.51.100.1", 1000 + i, "10.100.0.6", 80), // unreach4: dropped
                    Flow::tcp("198.51.100.1", 1000 + i, "10.100.0.2", 80), // any4: not sampled
                    Flow::tcp("198.51.100.1", 1000 + i, "10.100.0.1", 81), // not a VIP
                ]
            })
            .collect();
        let events = collect(&dp, || {
            for f in &flows {
                dp.test_run(&f.frame(mac), lt0).unwrap();
            }
        });
        assert_eq!(
            events.len(),
            600,
            "one event per packet of the three rate-1 VIPs"
        );
        let (sent, lost) = dp.event_counters().unwrap();
        assert_eq!((sent, lost), (600, 0));
        for (e, f) in events.iter().zip(
            flows
                .iter()
                .filter(|f| f.dst.to_string() != "10.100.0.2" && f.dport != 81),
        ) {
            let want = model::process(&plan, &topo as &dyn Network, lt0, &f.frame(mac));
            let (vip, backend) = dp.resolve(e.vip_id, e.backend_id);
            assert_eq!(vip, want.vip.map(|i| plan.vips[i].key()));
            assert_eq!(backend, want.backend);
            assert_eq!((e.action, e.reason), (Some(want.action), Some(want.reason)));
            assert_eq!(
                (e.src, e.dst, e.sport, e.dport),
                (f.src, f.dst, f.sport, f.dport)
            );
            assert_eq!(e.proto, if f.udp { 17 } else { 6 });
            assert_eq!(e.mode, Some(plan.vips[want.vip.unwrap()].mode()));
            assert_eq!(e.ifindex, lt0);
            assert!(e.time_boot_ns > 0);
        }
        assert!(events
            .windows(2)
            .all(|w| w[0].time_boot_ns <= w[1].time_boot_ns));

        // 1 in 4, on web6: 4000 packets give about 1000 events.
        let events = collect(&dp, || {
            for i in 0..4000u16 {
                let f = Flow::tcp("2001:db8::9", i, "fd00:100::1", 80);
                assert_eq!(
                    dp.test_run(&f.frame(mac), lt0).unwrap().action,
                    Some(Action::Tx)
                );
            }
        });
        assert!(
            (850..=1150).contains(&events.len()),
            "1 in 4 of 4000 gave {}",
            events.len()
        );
    });
}

#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn a_full_ring_loses_events_counted_and_never_changes_a_verdict() {
    in_new_netns(|| {
        let topo = Topology::create();
        let mut config = fixture_config();
        config.vips.iter_mut().for_each(|v| v.event_sample_rate = 1);
        let plan = Plan::new(&config).unwrap();
        let dp = Dataplane::load().unwrap();
        dp.apply(&plan).unwrap();
        let lt0 = topo.ifindex("lt0");
        let mac = topo.iface_mac("lt0");
        // Nobody reads: 1 MiB holds ~14.5k records of 64 + 8 bytes.
        let n = 20_000u32;
        for i in 0..n {
            let f = Flow::tcp("198.51.100.1", (i % 60_000) as u16, "10.100.0.1", 80);
            let frame = f.frame(mac);
            let run = dp.test_run(&frame, lt0).unwrap();
            let want = model::process(&plan, &topo as &dyn Network, lt0, &frame);
            assert_eq!((run.action, &run.frame), (Some(want.action), &want.frame));
        }
        let (sent, lost) = dp.event_counters().unwrap();
        assert_eq!(sent + lost, u64::from(n));
        assert!(lost > 0 && sent > 10_000, "sent {sent} lost {lost}");
    });
}
