//! The desired state: VIPs, their backends, and the cluster-wide hash seed.
//!
//! This is the document `PUT /v1/config` takes and the state directory
//! stores. Every field but a VIP's name, address, port and protocol and a
//! backend's address has a default. [`Config::validate`] is pure: it takes
//! the document and says what is wrong with it, before anything is touched.

use crate::fast_hash::{FastMap, FastSet};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use utoipa::ToSchema;

use crate::abi::{self, Mode};
use crate::maglev::{self, DEFAULT_TABLE_SIZE};

/// Largest backend weight; 0 takes a backend out of the table.
pub const MAX_WEIGHT: u32 = 65_535;
/// Backend records in the data plane, over all VIPs. Half the map, so a
/// whole new configuration can be written before the old one is released.
pub const MAX_TOTAL_BACKENDS: usize = (abi::MAX_BACKENDS / 2) as usize;
/// Kernel memory per table slot: tables are mmapable BPF arrays, whose
/// elements take 8 bytes each (dataplane/table.rs `ELEM_STRIDE`) though a
/// slot holds a 4-byte backend id.
pub const TABLE_SLOT_BYTES: u64 = 8;
/// Table slots over all VIPs: every VIP at the default size, 1024 x 65537
/// = 2^26 + 1024 slots, ~512 MiB of tables in the kernel (8 bytes a slot)
/// and half as much again in the daemon's plan (4). 64 VIPs at the
/// largest size fit too. Not 2^26 exactly: that would refuse the last
/// default-sized VIP by 1024 slots.
pub const MAX_TOTAL_TABLE_SLOTS: u64 = abi::MAX_VIPS as u64 * DEFAULT_TABLE_SIZE as u64;
pub const MAX_NAME_LEN: usize = 63;
/// Longest HTTP health-check path.
pub const MAX_CHECK_PATH_LEN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seed of the flow hash: the same on every node behind one ECMP group.
    #[serde(default)]
    pub hash_seed: u32,
    /// UDP destination port of gue encapsulation.
    #[serde(default = "default_gue_port")]
    pub gue_port: u16,
    #[serde(default)]
    pub vips: Vec<Vip>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hash_seed: 0,
            gue_port: DEFAULT_GUE_PORT,
            vips: Vec::new(),
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => abi::IPPROTO_TCP,
            Protocol::Udp => abi::IPPROTO_UDP,
        }
    }

    pub fn from_number(n: u8) -> Option<Protocol> {
        match n {
            abi::IPPROTO_TCP => Some(Protocol::Tcp),
            abi::IPPROTO_UDP => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    pub name: String,
    #[schema(value_type = String, format = "ip", example = "10.100.0.1")]
    pub address: IpAddr,
    /// 0: every port of this address and protocol.
    pub port: u16,
    pub protocol: Protocol,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Leave the client's source port out of the hash: one client, one backend.
    #[serde(default)]
    pub sticky: bool,
    #[serde(default = "default_table_size")]
    pub table_size: u32,
    /// Decision events: 1 in N packets; 0 = off.
    #[serde(default)]
    pub event_sample_rate: u32,
    #[serde(default)]
    pub health_check: HealthCheck,
    #[serde(default)]
    pub backends: Vec<Backend>,
}

pub const DEFAULT_GUE_PORT: u16 = 6080;

fn default_gue_port() -> u16 {
    DEFAULT_GUE_PORT
}

fn default_mode() -> Mode {
    Mode::Dsr
}

fn default_table_size() -> u32 {
    DEFAULT_TABLE_SIZE
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    #[schema(value_type = String, format = "ip", example = "10.0.1.1")]
    pub address: IpAddr,
    /// Destination port for `nat`; defaults to the VIP's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// How a VIP's backends are probed. Stored and validated now; probing is
/// the health-check issue's work.
// `remote = "Self"`: the derived (de)serialisers are inherent functions,
// which the trait impls below wrap, so that `kind: none` refuses unknown
// fields too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(
    remote = "Self",
    tag = "kind",
    rename_all = "lowercase",
    deny_unknown_fields
)]
pub enum HealthCheck {
    #[default]
    None,
    /// Healthy when a TCP connection to the backend opens.
    Tcp {
        /// Defaults to the backend's port.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        #[serde(default = "default_interval")]
        interval_ms: u32,
        #[serde(default = "default_timeout")]
        timeout_ms: u32,
        /// Consecutive successes that make a down backend up.
        #[serde(default = "default_rise")]
        rise: u32,
        /// Consecutive failures that make an up backend down.
        #[serde(default = "default_fall")]
        fall: u32,
    },
    /// Healthy when `GET path` answers 2xx/3xx (or exactly `expect_status`).
    Http {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        #[serde(default = "default_path")]
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect_status: Option<u16>,
        #[serde(default = "default_interval")]
        interval_ms: u32,
        #[serde(default = "default_timeout")]
        timeout_ms: u32,
        #[serde(default = "default_rise")]
        rise: u32,
        #[serde(default = "default_fall")]
        fall: u32,
    },
}

