//! Keeping the program's cached next hops true. The XDP program keeps what
//! bpf_fib_lookup answered for each backend (egress port, MACs, path MTU)
//! for a short while (`nexthops`, bpf/maps.h) instead of asking on every
//! packet. This task listens to the kernel's route, neighbour, address and
//! link announcements (rtnetlink multicast groups) and, after each burst,
//! makes every cached next hop stale, so a changed MAC, route or MTU is
//! used from the next packet on. Without the daemon the entries still
//! expire on their own (`LETHE_NEXTHOP_TTL_JIFFIES`). After an address or
//! route change it also asks for the encapsulating backends' outer source
//! addresses to be resolved again (`Controller::refresh_sources`).

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

/// What a burst of announcements changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    /// Anything at all: cached next hops are stale.
    pub any: bool,
    /// An address or a route: the source address the kernel picks towards
    /// a backend may differ.
    pub addresses_or_routes: bool,
}

/// Whether a datagram of rtnetlink messages holds an address, route or
/// link message (RTM_NEW/DEL ADDR, ROUTE, LINK). Links count: an IPv4
/// route through a link that goes down stops being used with no route
/// message at all, only the link's.
pub fn names_addresses_or_routes(mut msgs: &[u8]) -> bool {
    const HDR: usize = 16; // struct nlmsghdr
    while msgs.len() >= HDR {
        let len = u32::from_ne_bytes(msgs[..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(msgs[4..6].try_into().expect("2 bytes"));
        if matches!(
            kind,
            libc::RTM_NEWADDR
                | libc::RTM_DELADDR
                | libc::RTM_NEWROUTE
                | libc::RTM_DELROUTE
                | libc::RTM_NEWLINK
                | libc::RTM_DELLINK
        ) {
            return true;
        }
        let step = (len + 3) & !3;
        if len < HDR || step > msgs.len() {
            return false;
        }
        msgs = &msgs[step..];
    }
    false
}

/// Reads what is queued. An overflowed queue means announcements were
/// lost: everything may have changed.
fn drain(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Changes> {
    let mut seen = Changes::default();
    loop {
        // SAFETY: buf is valid for buf.len() bytes of writes.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            seen.any = true;
            seen.addresses_or_routes |= names_addresses_or_routes(&buf[..n as usize]);
            continue;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => return Ok(seen),
            Some(libc::ENOBUFS) => {
                seen = Changes {
                    any: true,
                    addresses_or_routes: true,
                }
            }
            Some(libc::EINTR) => {}
            _ => return Err(e),
        }
    }
}

/// Invalidates `dp`'s cached next hops after every burst of announcements,
/// and calls `on_addresses_or_routes` after a burst that changed an address
/// or a route (the daemon re-resolves outer sources), until `cancel`.
pub async fn watch(
    dp: Arc<Dataplane>,
    on_addresses_or_routes: impl Fn() + Send + 'static,
    cancel: CancellationToken,
) {
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
        let changes = match drain(fd.get_ref(), &mut buf) {
            Ok(changes) => changes,
            Err(e) => {
                tracing::warn!(error = %e, "route change listener stopped");
                return;
            }
        };
        ready.clear_ready();
        if changes.any {
            if let Err(e) = dp.invalidate_nexthops() {
                tracing::warn!(error = %e, "invalidating cached next hops");
            }
        }
        if changes.addresses_or_routes {
            on_addresses_or_routes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::names_addresses_or_routes;

    fn msg(kind: u16, payload: usize) -> Vec<u8> {
        let len = 16 + payload;
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.resize((len + 3) & !3, 0);
        m
    }

    #[test]
    fn address_route_and_link_messages_are_told_from_the_rest() {
        let neigh = msg(libc::RTM_NEWNEIGH, 13);
        let rule = msg(libc::RTM_NEWRULE, 40);
        assert!(!names_addresses_or_routes(&neigh));
        assert!(!names_addresses_or_routes(
            &[neigh.clone(), rule.clone()].concat()
        ));
        for kind in [
            libc::RTM_NEWADDR,
            libc::RTM_DELADDR,
            libc::RTM_NEWROUTE,
            libc::RTM_DELROUTE,
            libc::RTM_NEWLINK,
            libc::RTM_DELLINK,
        ] {
            // After other messages of odd lengths, too.
            let all = [neigh.clone(), rule.clone(), msg(kind, 7)].concat();
            assert!(names_addresses_or_routes(&all), "{kind}");
        }
    }

    #[test]
    fn a_malformed_datagram_is_read_no_further() {
        assert!(!names_addresses_or_routes(&[]));
        assert!(!names_addresses_or_routes(&[1, 2, 3]));
        // A length below the header's, then a route message never reached.
        let mut bad = msg(libc::RTM_NEWNEIGH, 0);
        bad[..4].copy_from_slice(&4u32.to_ne_bytes());
        assert!(!names_addresses_or_routes(
            &[bad, msg(libc::RTM_NEWROUTE, 0)].concat()
        ));
        // A length past the end.
        let mut long = msg(libc::RTM_NEWNEIGH, 0);
        long[..4].copy_from_slice(&4096u32.to_ne_bytes());
        assert!(!names_addresses_or_routes(&long));
    }
}
