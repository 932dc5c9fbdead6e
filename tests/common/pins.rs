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