impl Serialize for HealthCheck {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        HealthCheck::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for HealthCheck {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // serde's deny_unknown_fields does not reach a unit variant of an
        // internally tagged enum: `{"kind": "none", "port": 80}` (a check
        // half-written, or a typo of "tcp") would be taken as no check.
        let value = serde_json::Value::deserialize(deserializer)?;
        if value.get("kind").and_then(|k| k.as_str()) == Some("none") {
            if let Some(field) = value
                .as_object()
                .and_then(|o| o.keys().find(|k| *k != "kind"))
            {
                return Err(D::Error::unknown_field(field, &["kind"]));
            }
        }
        HealthCheck::deserialize(value).map_err(D::Error::custom)
    }
}

fn default_path() -> String {
    "/".to_string()
}

/// The timing every probing health check shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckTiming {
    pub interval_ms: u32,
    pub timeout_ms: u32,
    pub rise: u32,
    pub fall: u32,
}

fn default_interval() -> u32 {
    1000
}
fn default_timeout() -> u32 {
    500
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

/// What is wrong with a configuration. Each is a client error: the
/// document asks for something impossible, and nothing is applied.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("VIP name {0:?} is invalid: use 1-{MAX_NAME_LEN} characters from [A-Za-z0-9._-], starting with a letter or digit")]
    BadName(String),
    #[error("VIP name {0:?} is used twice")]
    DuplicateName(String),
    #[error("VIPs {first:?} and {second:?} both claim {address} port {port}/{protocol}")]
    DuplicateVip {
        first: String,
        second: String,
        address: IpAddr,
        port: u16,
        protocol: Protocol,
    },
    #[error("{what} address {address} cannot be used: {why}")]
    BadAddress {
        what: &'static str,
        address: IpAddr,
        why: &'static str,
    },
    #[error("VIP {vip:?}: backend {backend} is listed twice")]
    DuplicateBackend { vip: String, backend: IpAddr },
    #[error("VIP {vip:?}: mode {mode} cannot carry an {vip_family} VIP to {backend_family} backend {backend}")]
    MixedFamily {
        vip: String,
        mode: Mode,
        backend: IpAddr,
        vip_family: &'static str,
        backend_family: &'static str,
    },
    #[error("VIP {vip:?}: {problem}")]
    Table {
        vip: String,
        problem: maglev::MaglevError,
    },
    #[error("VIP {vip:?}: backend {backend} weight {weight} is out of range 0-{MAX_WEIGHT}")]
    BadWeight {
        vip: String,
        backend: IpAddr,
        weight: u32,
    },
    #[error("VIP {vip:?}: backend {backend} (weight {weight} of {total_weight} in all) would hold no slot of a table of {table_size}: a backend's share, table_size x weight / total weight, must be at least one slot; {remedy}")]
    NoSlot {
        vip: String,
        backend: IpAddr,
        weight: u32,
        total_weight: u64,
        table_size: u32,
        remedy: String,
    },
    #[error("VIP {vip:?}: backend {backend}: port 0 is not a destination port")]
    BadBackendPort { vip: String, backend: IpAddr },
    #[error("VIP {vip:?}: health check: {why}")]
    BadHealthCheck { vip: String, why: String },
    #[error("VIP {vip:?}: backend {backend} has a port, but a nat VIP on every port (port 0) keeps ports as they are")]
    NatPortWithoutVipPort { vip: String, backend: IpAddr },
    #[error("backend {backend} port {port}/{protocol} serves nat VIP {first:?} already; its replies could not tell {second:?}'s apart")]
    NatConflict {
        first: String,
        second: String,
        backend: IpAddr,
        port: u16,
        protocol: Protocol,
    },
    #[error("gue_port 0 is not a destination port")]
    BadGuePort,
    #[error("{count} VIPs exceed the data plane's {max}")]
    TooManyVips { count: usize, max: usize },
    #[error("{count} backends over all VIPs exceed the data plane's {max}")]
    TooManyBackends { count: usize, max: usize },
    #[error("tables of {slots} slots in all ({} MiB of kernel maps at {TABLE_SLOT_BYTES} bytes a slot) exceed the limit of {max} slots ({} MiB): use smaller table_size values", mib(*slots), mib(*max))]
    TooManyTableSlots { slots: u64, max: u64 },
}

/// Kernel bytes of `slots` table slots, in MiB (rounded down).
fn mib(slots: u64) -> u64 {
    (slots * TABLE_SLOT_BYTES) >> 20
}

fn family_name(a: &IpAddr) -> &'static str {
    if a.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

