//! C and Rust cannot drift: the structs of bpf/abi.h as the skeleton
//! generated them have the sizes and offsets the C side asserts, the maps
//! have the sizes Rust assumes, and every enum value and name in the
//! object's BTF matches src/abi.rs.

use std::mem::{offset_of, size_of};

use lethe::abi::{self, Mode, Reason, REASON_COUNT};
use lethe::dataplane::types::{
    lethe_backend, lethe_config, lethe_counter, lethe_event, lethe_trace, lethe_vip,
    lethe_vip_entry, lethe_vip_index_ctl, lethe_vip_key,
};
use libbpf_rs::btf::types::Enum;
use libbpf_rs::btf::Btf;

#[test]
fn struct_layouts_match_the_c_asserts() {
    assert_eq!(size_of::<lethe_vip_key>(), 20);
    assert_eq!(offset_of!(lethe_vip_key, addr), 0);
    assert_eq!(offset_of!(lethe_vip_key, port), 16);
    assert_eq!(offset_of!(lethe_vip_key, proto), 18);
    assert_eq!(offset_of!(lethe_vip_key, family), 19);

    assert_eq!(size_of::<lethe_vip>(), 24);
    assert_eq!(offset_of!(lethe_vip, vip_id), 0);
    assert_eq!(offset_of!(lethe_vip, table_id), 4);
    assert_eq!(offset_of!(lethe_vip, table_size), 8);
    assert_eq!(offset_of!(lethe_vip, mode), 12);
    assert_eq!(offset_of!(lethe_vip, flags), 13);
    assert_eq!(offset_of!(lethe_vip, event_sample_rate), 16);

    assert_eq!(size_of::<lethe_vip_entry>(), 48);
    assert_eq!(offset_of!(lethe_vip_entry, key), 0);
    assert_eq!(offset_of!(lethe_vip_entry, vip), 24);
    assert_eq!(size_of::<lethe_vip_index_ctl>(), 24);
    assert_eq!(offset_of!(lethe_vip_index_ctl, active), 0);
    assert_eq!(offset_of!(lethe_vip_index_ctl, half), 8);

    assert_eq!(size_of::<lethe_backend>(), 24);
    assert_eq!(offset_of!(lethe_backend, addr), 0);
    assert_eq!(offset_of!(lethe_backend, port), 16);
    assert_eq!(offset_of!(lethe_backend, family), 18);
    assert_eq!(offset_of!(lethe_backend, flags), 19);
    assert_eq!(offset_of!(lethe_backend, vip_id), 20);

    assert_eq!(size_of::<lethe_event>(), 64);
    assert_eq!(offset_of!(lethe_event, time_ns), 0);
    assert_eq!(offset_of!(lethe_event, version), 8);
    assert_eq!(offset_of!(lethe_event, verdict), 9);
    assert_eq!(offset_of!(lethe_event, reason), 10);
    assert_eq!(offset_of!(lethe_event, mode), 11);
    assert_eq!(offset_of!(lethe_event, family), 12);
    assert_eq!(offset_of!(lethe_event, proto), 13);
    assert_eq!(offset_of!(lethe_event, sport), 14);
    assert_eq!(offset_of!(lethe_event, dport), 16);
    assert_eq!(offset_of!(lethe_event, vip_id), 20);
    assert_eq!(offset_of!(lethe_event, backend_id), 24);
    assert_eq!(offset_of!(lethe_event, ifindex), 28);
    assert_eq!(offset_of!(lethe_event, src), 32);
    assert_eq!(offset_of!(lethe_event, dst), 48);

    assert_eq!(size_of::<lethe_trace>(), 24);
    assert_eq!(offset_of!(lethe_trace, magic), 0);
    assert_eq!(offset_of!(lethe_trace, reason), 4);
    assert_eq!(offset_of!(lethe_trace, vip_id), 8);
    assert_eq!(offset_of!(lethe_trace, backend_id), 12);
    assert_eq!(offset_of!(lethe_trace, hash), 16);

    assert_eq!(size_of::<lethe_config>(), 16);
    assert_eq!(offset_of!(lethe_config, hash_seed), 0);
    assert_eq!(size_of::<lethe_counter>(), 16);
    assert_eq!(offset_of!(lethe_counter, bytes), 8);
}

fn object_btf() -> Btf<'static> {
    Btf::from_path(concat!(env!("OUT_DIR"), "/lethe.bpf.o")).expect("BTF of bpf/lethe.bpf.c")
}

fn enum_members(btf: &Btf<'_>, name: &str) -> Vec<(String, i64)> {
    let e: Enum<'_> = btf
        .type_by_name(name)
        .unwrap_or_else(|| panic!("enum {name} missing from BTF"));
    e.iter()
        .map(|m| (m.name.unwrap().to_string_lossy().into_owned(), m.value))
        .collect()
}

#[test]
fn reasons_match_the_c_enum_by_value_and_name() {
    let btf = object_btf();
    let members = enum_members(&btf, "lethe_reason");
    let reasons: Vec<(String, i64)> = members
        .iter()
        .filter(|(n, _)| n != "LETHE_R_MAX")
        .cloned()
        .collect();
    assert_eq!(reasons.len(), Reason::ALL.len());
    for (name, value) in reasons {
        let r = Reason::from_raw(value as u32)
            .unwrap_or_else(|| panic!("{name} = {value} unknown to Rust"));
        let label = name.strip_prefix("LETHE_R_").unwrap().to_lowercase();
        assert_eq!(r.name(), label, "reason {value}");
    }
    let max = members.iter().find(|(n, _)| n == "LETHE_R_MAX").unwrap().1;
    assert_eq!(max as u32, REASON_COUNT);
}

#[test]
fn modes_and_families_match_the_c_enums() {
    let btf = object_btf();
    for (name, value) in enum_members(&btf, "lethe_mode") {
        let mode = Mode::ALL
            .iter()
            .find(|m| **m as i64 == value)
            .expect("mode value");
        assert_eq!(name, format!("LETHE_MODE_{}", mode.name().to_uppercase()));
    }
    let families = enum_members(&btf, "lethe_family");
    assert!(families.contains(&("LETHE_AF_INET".into(), i64::from(abi::FAMILY_INET))));
    assert!(families.contains(&("LETHE_AF_INET6".into(), i64::from(abi::FAMILY_INET6))));
}
