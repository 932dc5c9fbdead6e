//! Runs test code in a network namespace of its own.
//!
//! The namespace is anonymous (unshare(CLONE_NEWNET) on a fresh thread):
//! it has no name to collide with, and the kernel removes it, with every
//! device in it, when the thread ends — also when a test panics.

use std::process::Command;

/// Runs `f` on a new thread inside a new, empty network namespace and
/// returns its result (re-raising its panic).
pub fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let handle = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespaces; the thread
        // was created for this and ends with f.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {} (run as root)",
            std::io::Error::last_os_error()
        );
        sh("ip link set lo up");
        f()
    });
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs a command in the calling thread's namespace; panics on failure.
/// Children inherit the thread's network namespace.
pub fn sh(cmd: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(idx, 0, "no interface {name}");
    idx
}
