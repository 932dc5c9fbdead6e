//! The data plane outlives its daemon: pinned maps and links stay when the
//! process goes, a new process adopts them without rewriting a table or
//! detaching, a newer program replaces the running one in place, and
//! removing the instance detaches and unpins everything.
//!
//! Privileged: needs root (BPF, bpffs, a network namespace). Each test pins
//! under a unique directory and removes it, also when it fails.

mod common;

use std::path::Path;
use std::process::Command;

use lethe::abi::{Action, Reason};
use lethe::dataplane::{pin, AttachMode, Dataplane, LinkOutcome};
use lethe::plan::Plan;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use common::config::fixture_config;
use common::netns::{ifindex, in_new_netns, sh};
use common::packets::Flow;
use common::pins::PinDir;
use common::topology::Topology;

/// The outer maps of tables: any size, and the fixed size (see bpf/abi.h).
const OUTER_MAPS: [&str; 2] = ["tables", "tables_fixed"];

/// Map ids of every published table, in both outer maps: they change only
/// if a table is rewritten.
fn table_ids(dir: &Path) -> Vec<Option<Vec<u8>>> {
    let mut ids = Vec::new();
    for name in OUTER_MAPS {
        let tables = MapHandle::from_pinned_path(dir.join(name)).unwrap();
        ids.extend(
            (0..lethe::abi::MAX_TABLES)
                .map(|i| tables.lookup(&i.to_ne_bytes(), MapFlags::ANY).unwrap()),
        );
    }
    ids
}

/// An empty table map of `size` slots of the kind `tables_fixed` (else
/// `tables`) takes.
fn table_map(fixed: bool, size: u32) -> MapHandle {
    use libbpf_rs::libbpf_sys;
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        map_flags: libbpf_sys::BPF_F_MMAPABLE
            | if fixed {
                0
            } else {
                libbpf_sys::BPF_F_INNER_MAP
            },
        ..Default::default()
    };
    MapHandle::create(
        libbpf_rs::MapType::Array,
        Some("test_table"),
        4,
        4,
        size,
        &opts,
    )
    .unwrap()
}

/// Every VIP with backends has its planned table published, slot by slot.
fn tables_equal_the_plan(dp: &Dataplane, plan: &Plan) {
    for v in plan.vips.iter().filter(|v| !v.table.is_empty()) {
        let t = &v.table;
        let planned: Vec<std::net::IpAddr> =
            t.slots.iter().map(|&i| t.backends[i as usize]).collect();
        let published = dp.published_table(&v.key()).unwrap();
        assert_eq!(published.as_deref(), Some(&planned[..]), "{}", v.vip.name);
    }
}

fn xdp_prog_id(dev: &str) -> Option<u32> {
    let out = Command::new("ip")
        .args(["-d", "link", "show", dev])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let at = text.find("prog/xdp id ")?;
    text[at + 12..].split_whitespace().next()?.parse().ok()
}

