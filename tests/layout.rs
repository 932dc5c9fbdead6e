//! The layout stamp (src/dataplane/pin.rs): the one built into the program
//! is the headers' own, and it moves with code, not with comments.

#[path = "../build/layout.rs"]
mod layout;

use std::path::{Path, PathBuf};

fn bpf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf")
}

#[test]
fn the_built_stamp_is_the_headers_stamp() {
    assert_eq!(layout::stamp(&bpf_dir()), lethe::dataplane::pin::LAYOUT);
}

#[test]
fn comments_and_spacing_keep_the_stamp_and_code_changes_it() {
    let dir = std::env::temp_dir().join(format!("lethe-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = |edit: &dyn Fn(&str, String) -> String| {
        for name in layout::FILES {
            let src = std::fs::read_to_string(bpf_dir().join(name)).unwrap();
            std::fs::write(dir.join(name), edit(name, src)).unwrap();
        }
        layout::stamp(&dir)
    };
    let same = copy(&|_, s| s);
    assert_eq!(same, lethe::dataplane::pin::LAYOUT);
    let commented = copy(&|name, s| {
        let s = format!("/* a new\n * block comment */\n{s}\n// and a line comment\n");
        if name == "abi.h" {
            s.replace(
                "#define LETHE_MAX_VIPS 1024",
                "#define   LETHE_MAX_VIPS\t1024 // same",
            )
        } else {
            s.replace('\t', "    ")
        }
    });
    let grown = copy(&|name, s| {
        if name == "abi.h" {
            s.replace("#define LETHE_MAX_VIPS 1024", "#define LETHE_MAX_VIPS 2048")
        } else {
            s
        }
    });
    let rekeyed = copy(&|name, s| {
        if name == "maps.h" {
            s.replacen("__type(key, __u32);", "__type(key, __u64);", 1)
        } else {
            s
        }
    });
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(commented, same, "a comment or spacing changed the stamp");
    assert_ne!(grown, same, "a changed constant kept the stamp");
    assert_ne!(rekeyed, same, "a changed map kept the stamp");
    assert_eq!(
        layout::code_only("a /* x */ b // y\n\tc  d"),
        "a b c d",
        "comments and spacing"
    );
}
