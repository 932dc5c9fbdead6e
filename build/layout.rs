//! The layout stamp of the pinned maps (see src/dataplane/pin.rs): built
//! into the program by build.rs, checked by tests/layout.rs. Std only.

/// The headers that say what each pinned map holds: the records and
/// constants shared with Rust, the map definitions, and the VIP index's
/// slot hash. A build whose stamp differs does not adopt the pins of
/// another; it fills fresh maps and moves the links over (dataplane::pin).
pub const FILES: &[&str] = &["abi.h", "maps.h", "hash.h"];

/// FNV-1a (64-bit) over the layout files' code, each file's name first.
/// A comment or a re-indent changes nothing; any other edit changes the
/// stamp, and the next daemon moves to fresh maps (counters restart).
pub fn stamp(bpf: &std::path::Path) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for name in FILES {
        let src = std::fs::read_to_string(bpf.join(name))
            .unwrap_or_else(|e| panic!("reading bpf/{name}: {e}"));
        for b in name.bytes().chain([0]).chain(code_only(&src).bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// C source without comments, its tokens separated by one space.
pub fn code_only(src: &str) -> String {
    let mut code = String::with_capacity(src.len());
    let mut rest = src;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
            code.push(' ');
        } else if let Some(after) = rest.strip_prefix("//") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
            code.push(' ');
        } else {
            let c = rest.chars().next().expect("not empty");
            code.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    code.split_whitespace().collect::<Vec<_>>().join(" ")
}