#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn restart_adopts_pinned_state_and_upgrades_in_place() {
    let pins = PinDir::new("restart");
    let dir = pins.0.clone();
    in_new_netns(move || {
        let topo = Topology::create();
        let lt0 = topo.ifindex("lt0");
        let plan = Plan::new(&fixture_config()).unwrap();
        let frame = Flow::tcp("198.51.100.1", 4242, "10.100.0.1", 80).frame(topo.iface_mac("lt0"));

        // First daemon: load, apply, attach, send a packet, go away.
        let first = Dataplane::load_pinned(&dir).unwrap();
        first.apply(&plan).unwrap();
        let (link, outcome) = first
            .attach_pinned(&dir, "lt0", lt0, AttachMode::Native)
            .unwrap();
        assert_eq!(outcome, LinkOutcome::Attached);
        let (link_id, first_prog) = link.ids().unwrap();
        assert_eq!(xdp_prog_id("lt0"), Some(first_prog));
        let web4 = plan
            .vips
            .iter()
            .find(|v| v.vip.name == "web4")
            .unwrap()
            .key();
        let run = first.test_run(&frame, lt0).unwrap();
        assert_eq!(run.action, Some(Action::Tx));
        let counted = first.vip_counter(&web4).unwrap().unwrap();
        let tables_before = table_ids(&dir);
        drop(link);
        drop(first);
        // Like kill -9: nothing was detached, the program still runs.
        assert_eq!(
            xdp_prog_id("lt0"),
            Some(first_prog),
            "detached when the daemon went away"
        );

        // Second daemon (a "newer build": another load of the program).
        let second = Dataplane::load_pinned(&dir).unwrap();
        assert_eq!(
            second.vip_counter(&web4).unwrap().unwrap(),
            counted,
            "counters lost"
        );
        // Before any apply, the new program decides as the old one: its
        // quick_filter (global data, its own, not pinned) was filled from
        // the adopted state, or the VIP's packets would pass as no VIP's.
        let adopted = second.test_run(&frame, lt0).unwrap();
        assert_eq!((adopted.action, &adopted.frame), (run.action, &run.frame));
        second.apply(&plan).unwrap();
        assert_eq!(
            table_ids(&dir),
            tables_before,
            "a table was rewritten on restart"
        );
        let (link, outcome) = second
            .attach_pinned(&dir, "lt0", lt0, AttachMode::Native)
            .unwrap();
        let (same_link, second_prog) = link.ids().unwrap();
        assert_eq!(
            outcome,
            LinkOutcome::Upgraded {
                previous_prog_id: first_prog
            }
        );
        assert_eq!(same_link, link_id, "a new link: the program was detached");
        assert_ne!(second_prog, first_prog);
        assert_eq!(xdp_prog_id("lt0"), Some(second_prog));
        // Attaching again with the same program keeps the link.
        let (_again, outcome) = second
            .attach_pinned(&dir, "lt0", lt0, AttachMode::Native)
            .unwrap();
        assert_eq!(outcome, LinkOutcome::Kept);
        // The adopted state is complete: the same decision as before.
        let again = second.test_run(&frame, lt0).unwrap();
        assert_eq!((again.action, &again.frame), (run.action, &run.frame));
        drop(link);

        // A changed config after restart is applied incrementally.
        let mut changed = fixture_config();
        changed.vips.retain(|v| v.name != "web6");
        second.apply(&Plan::new(&changed).unwrap()).unwrap();
        let out = second
            .trace(
                &Flow::tcp("2001:db8::1", 1, "fd00:100::1", 80).frame(topo.iface_mac("lt0")),
                lt0,
            )
            .unwrap();
        assert_eq!(out.reason, Some(Reason::NotVip));

        // Down: detached and unpinned.
        let removed = pin::remove_instance(&dir).unwrap();
        assert_eq!(removed.links, vec!["lt0".to_string()]);
        assert!(!dir.exists());
        assert_eq!(xdp_prog_id("lt0"), None, "still attached after removal");
    });
}

/// A link pinned for an interface that was deleted is replaced, not reused.
#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn stale_link_of_a_vanished_interface_is_replaced() {
    let pins = PinDir::new("stale");
    let dir = pins.0.clone();
    in_new_netns(move || {
        sh("ip link add ls0 type veth peer name ls1 && ip link set ls0 up && ip link set ls1 up");
        let dp = Dataplane::load_pinned(&dir).unwrap();
        let (link, _) = dp
            .attach_pinned(&dir, "ls0", ifindex("ls0"), AttachMode::Native)
            .unwrap();
        drop(link);
        sh("ip link del ls0");
        sh("ip link add ls0 type veth peer name ls1 && ip link set ls0 up && ip link set ls1 up");
        let (_link, outcome) = dp
            .attach_pinned(&dir, "ls0", ifindex("ls0"), AttachMode::Native)
            .unwrap();
        assert_eq!(outcome, LinkOutcome::Attached);
        assert!(xdp_prog_id("ls0").is_some());
    });
}

