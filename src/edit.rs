//! Changes to the desired state, as values: each REST mutation is one
//! `Change`, applied to a configuration to give the next one (or a reason
//! it cannot). Pure: the controller validates, applies to the data plane and
//! saves the result as one transaction.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use utoipa::ToSchema;

use crate::abi::Mode;
use crate::config::{Backend, Config, ConfigError, HealthCheck, Protocol, Vip};

/// Fields of a VIP that PATCH may change; absent fields keep their value.
/// The name is the VIP's identity and cannot change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VipPatch {
    #[schema(value_type = Option<String>, format = "ip")]
    pub address: Option<IpAddr>,
    pub port: Option<u16>,
    pub protocol: Option<Protocol>,
    pub mode: Option<Mode>,
    pub sticky: Option<bool>,
    pub table_size: Option<u32>,
    pub event_sample_rate: Option<u32>,
    pub health_check: Option<HealthCheck>,
    /// Replaces the whole backend list.
    pub backends: Option<Vec<Backend>>,
}

/// Fields of a backend that PATCH may change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendPatch {
    /// 0 drains the backend: out of the table, still configured.
    pub weight: Option<u32>,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    ReplaceConfig(Config),
    AddVip(Vip),
    PatchVip(String, VipPatch),
    DeleteVip(String),
    AddBackend(String, Backend),
    PatchBackend(String, IpAddr, BackendPatch),
    DeleteBackend(String, IpAddr),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum EditError {
    #[error("no VIP named {0:?}")]
    NoVip(String),
    #[error("VIP {vip:?} has no backend {backend}")]
    NoBackend { vip: String, backend: IpAddr },
    #[error("a VIP named {0:?} exists already")]
    VipExists(String),
    #[error("VIP {vip:?} has backend {backend} already")]
    BackendExists { vip: String, backend: IpAddr },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// The change itself is valid but clashes with another VIP already
    /// configured: its address, port and protocol, or a nat backend it
    /// serves. (Within one submitted document the same clash is `Invalid`.)
    #[error(transparent)]
    Conflict(ConfigError),
}

fn find_vip(c: &Config, name: &str) -> Result<usize, EditError> {
    c.vips
        .iter()
        .position(|v| v.name == name)
        .ok_or_else(|| EditError::NoVip(name.to_string()))
}

fn find_backend(c: &Config, name: &str, addr: &IpAddr) -> Result<(usize, usize), EditError> {
    let i = find_vip(c, name)?;
    let j = c.vips[i]
        .backends
        .iter()
        .position(|b| b.address == *addr)
        .ok_or_else(|| EditError::NoBackend {
            vip: name.to_string(),
            backend: *addr,
        })?;
    Ok((i, j))
}

impl Change {
    /// A short description for logs and events: "vip add web".
    pub fn describe(&self) -> String {
        match self {
            Change::ReplaceConfig(c) => format!("config replace ({} VIPs)", c.vips.len()),
            Change::AddVip(v) => format!("vip add {}", v.name),
            Change::PatchVip(n, _) => format!("vip patch {n}"),
            Change::DeleteVip(n) => format!("vip delete {n}"),
            Change::AddBackend(n, b) => format!("backend add {n} {}", b.address),
            Change::PatchBackend(n, a, _) => format!("backend patch {n} {a}"),
            Change::DeleteBackend(n, a) => format!("backend delete {n} {a}"),
        }
    }

