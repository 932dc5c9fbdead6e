//! What `lethe doctor` reads about the host. Everything here follows the
//! calling thread's network namespace, so the doctor may run under
//! `nsenter --net=`: interfaces, routes and neighbours come from netlink
//! (`ip -j`), sysctls from /proc/sys/net, device features from the
//! SIOCETHTOOL ioctl on a socket of that namespace. (/sys/class/net would
//! show the namespace /sys was mounted in, which nsenter does not change.)

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// One interface, from `ip -j -d link show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub ifindex: u32,
    pub name: String,
    pub up: bool,
    pub mtu: u32,
    /// `veth`, `bridge`, ...; None for plain devices.
    pub kind: Option<String>,
    /// A veth's peer: its ifindex in the peer's namespace ...
    pub peer_ifindex: Option<u32>,
    /// ... and that namespace's id as seen from here (None: this one).
    pub peer_nsid: Option<i64>,
}

impl Iface {
    pub fn is_veth(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }
}

/// The route the kernel picks towards an address (`ip -j route get`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dev: String,
    pub gateway: Option<IpAddr>,
    /// `local`, `unreachable`, ...; None for a unicast route.
    pub kind: Option<String>,
    /// A route MTU (`mtu` metric), when the route sets one.
    pub mtu: Option<u32>,
}