/// Junk a crash could leave in pinned maps is cleaned on adoption: a
/// backend record of a VIP that no longer exists, a table no VIP uses.
#[test]
#[ignore = "privileged: needs root (BPF, bpffs); run by scripts/test.sh"]
fn adoption_repairs_what_a_crash_left() {
    let pins = PinDir::new("repair");
    let dir = &pins.0;
    let plan = Plan::new(&fixture_config()).unwrap();
    let dp = Dataplane::load_pinned(dir).unwrap();
    dp.apply(&plan).unwrap();
    drop(dp);
    // A backend record owned by a VIP id nobody has, in the last slot.
    let backends = MapHandle::from_pinned_path(dir.join("backends")).unwrap();
    let mut orphan = [0u8; 24];
    orphan[..4].copy_from_slice(&[10, 1, 0, 77]);
    orphan[18] = lethe::abi::FAMILY_INET;
    orphan[20..24].copy_from_slice(&999u32.to_ne_bytes());
    let last = lethe::abi::MAX_BACKENDS - 1;
    backends
        .update(&last.to_ne_bytes(), &orphan, MapFlags::ANY)
        .unwrap();
    // A table in a slot no VIP record points to, in each outer map; and
    // VIP 0's table also under its own id in the outer map its record
    // does not name.
    let spare = lethe::abi::MAX_TABLES - 1;
    let outer = OUTER_MAPS.map(|name| MapHandle::from_pinned_path(dir.join(name)).unwrap());
    let mut planted = 0;
    let mut wrong_map = None;
    use std::os::fd::{AsFd, AsRawFd};
    for (i, tables) in outer.iter().enumerate() {
        let Some(used) = tables.lookup(&0u32.to_ne_bytes(), MapFlags::ANY).unwrap() else {
            continue;
        };
        let inner =
            MapHandle::from_map_id(u32::from_ne_bytes(used[..4].try_into().unwrap())).unwrap();
        let fd = (inner.as_fd().as_raw_fd() as u32).to_ne_bytes();
        tables
            .update(&spare.to_ne_bytes(), &fd, MapFlags::ANY)
            .unwrap();
        planted += 1;
        // The other outer map takes only tables of its own kind.
        let copy = match OUTER_MAPS[1 - i] {
            "tables_fixed" => table_map(true, lethe::abi::FIXED_TABLE_SIZE),
            _ => table_map(false, 3),
        };
        outer[1 - i]
            .update(
                &0u32.to_ne_bytes(),
                &(copy.as_fd().as_raw_fd() as u32).to_ne_bytes(),
                MapFlags::ANY,
            )
            .unwrap();
        wrong_map = Some(1 - i);
    }
    assert_eq!(planted, 1, "VIP 0's table is in exactly one outer map");

    let dp = Dataplane::load_pinned(dir).unwrap();
    let rec = backends
        .lookup(&last.to_ne_bytes(), MapFlags::ANY)
        .unwrap()
        .unwrap();
    assert_eq!(rec[18], 0, "orphan backend record kept");
    for (tables, name) in outer.iter().zip(OUTER_MAPS) {
        assert!(
            tables
                .lookup(&spare.to_ne_bytes(), MapFlags::ANY)
                .unwrap()
                .is_none(),
            "stale table kept in {name}"
        );
    }
    if let Some(i) = wrong_map {
        assert!(
            outer[i]
                .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
                .unwrap()
                .is_none(),
            "table 0 kept in {}, which VIP 0's record does not name",
            OUTER_MAPS[i]
        );
    }
    dp.apply(&plan).unwrap();
    for v in &plan.vips {
        if !v.table.is_empty() {
            assert!(
                dp.published_table(&v.key()).unwrap().is_some(),
                "{}",
                v.vip.name
            );
        }
    }
}

/// A daemon adopting pins from a build before vip_index (no such map: a
/// fresh, empty one is created) fills the index from the VIPs it adopts
/// from `vips`, and rewrites no table; an apply that changes nothing
/// leaves the live half as it is.
#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn vip_index_is_filled_from_adopted_vips() {
    in_new_netns(|| {
        let topo = Topology::create();
        let pins = PinDir::new("vipindex");
        let dir = &pins.0;
        let plan = Plan::new(&fixture_config()).unwrap();
        let dp = Dataplane::load_pinned(dir).unwrap();
        dp.apply(&plan).unwrap();
        let lt0 = topo.ifindex("lt0");
        let frame = Flow::tcp("198.51.100.1", 1234, "10.100.0.1", 80).frame(topo.iface_mac("lt0"));
        let reason = |dp: &Dataplane| dp.trace(&frame, lt0).unwrap().reason;
        assert_eq!(reason(&dp), Some(Reason::FwdTx));
        let ctl = || {
            MapHandle::from_pinned_path(dir.join("vip_index_ctl"))
                .unwrap()
                .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
                .unwrap()
                .unwrap()
        };
        let before = ctl();
        dp.apply(&plan).unwrap();
        assert_eq!(ctl(), before, "an unchanged plan flipped the index");
        drop(dp);

        let tables = table_ids(dir);
        for name in ["vip_index", "vip_index_ctl", "rcu_sync"] {
            std::fs::remove_file(dir.join(name)).unwrap();
        }
        let dp = Dataplane::load_pinned(dir).unwrap();
        // Adopted, not yet applied: the new program's index is empty.
        assert_eq!(reason(&dp), Some(Reason::NotVip));
        dp.apply(&plan).unwrap();
        assert_eq!(reason(&dp), Some(Reason::FwdTx));
        assert_eq!(table_ids(dir), tables, "a table was rewritten");
    });
}