fn check_address(what: &'static str, a: &IpAddr) -> Result<(), ConfigError> {
    let why = match a {
        _ if a.is_unspecified() => "it is unspecified",
        _ if a.is_multicast() => "it is multicast",
        IpAddr::V4(v4) if v4.is_broadcast() => "it is broadcast",
        // Packets to a loopback address never leave the host: as a VIP no
        // client reaches it through the interface, as a backend the
        // packets would go out of the interface to an address no host on
        // it answers to.
        _ if a.is_loopback() => "it is loopback",
        // ::ffff:a.b.c.d is an IPv4 address in an IPv6 socket's notation;
        // on the wire it is no IPv6 address any host holds: write a.b.c.d.
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            "it is IPv4-mapped IPv6 (write the IPv4 address)"
        }
        // fe80::/10 names no interface by itself: connects and route
        // lookups need a scope the configuration has no place for.
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => {
            "it is link-local (it needs an interface scope)"
        }
        _ => return Ok(()),
    };
    Err(ConfigError::BadAddress {
        what,
        address: *a,
        why,
    })
}

fn check_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::BadName(name.to_string()))
    }
}

impl HealthCheck {
    /// The port the check probes on every backend, when it names one.
    pub fn port(&self) -> Option<u16> {
        match *self {
            HealthCheck::None => None,
            HealthCheck::Tcp { port, .. } | HealthCheck::Http { port, .. } => port,
        }
    }

    /// Interval, timeout, rise and fall; `None` for `kind: none`.
    pub fn timing(&self) -> Option<CheckTiming> {
        match *self {
            HealthCheck::None => None,
            HealthCheck::Tcp {
                interval_ms,
                timeout_ms,
                rise,
                fall,
                ..
            }
            | HealthCheck::Http {
                interval_ms,
                timeout_ms,
                rise,
                fall,
                ..
            } => Some(CheckTiming {
                interval_ms,
                timeout_ms,
                rise,
                fall,
            }),
        }
    }

    fn validate(&self) -> Result<(), String> {
        let Some(timing) = self.timing() else {
            return Ok(());
        };
        let (port, path) = match self {
            HealthCheck::None => return Ok(()),
            HealthCheck::Tcp { port, .. } => (port, None),
            HealthCheck::Http {
                port,
                path,
                expect_status,
                ..
            } => {
                if let Some(s) = expect_status {
                    if !(100..=599).contains(s) {
                        return Err(format!("expect_status {s} is not an HTTP status"));
                    }
                }
                (port, Some(path))
            }
        };
        if *port == Some(0) {
            return Err("port 0 cannot be probed".into());
        }
        if let Some(path) = path {
            // It goes into the request line as is: printable ASCII only.
            if !path.starts_with('/')
                || path.len() > MAX_CHECK_PATH_LEN
                || !path.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(format!(
                    "path {path:?} must start with /, be at most {MAX_CHECK_PATH_LEN} bytes and hold only printable ASCII (no spaces)"
                ));
            }
        }
        if !(10..=3_600_000).contains(&timing.interval_ms) {
            return Err(format!(
                "interval_ms {} is outside 10-3600000",
                timing.interval_ms
            ));
        }
        if timing.timeout_ms == 0 || timing.timeout_ms > timing.interval_ms {
            return Err(format!(
                "timeout_ms {} must be between 1 and interval_ms ({})",
                timing.timeout_ms, timing.interval_ms
            ));
        }
        for (name, v) in [("rise", timing.rise), ("fall", timing.fall)] {
            if !(1..=100).contains(&v) {
                return Err(format!("{name} {v} is outside 1-100"));
            }
        }
        Ok(())
    }
}

impl Vip {
    /// The backend's destination port: its own, else the VIP's.
    pub fn backend_port(&self, b: &Backend) -> u16 {
        b.port.unwrap_or(self.port)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let vip = || self.name.clone();
        check_name(&self.name)?;
        check_address("VIP", &self.address)?;
        maglev::validate_size(self.table_size).map_err(|problem| ConfigError::Table {
            vip: vip(),
            problem,
        })?;
        self.health_check
            .validate()
            .map_err(|why| ConfigError::BadHealthCheck { vip: vip(), why })?;
        let mut seen = FastSet::with_capacity_and_hasher(self.backends.len(), Default::default());
        for b in &self.backends {
            check_address("backend", &b.address)?;
            if !seen.insert(b.address) {
                return Err(ConfigError::DuplicateBackend {
                    vip: vip(),
                    backend: b.address,
                });
            }
            if b.weight > MAX_WEIGHT {
                return Err(ConfigError::BadWeight {
                    vip: vip(),
                    backend: b.address,
                    weight: b.weight,
                });
            }
            if b.port == Some(0) {
                return Err(ConfigError::BadBackendPort {
                    vip: vip(),
                    backend: b.address,
                });
            }
            if self.mode == Mode::Nat && self.port == 0 && b.port.is_some_and(|p| p != 0) {
                return Err(ConfigError::NatPortWithoutVipPort {
                    vip: vip(),
                    backend: b.address,
                });
            }
            let carried = match self.mode {
                // L2 DSR leaves the IP header alone, and NAT translates
                // addresses, not families: one family end to end.
                Mode::Dsr | Mode::Nat => self.address.is_ipv4() == b.address.is_ipv4(),
                // IPv4-in-IPv4, IPv6-in-IPv6, IPv4-in-IPv6; not IPv6-in-IPv4.
                _ => !(self.address.is_ipv6() && b.address.is_ipv4()),
            };
            if !carried {
                return Err(ConfigError::MixedFamily {
                    vip: vip(),
                    mode: self.mode,
                    backend: b.address,
                    vip_family: family_name(&self.address),
                    backend_family: family_name(&b.address),
                });
            }
            // A check without its own port probes the backend's port: on
            // an every-port VIP, port 0, which no probe reaches.
            if self.health_check.timing().is_some()
                && self.health_check.port().is_none()
                && self.backend_port(b) == 0
            {
                return Err(ConfigError::BadHealthCheck {
                    vip: vip(),
                    why: format!(
                        "the VIP takes every port and backend {} names none: the check needs a port",
                        b.address
                    ),
                });
            }
        }
        self.check_shares()
    }
}