/// `ip -j ARGS`, parsed. An error carries what `ip` said.
pub fn ip(args: &[&str]) -> Result<Value, String> {
    let out = Command::new("ip")
        .arg("-j")
        .args(args)
        .output()
        .map_err(|e| format!("running `ip`: {e} (iproute2 installed?)"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.trim().to_string());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    serde_json::from_str(&text).map_err(|e| format!("`ip -j {}`: {e}", args.join(" ")))
}

pub fn parse_links(v: &Value) -> Vec<Iface> {
    let mut out = Vec::new();
    for l in v.as_array().into_iter().flatten() {
        let (Some(ifindex), Some(name)) = (l["ifindex"].as_u64(), l["ifname"].as_str()) else {
            continue;
        };
        let kind = l["linkinfo"]["info_kind"].as_str().map(String::from);
        let veth = kind.as_deref() == Some("veth");
        out.push(Iface {
            ifindex: ifindex as u32,
            name: name.to_string(),
            up: l["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "UP")),
            mtu: l["mtu"].as_u64().unwrap_or(0) as u32,
            peer_ifindex: l["link_index"].as_u64().filter(|_| veth).map(|i| i as u32),
            peer_nsid: l["link_netnsid"].as_i64().filter(|_| veth),
            kind,
        });
    }
    out
}

/// Every interface of this network namespace.
pub fn links() -> Result<Vec<Iface>, String> {
    ip(&["-d", "link", "show"]).map(|v| parse_links(&v))
}

pub fn parse_route(v: &Value) -> Option<Route> {
    let r = v.as_array()?.first()?;
    let mtu = r["mtu"].as_u64().or_else(|| {
        r["metrics"]
            .as_array()
            .and_then(|m| m.iter().find_map(|m| m["mtu"].as_u64()))
    });
    Some(Route {
        dev: r["dev"].as_str()?.to_string(),
        gateway: r["gateway"].as_str().and_then(|g| g.parse().ok()),
        kind: r["type"].as_str().map(String::from),
        mtu: mtu.map(|m| m as u32),
    })
}

/// The route towards `addr`; an error when there is none.
pub fn route_get(addr: IpAddr) -> Result<Route, String> {
    let a = addr.to_string();
    let v = ip(&["route", "get", &a])?;
    parse_route(&v).ok_or_else(|| format!("`ip route get {a}` named no device"))
}

/// The states of the neighbour entry of `addr` on `dev` (REACHABLE,
/// STALE, FAILED, ...); empty when there is no entry.
pub fn neighbour_state(addr: IpAddr, dev: &str) -> Result<Vec<String>, String> {
    let a = addr.to_string();
    let v = ip(&["neigh", "show", "to", &a, "dev", dev])?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["dst"].as_str().and_then(|d| d.parse().ok()) == Some(addr))
        .flat_map(|n| n["state"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s.as_str().map(String::from))
        .collect())
}

pub fn parse_addresses(v: &Value) -> Vec<IpAddr> {
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["local"].as_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// The addresses of one interface.
pub fn addresses(dev: &str) -> Result<Vec<IpAddr>, String> {
    ip(&["addr", "show", "dev", dev]).map(|v| parse_addresses(&v))
}

/// Named network namespaces (/run/netns) by their id as seen from here.
pub fn netns_ids() -> HashMap<i64, String> {
    let mut out = HashMap::new();
    if let Ok(v) = ip(&["netns", "list-id"]) {
        for n in v.as_array().into_iter().flatten() {
            if let (Some(id), Some(name)) = (n["nsid"].as_i64(), n["name"].as_str()) {
                out.insert(id, name.to_string());
            }
        }
    }
    out
}

/// `/proc/sys/net/<family>/conf/<dev>/<key>` (`dev` may be `all`).
pub fn conf(family: &str, dev: &str, key: &str) -> Option<i64> {
    std::fs::read_to_string(format!("/proc/sys/net/{family}/conf/{dev}/{key}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The `sysctl` name of a conf key; interface names with a dot need the
/// slash form.
pub fn conf_name(family: &str, dev: &str, key: &str) -> String {
    if dev.contains('.') {
        format!("net/{family}/conf/{dev}/{key}")
    } else {
        format!("net.{family}.conf.{dev}.{key}")
    }
}

/// The features of a device that XDP on veth cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// Any tx checksum offload (`ethtool -k`: tx-checksumming).
    pub tx_csum: bool,
    /// generic-receive-offload.
    pub gro: bool,
}

const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_GGRO: u32 = 0x2b;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before it is owned.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd this process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

fn ethtool_value(sock: &OwnedFd, name: &str, cmd: u32) -> io::Result<bool> {
    let mut value = EthtoolValue { cmd, data: 0 };
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL with a legacy get command reads the name and
    // writes `value`, which outlives the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.data != 0)
}

/// tx checksumming and GRO of a device of this namespace.
pub fn features(name: &str) -> io::Result<Features> {
    let sock = ioctl_socket()?;
    Ok(Features {
        tx_csum: ethtool_value(&sock, name, ETHTOOL_GTXCSUM)?,
        gro: ethtool_value(&sock, name, ETHTOOL_GGRO)?,
    })
}

/// The MTU of a device of this namespace.
pub fn mtu(name: &str) -> io::Result<u32> {
    let sock = ioctl_socket()?;
    let mut req = ifreq(name)?;
    // SAFETY: SIOCGIFMTU reads the name and writes the MTU into `req`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

/// The name of an interface of this namespace.
pub fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// Runs `f` on a thread that has joined the network namespace at `path`
/// (the rest of the process stays where it is).
pub fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let ns = File::open(path)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns moves only this thread, which ends after f.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_from_ip_json() {
        let v: Value = serde_json::from_str(
            r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536},
                {"ifindex":3,"link_index":7,"ifname":"l-b","flags":["BROADCAST","UP"],"mtu":1600,
                 "link_netnsid":1,"linkinfo":{"info_kind":"veth"}},
                {"ifindex":4,"link_index":3,"ifname":"l-b.10","flags":["BROADCAST"],"mtu":1500,
                 "linkinfo":{"info_kind":"vlan"}}]"#,
        )
        .unwrap();
        let l = parse_links(&v);
        assert_eq!(l.len(), 3);
        assert!(l[0].up && !l[0].is_veth() && l[0].peer_ifindex.is_none());
        assert_eq!(
            l[1],
            Iface {
                ifindex: 3,
                name: "l-b".into(),
                up: true,
                mtu: 1600,
                kind: Some("veth".into()),
                peer_ifindex: Some(7),
                peer_nsid: Some(1),
            }
        );
        // A vlan's link_index is its parent, not a peer.
        assert!(!l[2].up && l[2].peer_ifindex.is_none());
    }

    #[test]
    fn routes_from_ip_json() {
        let on_link: Value = serde_json::from_str(
            r#"[{"dst":"10.1.0.11","dev":"l-b","prefsrc":"10.1.0.1","flags":[],"uid":0,"cache":[]}]"#,
        )
        .unwrap();
        assert_eq!(
            parse_route(&on_link),
            Some(Route {
                dev: "l-b".into(),
                gateway: None,
                kind: None,
                mtu: None
            })
        );
        let via: Value = serde_json::from_str(
            r#"[{"dst":"fd00:9::1","from":"::","gateway":"fd00:10::1","dev":"l-r","metrics":[{"mtu":1400}]}]"#,
        )
        .unwrap();
        let r = parse_route(&via).unwrap();
        assert_eq!(r.gateway, Some("fd00:10::1".parse().unwrap()));
        assert_eq!(r.mtu, Some(1400));
        let local: Value =
            serde_json::from_str(r#"[{"type":"local","dst":"10.1.0.1","dev":"lo"}]"#).unwrap();
        assert_eq!(parse_route(&local).unwrap().kind.as_deref(), Some("local"));
    }

    #[test]
    fn addresses_from_ip_json() {
        let v: Value = serde_json::from_str(
            r#"[{"ifindex":1,"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8},
                {"family":"inet","local":"10.100.0.1","prefixlen":32},{"family":"inet6","local":"fd00:100::1","prefixlen":128}]}]"#,
        )
        .unwrap();
        let a = parse_addresses(&v);
        assert_eq!(a.len(), 3);
        assert!(a.contains(&"fd00:100::1".parse().unwrap()));
    }

    #[test]
    fn sysctl_names() {
        assert_eq!(
            conf_name("ipv4", "eth0", "rp_filter"),
            "net.ipv4.conf.eth0.rp_filter"
        );
        assert_eq!(
            conf_name("ipv4", "eth0.100", "rp_filter"),
            "net/ipv4/conf/eth0.100/rp_filter"
        );
    }
}