/// Pins from a build before `tables_fixed` (every table in `tables`, VIP
/// records without VIP_F_FIXED_TABLE, no index): the adopted records still
/// lead to their tables in `tables`, and the next apply moves each table of
/// the default size into `tables_fixed` through the VIP's spare slot,
/// leaving nothing behind in `tables`.
#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn tables_from_older_builds_move_to_tables_fixed() {
    in_new_netns(|| {
        let topo = Topology::create();
        let pins = PinDir::new("tablesfixed");
        let dir = &pins.0;
        let plan = Plan::new(&fixture_config()).unwrap();
        let dp = Dataplane::load_pinned(dir).unwrap();
        dp.apply(&plan).unwrap();
        drop(dp);

        // Rewrite the pins the way an older build left them.
        let open = |name: &str| MapHandle::from_pinned_path(dir.join(name)).unwrap();
        let (vips, sized, fixed) = (open("vips"), open("tables"), open("tables_fixed"));
        let mut moved = Vec::new();
        for key in vips.keys() {
            let mut record = vips.lookup(&key, MapFlags::ANY).unwrap().unwrap();
            // struct lethe_vip: table_id at 4, flags at 13.
            if record[13] & lethe::abi::VIP_F_FIXED_TABLE == 0 {
                continue;
            }
            let table_id = u32::from_ne_bytes(record[4..8].try_into().unwrap());
            record[13] &= !lethe::abi::VIP_F_FIXED_TABLE;
            vips.update(&key, &record, MapFlags::ANY).unwrap();
            // A VIP without backends has no table.
            let Some(inner) = fixed
                .lookup(&table_id.to_ne_bytes(), MapFlags::ANY)
                .unwrap()
            else {
                continue;
            };
            let inner =
                MapHandle::from_map_id(u32::from_ne_bytes(inner[..4].try_into().unwrap())).unwrap();
            let copy = table_map(false, inner.max_entries());
            for slot in 0..inner.max_entries() {
                let k = slot.to_ne_bytes();
                let v = inner.lookup(&k, MapFlags::ANY).unwrap().unwrap();
                copy.update(&k, &v, MapFlags::ANY).unwrap();
            }
            use std::os::fd::{AsFd, AsRawFd};
            sized
                .update(
                    &table_id.to_ne_bytes(),
                    &(copy.as_fd().as_raw_fd() as u32).to_ne_bytes(),
                    MapFlags::ANY,
                )
                .unwrap();
            fixed.delete(&table_id.to_ne_bytes()).unwrap();
            moved.push(table_id);
        }
        assert!(
            !moved.is_empty(),
            "the fixture config has default-size tables"
        );
        for name in ["vip_index", "vip_index_ctl", "rcu_sync", "tables_fixed"] {
            std::fs::remove_file(dir.join(name)).unwrap();
        }

        let dp = Dataplane::load_pinned(dir).unwrap();
        // Adopted: each record's table is read from `tables`.
        tables_equal_the_plan(&dp, &plan);
        dp.apply(&plan).unwrap();
        let lt0 = topo.ifindex("lt0");
        let frame = Flow::tcp("198.51.100.1", 1234, "10.100.0.1", 80).frame(topo.iface_mac("lt0"));
        assert_eq!(dp.trace(&frame, lt0).unwrap().reason, Some(Reason::FwdTx));
        let (sized, fixed) = (open("tables"), open("tables_fixed"));
        for id in moved {
            let lookup =
                |m: &MapHandle, id: u32| m.lookup(&id.to_ne_bytes(), MapFlags::ANY).unwrap();
            assert!(lookup(&sized, id).is_none(), "table {id} left in tables");
            assert!(
                lookup(&fixed, id ^ 1).is_some(),
                "table {id} not moved to tables_fixed"
            );
        }
        tables_equal_the_plan(&dp, &plan);
    });
}

