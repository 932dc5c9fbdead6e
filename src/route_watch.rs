//! Keeping the program's cached next hops true. The XDP program keeps what
//! bpf_fib_lookup answered for each backend (egress port, MACs, path MTU)
//! for a short while (`nexthops`, bpf/maps.h) instead of asking on every
//! packet. This task listens to the kernel's route, neighbour, address and
//! link announcements (rtnetlink multicast groups) and, after each burst,
//! makes every cached next hop stale, so a changed MAC, route or MTU is
//! used from the next packet on. Without the daemon the entries still
//! expire on their own (`LETHE_NEXTHOP_TTL_MS`).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

use crate::dataplane::Dataplane;

/// Route, neighbour, address and link changes, IPv4 and IPv6.
const GROUPS: u32 = (libc::RTMGRP_LINK
    | libc::RTMGRP_NEIGH
    | libc::RTMGRP_IPV4_IFADDR
    | libc::RTMGRP_IPV4_ROUTE
    | libc::RTMGRP_IPV6_IFADDR
    | libc::RTMGRP_IPV6_ROUTE) as u32;

/// A non-blocking rtnetlink socket joined to GROUPS, in the calling
/// thread's network namespace.
pub fn subscribe() -> io::Result<OwnedFd> {
    // SAFETY: plain syscalls; the fd is owned from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = GROUPS;
    // SAFETY: addr is a valid sockaddr_nl of the size given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Reads what is queued; Ok(true) when anything was announced (or the
/// queue overflowed, which means changes were lost: stale all the same).
fn drain(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<bool> {
    let mut any = false;
    loop {
        // SAFETY: buf is valid for buf.len() bytes of writes.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            any = true;
            continue;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => return Ok(any),
            Some(libc::ENOBUFS) => any = true,
            Some(libc::EINTR) => {}
            _ => return Err(e),
        }
    }
}

/// Invalidates `dp`'s cached next hops after every burst of announcements,
/// until `cancel`.
pub async fn watch(dp: Arc<Dataplane>, cancel: CancellationToken) {
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open
    // and the same for the AsyncFd's whole life.
    let registered =
        subscribe().and_then(|fd| unsafe { AsyncFd::register(fd) }.map_err(io::Error::from));
    let fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(error = %e, "cannot follow route changes: cached next hops only expire");
            return;
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut ready = tokio::select! {
            _ = cancel.cancelled() => return,
            r = fd.readable() => match r {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(error = %e, "route change listener stopped");
                    return;
                }
            },
        };
        let changed = match drain(fd.get_ref(), &mut buf) {
            Ok(changed) => changed,
            Err(e) => {
                tracing::warn!(error = %e, "route change listener stopped");
                return;
            }
        };
        ready.clear_ready();
        if changed {
            if let Err(e) = dp.invalidate_nexthops() {
                tracing::warn!(error = %e, "invalidating cached next hops");
            }
        }
    }
}
