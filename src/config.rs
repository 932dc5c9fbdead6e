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
/// Table slots over all VIPs: 512 MiB of tables in the kernel (and as
/// much again in the daemon's plan). Every VIP at the default size fits
/// (1024 x 65537); a few at the largest size do too.
pub const MAX_TOTAL_TABLE_SLOTS: u64 = 1 << 27;
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
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
    #[error("tables of {slots} slots in all exceed the limit of {max} ({} MiB of maps): use smaller table_size values", (max * 4) >> 20)]
    TooManyTableSlots { slots: u64, max: u64 },
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
        Ok(())
    }
}

impl Config {
    /// Checks everything that can be checked without touching the system.
    /// Table sizes against backend counts are checked when tables are built.
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
            invalid(|c| {
                let v = c.vips[0].clone();
                c.vips = (0..200u16)
                    .map(|i| Vip {
                        name: format!("v{i}"),
                        port: i + 1,
                        table_size: maglev::MAX_TABLE_SIZE,
                        ..v.clone()
                    })
                    .collect();
            }),
            ConfigError::TooManyTableSlots { .. }
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