    /// The configuration after this change, validated.
    pub fn apply_to(&self, current: &Config) -> Result<Config, EditError> {
        let mut next = current.clone();
        match self {
            Change::ReplaceConfig(c) => next = c.clone(),
            Change::AddVip(v) => {
                if current.vip(&v.name).is_some() {
                    return Err(EditError::VipExists(v.name.clone()));
                }
                next.vips.push(v.clone());
            }
            Change::PatchVip(name, p) => {
                let i = find_vip(&next, name)?;
                let v = &mut next.vips[i];
                macro_rules! set {
                    ($($f:ident),*) => { $(if let Some(x) = &p.$f { v.$f = x.clone(); })* };
                }
                set!(
                    address,
                    port,
                    protocol,
                    mode,
                    sticky,
                    table_size,
                    event_sample_rate,
                    health_check,
                    backends
                );
            }
            Change::DeleteVip(name) => {
                let i = find_vip(&next, name)?;
                next.vips.remove(i);
            }
            Change::AddBackend(name, b) => {
                let i = find_vip(&next, name)?;
                let v = &mut next.vips[i];
                if v.backends.iter().any(|x| x.address == b.address) {
                    return Err(EditError::BackendExists {
                        vip: name.clone(),
                        backend: b.address,
                    });
                }
                v.backends.push(b.clone());
            }
            Change::PatchBackend(name, addr, p) => {
                let (i, j) = find_backend(&next, name, addr)?;
                let b = &mut next.vips[i].backends[j];
                if let Some(w) = p.weight {
                    b.weight = w;
                }
                if let Some(port) = p.port {
                    b.port = Some(port);
                }
            }
            Change::DeleteBackend(name, addr) => {
                let (i, j) = find_backend(&next, name, addr)?;
                next.vips[i].backends.remove(j);
            }
        }
        next.validate().map_err(|e| match (self, e) {
            (
                Change::ReplaceConfig(_),
                e @ (ConfigError::DuplicateVip { .. } | ConfigError::NatConflict { .. }),
            ) => EditError::Invalid(e),
            (_, e @ (ConfigError::DuplicateVip { .. } | ConfigError::NatConflict { .. })) => {
                EditError::Conflict(e)
            }
            (_, e) => EditError::Invalid(e),
        })?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        serde_json::from_str(
            r#"{"vips": [{"name": "web", "address": "10.0.0.1", "port": 80, "protocol": "tcp",
                "backends": [{"address": "10.1.0.1"}, {"address": "10.1.0.2"}]}]}"#,
        )
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_change_does_what_it_says() {
        let c = base();
        let vip: Vip = serde_json::from_str(
            r#"{"name": "dns", "address": "10.0.0.2", "port": 53, "protocol": "udp"}"#,
        )
        .unwrap();
        let added = Change::AddVip(vip).apply_to(&c).unwrap();
        assert_eq!(added.vips.len(), 2);

        let patched = Change::PatchVip(
            "web".into(),
            VipPatch {
                sticky: Some(true),
                table_size: Some(7919),
                ..Default::default()
            },
        )
        .apply_to(&c)
        .unwrap();
        assert!(patched.vips[0].sticky);
        assert_eq!(patched.vips[0].table_size, 7919);
        assert_eq!(patched.vips[0].backends, c.vips[0].backends);

        let b = Change::AddBackend(
            "web".into(),
            Backend {
                address: ip("10.1.0.3"),
                port: None,
                weight: 2,
            },
        )
        .apply_to(&c)
        .unwrap();
        assert_eq!(b.vips[0].backends.len(), 3);

        let w = Change::PatchBackend(
            "web".into(),
            ip("10.1.0.1"),
            BackendPatch {
                weight: Some(0),
                port: None,
            },
        )
        .apply_to(&c)
        .unwrap();
        assert_eq!(w.vips[0].backends[0].weight, 0);

        let d = Change::DeleteBackend("web".into(), ip("10.1.0.2"))
            .apply_to(&c)
            .unwrap();
        assert_eq!(d.vips[0].backends.len(), 1);
        assert!(Change::DeleteVip("web".into())
            .apply_to(&c)
            .unwrap()
            .vips
            .is_empty());
        assert_eq!(
            Change::ReplaceConfig(Config::default())
                .apply_to(&c)
                .unwrap(),
            Config::default()
        );
    }

    #[test]
    fn impossible_changes_say_why() {
        let c = base();
        let web = c.vips[0].clone();
        assert_eq!(
            Change::AddVip(web).apply_to(&c),
            Err(EditError::VipExists("web".into()))
        );
        assert_eq!(
            Change::DeleteVip("nope".into()).apply_to(&c),
            Err(EditError::NoVip("nope".into()))
        );
        assert!(matches!(
            Change::DeleteBackend("web".into(), ip("10.9.9.9")).apply_to(&c),
            Err(EditError::NoBackend { .. })
        ));
        assert!(matches!(
            Change::AddBackend("web".into(), c.vips[0].backends[0].clone()).apply_to(&c),
            Err(EditError::BackendExists { .. })
        ));
        assert!(matches!(
            Change::PatchVip(
                "web".into(),
                VipPatch {
                    table_size: Some(100),
                    ..Default::default()
                }
            )
            .apply_to(&c),
            Err(EditError::Invalid(ConfigError::Table { .. }))
        ));
        assert!(matches!(
            Change::PatchBackend(
                "web".into(),
                ip("10.1.0.1"),
                BackendPatch {
                    weight: Some(70_000),
                    port: None
                }
            )
            .apply_to(&c),
            Err(EditError::Invalid(ConfigError::BadWeight { .. }))
        ));
        // The name is not a patchable field.
        assert!(serde_json::from_str::<VipPatch>(r#"{"name": "other"}"#).is_err());
    }
}