impl Vip {
    /// Every backend of non-zero weight holds a slot of every table built
    /// of this VIP: all its backends, or the healthy ones. Its quota
    /// (`maglev::quotas`) is at least its whole share of the table,
    /// `maglev::floor_share`, which only grows as other backends go down;
    /// so a share of one slot or more over all the backends is enough.
    /// Less is refused, though the remainder may give it one slot with
    /// every backend up: it loses that slot when another is down (weights
    /// 3, 100, 5 in 31 slots: 1, 29, 1; without the 5: 0, 31). A backend
    /// with none takes no traffic, silently, and a restarted daemon would
    /// read its absence from the table as down (`control::adopt_health`).
    fn check_shares(&self) -> Result<(), ConfigError> {
        let weighted = || self.backends.iter().filter(|b| b.weight > 0);
        let count = weighted().count();
        if count > self.table_size as usize {
            return Err(ConfigError::Table {
                vip: self.name.clone(),
                problem: maglev::MaglevError::TooManyBackends {
                    backends: count,
                    size: self.table_size,
                },
            });
        }
        let total: u64 = weighted().map(|b| u64::from(b.weight)).sum();
        // The lightest backend has the smallest share (the first of them,
        // in the document's order, is named).
        let Some(least) = weighted().min_by_key(|b| b.weight) else {
            return Ok(());
        };
        if maglev::floor_share(least.weight, total, self.table_size) >= 1 {
            return Ok(());
        }
        // table_size x least >= total: every backend gets a slot.
        let needed = total.div_ceil(u64::from(least.weight));
        let prime =
            (needed..=u64::from(maglev::MAX_TABLE_SIZE)).find(|&m| maglev::is_prime(m as u32));
        let remedy = match prime {
            Some(m) => format!("use a table_size of at least {m} or raise the lighter weights"),
            None => "no table_size is large enough: raise the lighter weights".to_string(),
        };
        Err(ConfigError::NoSlot {
            vip: self.name.clone(),
            backend: least.address,
            weight: least.weight,
            total_weight: total,
            table_size: self.table_size,
            remedy,
        })
    }
}

