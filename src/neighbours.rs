//! Keeping backends' next hops resolved. The XDP program takes MACs from
//! the kernel's neighbour table (bpf_fib_lookup), but packets it forwards
//! never make the kernel resolve or refresh an entry: a backend nobody on
//! the host has talked to yet has none (`no_neigh`, passed to the kernel,
//! which cannot resolve it from a VIP packet either). So the daemon makes
//! the kernel resolve each backend (or its gateway): one empty UDP
//! datagram to the discard port (9) when a backend appears, and to every
//! backend now and then. Health checks do the same for checked backends.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::control::Controller;
use crate::plan::Plan;

/// Every backend address of a plan.
pub fn backends(plan: &Plan) -> HashSet<IpAddr> {
    plan.vips
        .iter()
        .flat_map(|v| v.vip.backends.iter().map(|b| b.address))
        .collect()
}

/// Sends one empty datagram to port 9 of each address: the kernel resolves
/// the next hop on the way. Failures (no route, ...) are left to the data
/// plane's own counters.
pub fn warm(addrs: impl IntoIterator<Item = IpAddr>) {
    let v4 = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)).ok();
    let v6 = UdpSocket::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)).ok();
    for a in addrs {
        let sock = if a.is_ipv4() { &v4 } else { &v6 };
        if let Some(s) = sock {
            let _ = s.send_to(&[], SocketAddr::new(a, 9));
        }
    }
}

/// Every `period`, warms every backend of the current plan, until `cancel`.
pub async fn keep_warm(control: Arc<Controller>, period: Duration, cancel: CancellationToken) {
    loop {
        let plan = control.snapshot().await.plan;
        let addrs = backends(&plan);
        let _ = tokio::task::spawn_blocking(move || warm(addrs)).await;
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(period) => {}
        }
    }
}