/// The pinned state a crash in the middle of an apply leaves, adopted by
/// the next daemon before its first apply (the old program still runs on
/// the pins): nothing a packet can reach is freed or removed.
///
/// 1. A backend got a new record (a higher id) and its VIP's table names
///    it, but the old record was not freed yet: the one the table names is
///    kept.
/// 2. A VIP's record moved to a table of another size, but the index flip
///    did not happen: the table the live index names stays until the first
///    apply flips the index.
#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn adoption_keeps_what_a_crash_mid_apply_left_live() {
    use lethe::dataplane::types::{lethe_backend, lethe_vip};
    use lethe::dataplane::Pod;
    use std::os::fd::{AsFd, AsRawFd};

    let pins = PinDir::new("midapply");
    let dir = pins.0.clone();
    in_new_netns(move || {
        let topo = Topology::create();
        let lt0 = topo.ifindex("lt0");
        let mut config = fixture_config();
        config.vips.retain(|v| v.name == "web4");
        let plan = Plan::new(&config).unwrap();
        let frames: Vec<Vec<u8>> = (0..32)
            .map(|i| {
                Flow::tcp("198.51.100.1", 5000 + i, "10.100.0.1", 80).frame(topo.iface_mac("lt0"))
            })
            .collect();
        let all_forwarded = |dp: &Dataplane, when: &str| {
            for f in &frames {
                let t = dp.trace(f, lt0).unwrap();
                assert_eq!(
                    (t.action, t.reason),
                    (Some(Action::Tx), Some(Reason::FwdTx)),
                    "{when}"
                );
            }
        };
        let open = |name: &str| MapHandle::from_pinned_path(dir.join(name)).unwrap();
        // The one VIP's record and its published table (an inner map).
        let vip_record = |vips: &MapHandle| -> (Vec<u8>, lethe_vip) {
            let key = vips.keys().next().unwrap();
            let rec = vips.lookup(&key, MapFlags::ANY).unwrap().unwrap();
            (key, lethe_vip::from_bytes(&rec).unwrap())
        };
        let inner = |rec: &lethe_vip| -> MapHandle {
            let outer = open(if rec.flags & lethe::abi::VIP_F_FIXED_TABLE != 0 {
                "tables_fixed"
            } else {
                "tables"
            });
            let id = outer
                .lookup(&rec.table_id.to_ne_bytes(), MapFlags::ANY)
                .unwrap()
                .unwrap();
            MapHandle::from_map_id(u32::from_ne_bytes(id[..4].try_into().unwrap())).unwrap()
        };

        // 1. A renumbered backend, its old record still there.
        let dp = Dataplane::load_pinned(&dir).unwrap();
        dp.apply(&plan).unwrap();
        all_forwarded(&dp, "before");
        drop(dp);
        let (_, rec) = vip_record(&open("vips"));
        let table = inner(&rec);
        let old_id = u32::from_ne_bytes(
            table
                .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
                .unwrap()
                .unwrap()[..4]
                .try_into()
                .unwrap(),
        );
        let new_id = lethe::abi::MAX_BACKENDS - 1;
        let backends = open("backends");
        let record = backends
            .lookup(&old_id.to_ne_bytes(), MapFlags::ANY)
            .unwrap()
            .unwrap();
        assert_ne!(lethe_backend::from_bytes(&record).unwrap().family, 0);
        backends
            .update(&new_id.to_ne_bytes(), &record, MapFlags::ANY)
            .unwrap();
        for slot in 0..lethe::abi::FIXED_TABLE_SIZE {
            let v = table
                .lookup(&slot.to_ne_bytes(), MapFlags::ANY)
                .unwrap()
                .unwrap();
            if v[..4] == old_id.to_ne_bytes() {
                table
                    .update(&slot.to_ne_bytes(), &new_id.to_ne_bytes(), MapFlags::ANY)
                    .unwrap();
            }
        }
        let dp = Dataplane::load_pinned(&dir).unwrap();
        all_forwarded(&dp, "a renumbered backend, adopted");
        dp.apply(&plan).unwrap();
        all_forwarded(&dp, "a renumbered backend, after the first apply");
        drop(dp);

        // 2. The record names a table of another size the index does not.
        let vips = open("vips");
        let (key, mut rec) = vip_record(&vips);
        let live = inner(&rec);
        let first = live
            .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
            .unwrap()
            .unwrap();
        let other = table_map(false, 7919);
        for slot in 0..7919u32 {
            other
                .update(&slot.to_ne_bytes(), &first, MapFlags::ANY)
                .unwrap();
        }
        rec.table_id ^= 1;
        rec.table_size = 7919;
        rec.flags &= !lethe::abi::VIP_F_FIXED_TABLE;
        open("tables")
            .update(
                &rec.table_id.to_ne_bytes(),
                &(other.as_fd().as_raw_fd() as u32).to_ne_bytes(),
                MapFlags::ANY,
            )
            .unwrap();
        vips.update(&key, rec.as_bytes(), MapFlags::ANY).unwrap();
        let dp = Dataplane::load_pinned(&dir).unwrap();
        all_forwarded(&dp, "a resize cut short, adopted");
        dp.apply(&plan).unwrap();
        all_forwarded(&dp, "a resize cut short, after the first apply");
        tables_equal_the_plan(&dp, &plan);
    });
}