impl Config {
    /// Checks everything that can be checked without touching the system,
    /// table sizes against backend counts and weights included.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.gue_port == 0 {
            return Err(ConfigError::BadGuePort);
        }
        if self.vips.len() > abi::MAX_VIPS as usize {
            return Err(ConfigError::TooManyVips {
                count: self.vips.len(),
                max: abi::MAX_VIPS as usize,
            });
        }
        let backends: usize = self.vips.iter().map(|v| v.backends.len()).sum();
        if backends > MAX_TOTAL_BACKENDS {
            return Err(ConfigError::TooManyBackends {
                count: backends,
                max: MAX_TOTAL_BACKENDS,
            });
        }
        let slots: u64 = self.vips.iter().map(|v| u64::from(v.table_size)).sum();
        if slots > MAX_TOTAL_TABLE_SLOTS {
            return Err(ConfigError::TooManyTableSlots {
                slots,
                max: MAX_TOTAL_TABLE_SLOTS,
            });
        }
        let mut names = FastSet::default();
        let mut keys: FastMap<(IpAddr, u16, Protocol), &str> = FastMap::default();
        // Per (backend, protocol): the nat VIPs it serves, by backend port.
        let mut nat_backends: FastMap<(IpAddr, Protocol), Vec<(u16, &str)>> = FastMap::default();
        for v in &self.vips {
            v.validate()?;
            if !names.insert(v.name.as_str()) {
                return Err(ConfigError::DuplicateName(v.name.clone()));
            }
            if v.mode == Mode::Nat {
                for b in &v.backends {
                    let port = v.backend_port(b);
                    let served = nat_backends.entry((b.address, v.protocol)).or_default();
                    // A reply is matched on its source (backend, port),
                    // then (backend, every port): one port, or every port
                    // (0) against any other, serves one nat VIP.
                    if let Some(&(other, first)) = served
                        .iter()
                        .find(|&&(p, _)| p == port || p == 0 || port == 0)
                    {
                        return Err(ConfigError::NatConflict {
                            first: first.to_string(),
                            second: v.name.clone(),
                            backend: b.address,
                            port: port.max(other),
                            protocol: v.protocol,
                        });
                    }
                    served.push((port, &v.name));
                }
            }
            if let Some(first) = keys.insert((v.address, v.port, v.protocol), &v.name) {
                return Err(ConfigError::DuplicateVip {
                    first: first.to_string(),
                    second: v.name.clone(),
                    address: v.address,
                    port: v.port,
                    protocol: v.protocol,
                });
            }
        }
        Ok(())
    }

    pub fn vip(&self, name: &str) -> Option<&Vip> {
        self.vips.iter().find(|v| v.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Config {
        serde_json::from_str(json).expect("parses")
    }

    fn web() -> Config {
        parse(
            r#"{"hash_seed": 7, "vips": [{"name": "web", "address": "10.100.0.1",
                "port": 80, "protocol": "tcp",
                "backends": [{"address": "10.0.1.1"}, {"address": "10.0.1.2", "weight": 3}]}]}"#,
        )
    }

    #[test]
    fn defaults_fill_every_optional_field() {
        let c = web();
        c.validate().unwrap();
        let v = &c.vips[0];
        assert_eq!(v.mode, Mode::Dsr);
        assert!(!v.sticky);
        assert_eq!(v.table_size, 65_537);
        assert_eq!(v.event_sample_rate, 0);
        assert_eq!(v.health_check, HealthCheck::None);
        assert_eq!(v.backends[0].weight, 1);
        assert_eq!(v.backend_port(&v.backends[0]), 80);
    }

    #[test]
    fn the_issue_example_parses_and_round_trips() {
        let json = r#"{"hash_seed": 0, "vips": [ {
           "name": "web", "address": "10.100.0.1", "port": 80, "protocol": "tcp",
           "mode": "dsr", "sticky": false, "table_size": 65537, "event_sample_rate": 0,
           "health_check": {"kind": "http", "port": 80, "path": "/healthz",
                            "interval_ms": 1000, "timeout_ms": 500, "rise": 2, "fall": 3},
           "backends": [ {"address": "10.0.1.1", "weight": 1} ] } ] }"#;
        let c = parse(json);
        c.validate().unwrap();
        let again: Config = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        let complete = parse(
            r#"{"vips": [{"name": "a", "address": "10.0.0.1", "port": 1, "protocol": "udp",
                "health_check": {"kind": "none"}}]}"#,
        );
        complete.validate().unwrap();
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_refused_by_the_parser() {
        for bad in [
            r#"{"vips": [], "extra": 1}"#,
            r#"{"vips": [{"name": "a", "address": "10.0.0.1", "port": 80, "protocol": "tcp", "colour": 1}]}"#,
            r#"{"vips": [{"name": "a", "address": "10.0.0.1", "port": "80", "protocol": "tcp"}]}"#,
            r#"{"vips": [{"name": "a", "address": "10.0.0.1", "port": 70000, "protocol": "tcp"}]}"#,
            r#"{"vips": [{"name": "a", "address": "10.0.0.300", "port": 80, "protocol": "tcp"}]}"#,
            r#"{"vips": [{"name": "a", "address": "10.0.0.1", "port": 80, "protocol": "sctp"}]}"#,
            r#"{"vips": [{"name": "a", "address": "10.0.0.1", "port": 80, "protocol": "tcp", "mode": "tunnel"}]}"#,
            r#"{"vips": [{"address": "10.0.0.1", "port": 80, "protocol": "tcp"}]}"#,
            r#"{"vips": [{"name": "a", "address": "10.0.0.1", "port": 80, "protocol": "tcp",
                 "health_check": {"kind": "icmp"}}]}"#,
        ] {
            assert!(
                serde_json::from_str::<Config>(bad).is_err(),
                "accepted: {bad}"
            );
        }
    }

    fn invalid(mutate: impl FnOnce(&mut Config)) -> ConfigError {
        let mut c = web();
        mutate(&mut c);
        c.validate().expect_err("should be refused")
    }

    #[test]
    fn each_impossible_config_has_its_error() {
        assert!(matches!(
            invalid(|c| c.vips[0].name = "".into()),
            ConfigError::BadName(_)
        ));
        assert!(matches!(
            invalid(|c| c.vips[0].name = "a/b".into()),
            ConfigError::BadName(_)
        ));
        assert!(matches!(
            invalid(|c| c.vips[0].name = "-a".into()),
            ConfigError::BadName(_)
        ));
        assert!(matches!(
            invalid(|c| c.vips[0].address = "0.0.0.0".parse().unwrap()),
            ConfigError::BadAddress { .. }
        ));
        assert!(matches!(
            invalid(|c| c.vips[0].backends[0].address = "ff02::1".parse().unwrap()),
            ConfigError::BadAddress { .. }
        ));
        assert!(matches!(
            invalid(|c| c.vips[0].backends[0].address = "fe80::1".parse().unwrap()),
            ConfigError::BadAddress { why, .. } if why.contains("link-local")
        ));
        for (vip, backend) in [
            ("127.0.0.1", "10.0.1.1"),
            ("10.100.0.1", "127.0.0.1"),
            ("10.100.0.1", "127.255.0.9"),
            ("::1", "2001:db8::1"),
            ("2001:db8::100", "::1"),
            ("::ffff:10.100.0.1", "2001:db8::1"),
            ("2001:db8::100", "::ffff:10.0.1.1"),
        ] {
            assert!(
                matches!(
                    invalid(|c| {
                        c.vips[0].address = vip.parse().unwrap();
                        c.vips[0].backends[0].address = backend.parse().unwrap();
                        c.vips[0].backends[1].address = if vip.contains(':') {
                            "2001:db8::2".parse().unwrap()
                        } else {
                            "10.0.1.2".parse().unwrap()
                        };
                    }),
                    ConfigError::BadAddress { why, .. } if why.contains("loopback") || why.contains("IPv4-mapped")
                ),
                "{vip} to {backend}"
            );
        }
        assert!(matches!(
            invalid(|c| c.vips[0].backends[1].address = c.vips[0].backends[0].address),
            ConfigError::DuplicateBackend { .. }
        ));
        assert!(matches!(
            invalid(|c| c.vips[0].backends[0].address = "2001:db8::1".parse().unwrap()),
            ConfigError::MixedFamily { .. }
        ));
        assert!(matches!(
            invalid(|c| c.vips[0].table_size = 65_536),
            ConfigError::Table { .. }
        ));
        assert!(matches!(
            invalid(|c| c.vips[0].table_size = 2_000_003),
            ConfigError::Table { .. }
        ));
        assert!(matches!(
            invalid(|c| c.vips[0].backends[0].weight = MAX_WEIGHT + 1),
            ConfigError::BadWeight { .. }
        ));
        assert!(matches!(
            invalid(|c| c.vips[0].backends[0].port = Some(0)),
            ConfigError::BadBackendPort { .. }
        ));
        assert!(matches!(
            invalid(|c| c.gue_port = 0),
            ConfigError::BadGuePort
        ));
        assert!(matches!(
            invalid(|c| {
                let mut second = c.vips[0].clone();
                second.name = "web2".into();
                c.vips.push(second);
            }),
            ConfigError::DuplicateVip { .. }
        ));
        assert!(matches!(
            invalid(|c| {
                let mut second = c.vips[0].clone();
                second.port = 443;
                c.vips.push(second);
            }),
            ConfigError::DuplicateName(_)
        ));
        assert!(matches!(
            invalid(|c| {
                let v = c.vips[0].clone();
                c.vips = (0..=abi::MAX_VIPS)
                    .map(|i| Vip {
                        name: format!("v{i}"),
                        port: i as u16,
                        ..v.clone()
                    })
                    .collect();
            }),
            ConfigError::TooManyVips { .. }
        ));
        assert!(matches!(
            invalid(|c| {
                c.vips[0].backends = (0..=MAX_TOTAL_BACKENDS as u32)
                    .map(|i| Backend {
                        address: IpAddr::V4((0x0a00_0000 + i).into()),
                        port: None,
                        weight: 1,
                    })
                    .collect();
            }),
            ConfigError::TooManyBackends { .. }
        ));
        assert!(matches!(
            web_times(200, maglev::MAX_TABLE_SIZE).validate(),
            Err(ConfigError::TooManyTableSlots { .. })
        ));
        // Every VIP at the default size fits.
        let mut full = web();
        let v = full.vips[0].clone();
        full.vips = (0..abi::MAX_VIPS)
            .map(|i| Vip {
                name: format!("v{i}"),
                port: i as u16 + 1,
                ..v.clone()
            })
            .collect();
        full.validate().unwrap();
    }

    /// `n` copies of web's VIP (ports 1..=n), tables of `table_size`.
    fn web_times(n: u16, table_size: u32) -> Config {
        let mut c = web();
        let v = c.vips[0].clone();
        c.vips = (0..n)
            .map(|i| Vip {
                name: format!("v{i}"),
                port: i + 1,
                table_size,
                ..v.clone()
            })
            .collect();
        c
    }

    /// The slot budget counts the kernel's 8 bytes a slot: ~512 MiB of
    /// tables at most, 64 VIPs at the largest size (it once counted 4
    /// bytes, allowed 2^27 slots: 1 GiB of kernel tables, 128 such VIPs).
    #[test]
    fn the_table_slot_budget_is_512_mib_of_kernel_tables() {
        let at_largest = |n: u16| web_times(n, maglev::MAX_TABLE_SIZE).validate();
        at_largest(64).unwrap();
        let e = at_largest(65).expect_err("65 of the largest tables are over 512 MiB");
        assert!(matches!(e, ConfigError::TooManyTableSlots { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("519 MiB of kernel maps at 8 bytes a slot"),
            "{text}"
        );
        assert!(text.contains("(512 MiB)"), "{text}");
        const { assert!(MAX_TOTAL_TABLE_SLOTS * TABLE_SLOT_BYTES <= (512 << 20) + (1 << 20)) };
    }

    fn with_weights(weights: &[u32], table_size: u32) -> Result<(), ConfigError> {
        let mut c = web();
        c.vips[0].table_size = table_size;
        c.vips[0].backends = weights
            .iter()
            .zip(0u32..)
            .map(|(&weight, i)| Backend {
                address: IpAddr::V4((0x0a00_0100 + i).into()),
                port: None,
                weight,
            })
            .collect();
        c.validate()
    }

    /// A backend of non-zero weight that `maglev::quotas` would leave
    /// without a slot (once silently built) is refused, named, with a
    /// table size that fits; every accepted VIP gives each such backend
    /// a slot whichever of the others are down.
    #[test]
    fn every_weighted_backend_holds_a_slot() {
        // The builder's quotas leave the lightest out with every backend
        // up; [3, 100, 5] only once the 5 is down.
        assert_eq!(maglev::quotas(&[100, 100, 1], 7), [4, 3, 0]);
        assert!(maglev::quotas(&[65_535, 65_535, 1], 65_537).contains(&0));
        assert_eq!(maglev::quotas(&[3, 100, 5], 31), [1, 29, 1]);
        assert_eq!(maglev::quotas(&[3, 100], 31), [0, 31]);
        for (weights, size, lightest, fits) in [
            (&[100, 100, 1][..], 7, 2u32, "211"),
            (&[65_535, 65_535, 1][..], 65_537, 2, "131071"),
            (&[3, 100, 5][..], 31, 0, "37"),
        ] {
            match with_weights(weights, size) {
                Err(e @ ConfigError::NoSlot { .. }) => {
                    let ConfigError::NoSlot { backend, .. } = &e else {
                        unreachable!()
                    };
                    assert_eq!(*backend, IpAddr::V4((0x0a00_0100 + lightest).into()));
                    let text = e.to_string();
                    assert!(
                        text.contains(&format!("table_size of at least {fits} ")),
                        "{text}"
                    );
                }
                other => panic!("{weights:?} in {size}: {other:?}"),
            }
        }
        // Drained backends hold no slot and need none.
        with_weights(&[100, 100, 0], 7).unwrap();
        with_weights(&[0, 0], 7).unwrap();
        // Weights no table can hold.
        let mut heavy = vec![65_535; 20];
        heavy.push(1);
        let e = with_weights(&heavy, maglev::MAX_TABLE_SIZE).unwrap_err();
        assert!(
            e.to_string().contains("no table_size is large enough"),
            "{e}"
        );
        // More backends than slots.
        assert!(matches!(
            with_weights(&[1; 8], 7),
            Err(ConfigError::Table { .. })
        ));
        // Whatever is accepted, the builder's quotas give every backend a
        // slot, with all up and with any of them down.
        let choices = [1, 2, 3, 5, 100, 65_535];
        let mut accepted = 0;
        for size in [7, 13, 31, 251] {
            for code in 0..choices.len().pow(4) {
                let weights: Vec<u32> = (0..4)
                    .map(|k| choices[code / choices.len().pow(k) % choices.len()])
                    .collect();
                if with_weights(&weights, size).is_err() {
                    continue;
                }
                accepted += 1;
                for mask in 1u32..16 {
                    let up: Vec<u32> = (0..4)
                        .filter(|&k| mask & (1 << k) != 0)
                        .map(|k| weights[k as usize])
                        .collect();
                    assert!(
                        !maglev::quotas(&up, size).contains(&0),
                        "{weights:?} in {size}, up {up:?}"
                    );
                }
            }
        }
        assert!(accepted > 1000, "{accepted}");
    }

    #[test]
    fn health_check_limits() {
        let bad = |hc: &str| {
            let mut c = web();
            c.vips[0].health_check = serde_json::from_str(hc).unwrap();
            matches!(c.validate(), Err(ConfigError::BadHealthCheck { .. }))
        };
        assert!(bad(r#"{"kind": "tcp", "timeout_ms": 2000}"#));
        assert!(bad(r#"{"kind": "tcp", "interval_ms": 5}"#));
        assert!(bad(r#"{"kind": "tcp", "rise": 0}"#));
        assert!(bad(r#"{"kind": "tcp", "port": 0}"#));
        assert!(bad(r#"{"kind": "http", "path": "healthz"}"#));
        assert!(bad(r#"{"kind": "http", "expect_status": 99}"#));
        assert!(bad(r#"{"kind": "http", "path": "/hé"}"#));
        let long = format!(
            r#"{{"kind": "http", "path": "/{}"}}"#,
            "a".repeat(MAX_CHECK_PATH_LEN)
        );
        assert!(bad(&long));
        // An every-port VIP: the check needs a port of its own, unless
        // every backend names one.
        let every_port = |hc: &str, backend_port: Option<u16>| {
            let mut c = web();
            c.vips[0].port = 0;
            c.vips[0]
                .backends
                .iter_mut()
                .for_each(|b| b.port = backend_port);
            c.vips[0].health_check = serde_json::from_str(hc).unwrap();
            c.validate()
        };
        assert!(matches!(
            every_port(r#"{"kind": "tcp"}"#, None),
            Err(ConfigError::BadHealthCheck { .. })
        ));
        every_port(r#"{"kind": "tcp", "port": 22}"#, None).unwrap();
        every_port(r#"{"kind": "tcp"}"#, Some(8080)).unwrap();
        every_port(r#"{"kind": "none"}"#, None).unwrap();
        assert!(!bad(
            r#"{"kind": "http", "path": "/healthz", "expect_status": 204}"#
        ));
        let unknown = r#"{"kind": "tcp", "interval": 5}"#;
        assert!(serde_json::from_str::<HealthCheck>(unknown).is_err());
    }

    /// `kind: none` takes no other field (they were once ignored: a check
    /// half-written was taken as none), and still reads and writes as
    /// `{"kind": "none"}`, alone or in a VIP, as saved configs hold it.
    #[test]
    fn a_none_health_check_refuses_other_fields() {
        for bad in [
            r#"{"kind": "none", "port": 80}"#,
            r#"{"kind": "none", "interval_ms": 1000, "rise": 2}"#,
        ] {
            let e = serde_json::from_str::<HealthCheck>(bad).expect_err(bad);
            assert!(e.to_string().contains("unknown field"), "{e}");
        }
        let in_vip = r#"{"vips": [{"name": "a", "address": "10.0.0.1", "port": 80,
            "protocol": "tcp", "health_check": {"kind": "none", "path": "/"}}]}"#;
        assert!(serde_json::from_str::<Config>(in_vip).is_err());
        let none: HealthCheck = serde_json::from_str(r#"{"kind": "none"}"#).unwrap();
        assert_eq!(none, HealthCheck::None);
        assert_eq!(serde_json::to_string(&none).unwrap(), r#"{"kind":"none"}"#);
        let tcp: HealthCheck = serde_json::from_str(r#"{"kind": "tcp", "port": 22}"#).unwrap();
        assert_eq!(tcp.port(), Some(22));
        let again: HealthCheck =
            serde_json::from_str(&serde_json::to_string(&tcp).unwrap()).unwrap();
        assert_eq!(again, tcp);
        assert!(serde_json::from_str::<HealthCheck>(r#"{"port": 22}"#).is_err());
        let saved = parse(
            r#"{"vips": [{"name": "a", "address": "10.0.0.1", "port": 80,
            "protocol": "tcp", "health_check": {"kind": "none"}}]}"#,
        );
        assert_eq!(saved.vips[0].health_check, HealthCheck::None);
    }

    #[test]
    fn nat_rules() {
        let mut c = web();
        c.vips[0].mode = Mode::Nat;
        c.vips[0].backends[0].port = Some(8080);
        c.validate().unwrap();
        // No family translation.
        let mut v6 = c.clone();
        v6.vips[0].backends[1].address = "2001:db8::1".parse().unwrap();
        assert!(matches!(
            v6.validate(),
            Err(ConfigError::MixedFamily { .. })
        ));
        // Port mapping needs a VIP port.
        let mut all = c.clone();
        all.vips[0].port = 0;
        assert!(matches!(
            all.validate(),
            Err(ConfigError::NatPortWithoutVipPort { .. })
        ));
        // One (backend, port, protocol) serves one nat VIP.
        let mut second = c.vips[0].clone();
        second.name = "web2".into();
        second.address = "10.100.0.2".parse().unwrap();
        c.vips.push(second.clone());
        assert!(matches!(c.validate(), Err(ConfigError::NatConflict { .. })));
        // Another port of the same backend is fine; so is a non-nat VIP.
        c.vips[1]
            .backends
            .iter_mut()
            .for_each(|b| b.port = Some(9000));
        c.validate().unwrap();
        c.vips[1] = second;
        c.vips[1].mode = Mode::Dsr;
        c.vips[1].backends.iter_mut().for_each(|b| b.port = None);
        c.validate().unwrap();
        // An every-port nat VIP shares its backends with no other nat VIP
        // (a reply from port 8080 would match both), in either order.
        let mut every = c.vips[1].clone();
        every.name = "every".into();
        every.address = "10.100.0.3".parse().unwrap();
        every.mode = Mode::Nat;
        every.port = 0;
        let mut after = c.clone();
        after.vips.push(every.clone());
        assert!(matches!(
            after.validate(),
            Err(ConfigError::NatConflict { port: 8080, .. })
        ));
        let mut before = c.clone();
        before.vips.insert(0, every.clone());
        assert!(matches!(
            before.validate(),
            Err(ConfigError::NatConflict { port: 8080, .. })
        ));
        // Another protocol is another key.
        every.protocol = Protocol::Udp;
        before.vips[0] = every;
        before.validate().unwrap();
    }

    #[test]
    fn ipip_carries_v4_in_v6_but_not_v6_in_v4() {
        let mut c = web();
        c.vips[0].mode = Mode::Ipip;
        c.vips[0].backends[0].address = "2001:db8::1".parse().unwrap();
        c.validate().unwrap();
        c.vips[0].address = "2001:db8:ff::1".parse().unwrap();
        c.vips[0].backends[1].address = "10.0.0.9".parse().unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::MixedFamily { .. })));
    }
}
