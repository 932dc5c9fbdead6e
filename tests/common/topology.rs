//! The fixture topology, built with iproute2 inside the test's namespace,
//! and the same topology described for the reference model.
//!
//! ```text
//!  lt0 (ingress, 10.1.0.1/24, fd00:1::1/64)  -- lt1
//!      on-link backends 10.1.0.11-13, fd00:1::11-13 (static neighbours)
//!      gateway 10.1.0.254 / fd00:1::fe for 10.9.0.0/16 / fd00:9::/32
//!      (fd00:9:13::/48 on a route of MTU 1300)
//!      10.1.0.99 / fd00:1::99: on-link, no neighbour entry
//!  lt2 (10.2.0.1/24, fd00:2::1/64) -- lt3, in tx_ports
//!      backend 10.2.0.11 / fd00:2::11
//!  lt4 (10.3.0.1/24, fd00:3::1/64) -- lt5, NOT in tx_ports
//!      backend 10.3.0.11 / fd00:3::11
//!  clients 198.51.100.0/24, 2001:db8:c::/48: via the lt0 gateway
//!  192.0.2.0/24, 2001:db8:dead::/48: unreachable routes
//! ```

use std::net::IpAddr;

use lethe::model::{Fib, FibQuery, Network, Nexthop};

use super::netns::{ifindex, sh};

pub const MTU: usize = 1500;

pub fn mac(last: u8, iface: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, iface, last]
}

struct Iface {
    name: &'static str,
    ifindex: u32,
    mac: [u8; 6],
    v4: IpAddr,
    v6: IpAddr,
    /// (first octets of v4 /24, v6 /64 prefix as 4 u16 groups)
    v4_net: [u8; 3],
    v6_net: [u16; 4],
    in_tx_ports: bool,
}

pub struct Topology {
    ifaces: Vec<Iface>,
    /// address -> MAC, for addresses with a static neighbour entry.
    neighbours: Vec<(IpAddr, [u8; 6])>,
}

/// fd00:9:13::/48: behind the lt0 gateway like the rest of fd00:9::/32,
/// on a route of NARROW_MTU.
const NARROW_NET: &str = "fd00:9:13::";
const NARROW_MTU: usize = 1300;

