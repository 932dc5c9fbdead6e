//! Attaching to interfaces: native and generic mode as asked, detached
//! when the link is dropped, and a clear error for a missing interface.
//!
//! Privileged: needs root (BPF, a network namespace). Run by scripts/test.sh.

mod common;

use std::process::Command;

use lethe::dataplane::{AttachMode, Dataplane, DataplaneError};

use common::netns::{ifindex, in_new_netns, sh};

fn link_show(dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-d", "link", "show", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "privileged: needs root (BPF, netns); run by scripts/test.sh"]
fn attach_modes_and_detach_on_drop() {
    in_new_netns(|| {
        sh("ip link add la0 type veth peer name la1 && ip link set la0 up && ip link set la1 up");
        let dp = Dataplane::load().unwrap();
        let idx = ifindex("la0");

        let native = dp.attach(idx, AttachMode::Native).unwrap();
        let shown = link_show("la0");
        assert!(
            shown.contains("xdp ") || shown.contains("xdp/id") || shown.contains("prog/xdp"),
            "{shown}"
        );
        assert!(!shown.contains("xdpgeneric"), "{shown}");
        // One program per interface and mode: a second native attach fails.
        assert!(dp.attach(idx, AttachMode::Native).is_err());
        drop(native);
        assert!(
            !link_show("la0").contains("prog/xdp"),
            "still attached after drop"
        );

        let generic = dp.attach(idx, AttachMode::Generic).unwrap();
        assert!(
            link_show("la0").contains("xdpgeneric"),
            "{}",
            link_show("la0")
        );
        drop(generic);
        assert!(!link_show("la0").contains("prog/xdp"));

        match dp.attach(999_999, AttachMode::Native) {
            Err(DataplaneError::Attach {
                ifindex: 999_999,
                mode: AttachMode::Native,
                ..
            }) => {}
            other => panic!("attach to a missing interface: {other:?}"),
        }
    });
}