/// A VIP the live index still holds but `vips` no longer does (a daemon
/// killed between removing it from `vips` and the index flip) answers from
/// adoption on, before any apply: the new program's first test (its own
/// quick_filter) is filled from the live index's keys as well as from
/// `vips`. Filled from `vips` alone, it passed the VIP's packets as no
/// VIP's until the restore's apply.
#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn a_vip_only_the_live_index_holds_answers_after_adoption() {
    let pins = PinDir::new("indexonly");
    let dir = pins.0.clone();
    in_new_netns(move || {
        let topo = Topology::create();
        let lt0 = topo.ifindex("lt0");
        let plan = Plan::new(&fixture_config()).unwrap();
        // web6: no other VIP has its address.
        let frame =
            Flow::tcp("2001:db8:c::1", 4321, "fd00:100::1", 80).frame(topo.iface_mac("lt0"));
        let dp = Dataplane::load_pinned(&dir).unwrap();
        dp.apply(&plan).unwrap();
        let reason = |dp: &Dataplane| dp.trace(&frame, lt0).unwrap().reason;
        assert_eq!(reason(&dp), Some(Reason::FwdTx));
        drop(dp);

        // struct lethe_vip_key: address, port (network order), protocol.
        let vips = MapHandle::from_pinned_path(dir.join("vips")).unwrap();
        let web6: std::net::Ipv6Addr = "fd00:100::1".parse().unwrap();
        let mut want = web6.octets().to_vec();
        want.extend(80u16.to_be_bytes());
        want.push(lethe::abi::IPPROTO_TCP);
        let key = vips
            .keys()
            .find(|k| k[..19] == want[..])
            .expect("web6 in vips");
        vips.delete(&key).unwrap();

        let dp = Dataplane::load_pinned(&dir).unwrap();
        assert_eq!(
            reason(&dp),
            Some(Reason::FwdTx),
            "adopted, before any apply"
        );
        dp.apply(&plan).unwrap();
        assert_eq!(reason(&dp), Some(Reason::FwdTx), "after the first apply");
    });
}

