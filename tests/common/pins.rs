//! A unique pin directory per test, removed (links detached, pins gone)
//! when dropped: also when the test fails.

use std::path::{Path, PathBuf};

use lethe::dataplane::pin;

pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn new(test: &str) -> PinDir {
        pin::ensure_bpffs(Path::new(pin::BPFFS)).unwrap();
        let instance = format!("test-{test}-{}", std::process::id());
        PinDir(pin::instance_dir(Path::new(pin::BPFFS), &instance))
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = pin::remove_instance(&self.0);
    }
}

/// Makes the map pinned as `name` in `dir` read-only for every syscall
/// from now on (bpf_map_freeze): a real kernel refusal of every later
/// write, for tests of what a refused change leaves.
pub fn freeze(dir: &Path, name: &str) {
    use std::os::fd::{AsFd, AsRawFd};
    let map = libbpf_rs::MapHandle::from_pinned_path(dir.join(name)).unwrap();
    // SAFETY: a valid map fd, open for the call.
    let rc = unsafe { libbpf_rs::libbpf_sys::bpf_map_freeze(map.as_fd().as_raw_fd()) };
    assert_eq!(rc, 0, "freezing {name}");
}