fn narrow(dst: IpAddr) -> bool {
    matches!(dst, IpAddr::V6(a) if a.segments()[..3] == [0xfd00, 9, 0x13])
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

impl Topology {
    /// Creates the devices, addresses, routes and neighbours in the current
    /// (test) namespace.
    pub fn create() -> Topology {
        sh("sysctl -qw net.ipv4.conf.all.forwarding=1 net.ipv6.conf.all.forwarding=1");
        let mut ifaces = Vec::new();
        for (i, (a, b)) in [("lt0", "lt1"), ("lt2", "lt3"), ("lt4", "lt5")]
            .iter()
            .enumerate()
        {
            let n = i as u8 + 1;
            let m = mac(1, n);
            sh(&format!(
                "ip link add {a} address {} type veth peer name {b}",
                fmt_mac(&m)
            ));
            sh(&format!(
                "ip link set {a} mtu {MTU} up && ip link set {b} up"
            ));
            sh(&format!("ip addr add 10.{n}.0.1/24 dev {a}"));
            sh(&format!("ip -6 addr add fd00:{n}::1/64 dev {a} nodad"));
            ifaces.push(Iface {
                name: a,
                ifindex: ifindex(a),
                mac: m,
                v4: ip(&format!("10.{n}.0.1")),
                v6: ip(&format!("fd00:{n}::1")),
                v4_net: [10, n, 0],
                v6_net: [0xfd00, u16::from(n), 0, 0],
                in_tx_ports: n == 2,
            });
        }
        let mut neighbours = Vec::new();
        let mut neigh = |addr: &str, dev: &str, m: [u8; 6]| {
            sh(&format!(
                "ip neigh replace {addr} lladdr {} dev {dev} nud permanent",
                fmt_mac(&m)
            ));
            neighbours.push((ip(addr), m));
        };
        for last in 11..=13u8 {
            neigh(&format!("10.1.0.{last}"), "lt0", mac(last, 0x11));
            neigh(&format!("fd00:1::{last}"), "lt0", mac(last, 0x61));
        }
        neigh("10.1.0.254", "lt0", mac(0xfe, 0x11));
        neigh("fd00:1::fe", "lt0", mac(0xfe, 0x61));
        neigh("10.2.0.11", "lt2", mac(11, 0x12));
        neigh("fd00:2::11", "lt2", mac(11, 0x62));
        neigh("10.3.0.11", "lt4", mac(11, 0x13));
        neigh("fd00:3::11", "lt4", mac(11, 0x63));
        sh("ip route add 10.9.0.0/16 via 10.1.0.254 dev lt0");
        sh("ip -6 route add fd00:9::/32 via fd00:1::fe dev lt0");
        // A tunnel path under IPv6's minimum MTU once the outer header is
        // in (1300 - 40 < 1280). Locked: bpf_fib_lookup's IPv6 MTU takes a
        // route's MTU only then (else the device's).
        sh(&format!(
            "ip -6 route add {NARROW_NET}/48 via fd00:1::fe dev lt0 mtu lock {NARROW_MTU}"
        ));
        // Clients, for the nat return path: behind the gateway on lt0.
        sh("ip route add 198.51.100.0/24 via 10.1.0.254 dev lt0");
        sh("ip -6 route add 2001:db8:c::/48 via fd00:1::fe dev lt0");
        sh("ip route add unreachable 192.0.2.0/24");
        sh("ip -6 route add unreachable 2001:db8:dead::/48");
        Topology { ifaces, neighbours }
    }

    pub fn ifindex(&self, name: &str) -> u32 {
        self.ifaces
            .iter()
            .find(|i| i.name == name)
            .expect("iface")
            .ifindex
    }

    pub fn iface_mac(&self, name: &str) -> [u8; 6] {
        self.ifaces
            .iter()
            .find(|i| i.name == name)
            .expect("iface")
            .mac
    }

    /// The MAC the kernel resolves for an on-link neighbour.
    pub fn neighbour_mac(&self, addr: IpAddr) -> Option<[u8; 6]> {
        self.neighbours
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, m)| *m)
    }

    /// The connected interface of `dst`, and the gateway it goes through.
    fn connected(&self, dst: IpAddr) -> Option<(&Iface, Option<IpAddr>)> {
        match dst {
            IpAddr::V4(a) => {
                let o = a.octets();
                if let Some(i) = self.ifaces.iter().find(|i| o[..3] == i.v4_net) {
                    return Some((i, None));
                }
                if (o[0] == 10 && o[1] == 9) || o[..3] == [198, 51, 100] {
                    return Some((&self.ifaces[0], Some(ip("10.1.0.254"))));
                }
                None
            }
            IpAddr::V6(a) => {
                let s = a.segments();
                if let Some(i) = self.ifaces.iter().find(|i| s[..4] == i.v6_net) {
                    return Some((i, None));
                }
                if (s[0] == 0xfd00 && s[1] == 9) || s[..3] == [0x2001, 0xdb8, 0xc] {
                    return Some((&self.ifaces[0], Some(ip("fd00:1::fe"))));
                }
                None
            }
        }
    }
}

pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Network for Topology {
    fn route(&self, q: &FibQuery) -> Fib {
        // The host's own addresses: not forwarded (BPF_FIB_LKUP_RET_NOT_FWDED).
        if self.ifaces.iter().any(|i| i.v4 == q.dst || i.v6 == q.dst) {
            return Fib::NoRoute;
        }
        let Some((iface, gateway)) = self.connected(q.dst) else {
            return Fib::NoRoute;
        };
        let mtu = if narrow(q.dst) { NARROW_MTU } else { MTU };
        if q.tot_len > mtu {
            return Fib::FragNeeded { mtu: mtu as u32 };
        }
        let nexthop = gateway.unwrap_or(q.dst);
        let Some(dmac) = self.neighbour_mac(nexthop) else {
            return Fib::NoNeigh;
        };
        Fib::Forward(Nexthop {
            ifindex: iface.ifindex,
            smac: iface.mac,
            dmac,
            src: if q.dst.is_ipv4() { iface.v4 } else { iface.v6 },
            via_gateway: gateway.is_some(),
        })
    }

    fn tx_port(&self, ifindex: u32) -> bool {
        self.ifaces
            .iter()
            .any(|i| i.ifindex == ifindex && i.in_tx_ports)
    }
}