/// The same crash with every VIP id in use (1024 VIPs): the VIP only the
/// live index holds keeps its id until a flip, and the first apply needs
/// that id for it. It used to fail (no free VIP id) at every restart.
#[test]
#[ignore = "privileged: needs root (BPF, bpffs, netns); run by scripts/test.sh"]
fn a_crash_before_the_flip_at_full_capacity_is_adopted_and_applied() {
    let pins = PinDir::new("indexfull");
    let dir = pins.0.clone();
    in_new_netns(move || {
        let topo = Topology::create();
        let (lt0, mac) = (topo.ifindex("lt0"), topo.iface_mac("lt0"));
        let vips: Vec<serde_json::Value> = (0..lethe::abi::MAX_VIPS)
            .map(|i| {
                serde_json::json!({"name": format!("v{i}"),
                    "address": format!("10.{}.{}.1", 200 + i / 256, i % 256),
                    "port": 80, "protocol": "tcp", "mode": "dsr", "table_size": 7,
                    "backends": [{"address": "10.1.0.11"}]})
            })
            .collect();
        let config: lethe::config::Config =
            serde_json::from_value(serde_json::json!({ "vips": vips })).unwrap();
        let plan = Plan::new(&config).unwrap();
        let dp = Dataplane::load_pinned(&dir).unwrap();
        dp.apply(&plan).unwrap();
        let frame = Flow::tcp("198.51.100.1", 5000, "10.200.0.1", 80).frame(mac);
        let reason = |dp: &Dataplane| dp.trace(&frame, lt0).unwrap().reason;
        assert_eq!(reason(&dp), Some(Reason::FwdTx));
        drop(dp);

        // v0 (10.200.0.1:80/tcp) deleted from `vips`, not yet from the
        // live index: a daemon killed between the two.
        let vips = MapHandle::from_pinned_path(dir.join("vips")).unwrap();
        let mut want = std::net::Ipv4Addr::new(10, 200, 0, 1).octets().to_vec();
        want.extend(80u16.to_be_bytes());
        let key = vips
            .keys()
            .find(|k| k[..4] == want[..4] && k[16..18] == want[4..6])
            .expect("v0 in vips");
        vips.delete(&key).unwrap();

        let dp = Dataplane::load_pinned(&dir).unwrap();
        dp.apply(&plan)
            .unwrap_or_else(|e| panic!("the first apply after the crash: {e}"));
        assert_eq!(reason(&dp), Some(Reason::FwdTx));
    });
}

/// Pins in another layout (another build's stamp, or maps without one:
/// pins from before stamps, or a crash before the stamp was written) are
/// never adopted: loading refuses them and leaves them as they are.
#[test]
#[ignore = "privileged: needs root (BPF, bpffs); run by scripts/test.sh"]
fn pins_of_another_layout_are_refused_untouched() {
    use lethe::dataplane::DataplaneError;
    let pins = PinDir::new("layout");
    let dir = &pins.0;
    assert_eq!(pin::pins(dir), pin::Pins::Empty);
    let dp = Dataplane::load_pinned(dir).unwrap();
    dp.apply(&Plan::new(&fixture_config()).unwrap()).unwrap();
    drop(dp);
    assert_eq!(pin::read_layout(dir), Some(pin::LAYOUT));
    assert_eq!(pin::pins(dir), pin::Pins::Current);
    let tables = table_ids(dir);

    for stamp in [Some(pin::LAYOUT ^ 1), None] {
        match stamp {
            Some(s) => pin::write_layout(dir, s).unwrap(),
            None => std::fs::remove_file(pin::layout_path(dir)).unwrap(),
        }
        assert_eq!(pin::pins(dir), pin::Pins::Other { stamp });
        match Dataplane::load_pinned(dir) {
            Err(e @ DataplaneError::OtherLayout { .. }) => {
                assert!(e.to_string().contains("another layout"), "{e}")
            }
            Err(e) => panic!("{e:#}"),
            Ok(_) => panic!("pins of another layout ({stamp:?}) adopted"),
        }
        assert_eq!(pin::read_layout(dir), stamp, "the stamp was rewritten");
        assert_eq!(table_ids(dir), tables, "the pinned tables changed");
    }
    // A stamp is not just any pin called `layout`.
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let mut hash =
        MapHandle::create(libbpf_rs::MapType::Hash, Some("notstamp"), 4, 8, 1, &opts).unwrap();
    hash.update(
        &0u32.to_ne_bytes(),
        &pin::LAYOUT.to_ne_bytes(),
        MapFlags::ANY,
    )
    .unwrap();
    hash.pin(pin::layout_path(dir)).unwrap();
    assert_eq!(pin::pins(dir), pin::Pins::Other { stamp: None });
}
