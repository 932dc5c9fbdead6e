//! Compiles the XDP programs in bpf/ into libbpf-rs skeletons in OUT_DIR.
use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

#[path = "build/layout.rs"]
mod layout;

/// Each `bpf/<name>.bpf.c` becomes `$OUT_DIR/<name>.skel.rs`.
const PROGRAMS: &[&str] = &["lethe", "pass", "decap", "bench"];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let clang = env::var("LETHE_CLANG").unwrap_or_else(|_| "clang-19".to_string());
    let bpf = manifest.join("bpf");
    let vmlinux = manifest.join("vmlinux");

    for name in PROGRAMS {
        let src = bpf.join(format!("{name}.bpf.c"));
        SkeletonBuilder::new()
            .source(&src)
            .clang(&clang)
            .clang_args([
                "-I".as_ref(),
                vmlinux.as_os_str(),
                "-I".as_ref(),
                bpf.as_os_str(),
                "-Wall".as_ref(),
                "-Werror".as_ref(),
                // 32-bit ALU and jump instructions (kernel 5.1+): clang's
                // default, v1, does 32-bit arithmetic in 64-bit registers
                // and zero-extends with shift pairs; v3 cut the JIT image
                // by 6% and ~8 ns off the ipip path (README, Performance).
                "-mcpu=v3".as_ref(),
            ])
            // The object itself too: tests/abi.rs reads its BTF.
            .obj(out.join(format!("{name}.bpf.o")))
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building {}: {e:#}", src.display()));
    }
    let stamp = layout::stamp(&bpf);
    std::fs::write(
        out.join("layout.rs"),
        format!(
            "/// What the pinned maps hold, as this build reads them: a hash of\n\
             /// {} with comments and spacing left out (build.rs).\n\
             pub const LAYOUT: u64 = 0x{stamp:016x};\n",
            layout::FILES.join(", ")
        ),
    )
    .expect("writing layout.rs");
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed=build");
    println!("cargo:rerun-if-changed=vmlinux");
    println!("cargo:rerun-if-env-changed=LETHE_CLANG");
}
