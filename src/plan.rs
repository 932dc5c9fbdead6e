//! A validated configuration with its Maglev tables built: what the data
//! plane holds and what the reference model reads. A pure function of the
//! configuration, so every node derives the same plan.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::abi::{Mode, VIP_F_STICKY};
use crate::config::{Config, ConfigError, Protocol, Vip};
use crate::maglev::{self, MaglevTable, WeightedBackend};

/// What a VIP is matched on: destination address, port (0 = all) and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipKey {
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedVip {
    pub vip: Vip,
    /// Shared with the previous plan when this VIP's table inputs did not
    /// change (see `Plan::update`).
    pub table: Arc<MaglevTable>,
}

impl PlannedVip {
    pub fn key(&self) -> VipKey {
        VipKey {
            address: self.vip.address,
            port: self.vip.port,
            protocol: self.vip.protocol,
        }
    }

    pub fn mode(&self) -> Mode {
        self.vip.mode
    }

    /// `struct lethe_vip.flags`.
    pub fn flags(&self) -> u8 {
        if self.vip.sticky {
            VIP_F_STICKY
        } else {
            0
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub hash_seed: u32,
    pub vips: Vec<PlannedVip>,
    /// Time spent building tables for this plan (reused ones cost nothing).
    pub build_time: Duration,
    /// Tables built (not reused) for this plan.
    pub tables_built: usize,
}

/// What a table is a function of: size and (address, weight) pairs in order.
fn table_inputs(v: &Vip) -> (u32, Vec<WeightedBackend>) {
    let mut weighted: Vec<WeightedBackend> = v
        .backends
        .iter()
        .map(|b| WeightedBackend {
            address: b.address,
            weight: b.weight,
        })
        .collect();
    weighted.sort_by_key(|b| b.address);
    (v.table_size, weighted)
}

impl Plan {
    /// Validates `config` and builds every VIP's table.
    pub fn new(config: &Config) -> Result<Plan, ConfigError> {
        Plan::default().update(config)
    }

    /// The plan for `config`, reusing this plan's tables for VIPs whose
    /// table inputs (size, backends, weights) are unchanged: a change to one
    /// VIP rebuilds one table.
    pub fn update(&self, config: &Config) -> Result<Plan, ConfigError> {
        config.validate()?;
        let started = Instant::now();
        let mut built = 0;
        let vips = config
            .vips
            .iter()
            .map(|v| {
                let inputs = table_inputs(v);
                let reuse = self
                    .vips
                    .iter()
                    .find(|p| p.vip.name == v.name && table_inputs(&p.vip) == inputs)
                    .map(|p| p.table.clone());
                let table = match reuse {
                    Some(t) => t,
                    None => {
                        built += 1;
                        Arc::new(maglev::build(&inputs.1, v.table_size).map_err(|problem| {
                            ConfigError::Table {
                                vip: v.name.clone(),
                                problem,
                            }
                        })?)
                    }
                };
                Ok(PlannedVip {
                    vip: v.clone(),
                    table,
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Plan {
            hash_seed: config.hash_seed,
            vips,
            build_time: started.elapsed(),
            tables_built: built,
        })
    }

    pub fn vip_by_name(&self, name: &str) -> Option<&PlannedVip> {
        self.vips.iter().find(|v| v.vip.name == name)
    }

    /// The VIP a packet to (address, port, protocol) belongs to: the exact
    /// port first, then the all-ports VIP. Index into `vips`.
    pub fn find(&self, address: IpAddr, port: u16, protocol: Protocol) -> Option<usize> {
        let exact = |p: u16| {
            self.vips.iter().position(|v| {
                v.vip.address == address && v.vip.port == p && v.vip.protocol == protocol
            })
        };
        exact(port).or_else(|| exact(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_rebuilds_only_changed_tables() {
        let mut c: Config = serde_json::from_str(
            r#"{"vips": [
                {"name": "a", "address": "10.0.0.1", "port": 80, "protocol": "tcp",
                 "backends": [{"address": "10.1.0.1"}, {"address": "10.1.0.2"}]},
                {"name": "b", "address": "10.0.0.2", "port": 80, "protocol": "tcp",
                 "backends": [{"address": "10.1.0.1"}]}]}"#,
        )
        .unwrap();
        let first = Plan::new(&c).unwrap();
        assert_eq!(first.tables_built, 2);
        c.vips[0].sticky = true;
        c.vips[1].event_sample_rate = 100;
        let second = first.update(&c).unwrap();
        assert_eq!(
            second.tables_built, 0,
            "sticky and sampling change no table"
        );
        assert!(Arc::ptr_eq(&first.vips[0].table, &second.vips[0].table));
        c.vips[0].backends[0].weight = 3;
        let third = second.update(&c).unwrap();
        assert_eq!(third.tables_built, 1);
        assert!(!Arc::ptr_eq(&second.vips[0].table, &third.vips[0].table));
        assert!(Arc::ptr_eq(&second.vips[1].table, &third.vips[1].table));
        assert_eq!(
            third,
            Plan {
                build_time: third.build_time,
                tables_built: 1,
                ..Plan::new(&c).unwrap()
            }
        );
    }
}
