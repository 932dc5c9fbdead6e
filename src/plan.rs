//! A validated configuration with its Maglev tables built: what the data
//! plane holds and what the reference model reads. A pure function of the
//! configuration, so every node derives the same plan.

use std::net::IpAddr;

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
    pub table: MaglevTable,
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
}

impl Plan {
    /// Validates `config` and builds every VIP's table.
    pub fn new(config: &Config) -> Result<Plan, ConfigError> {
        config.validate()?;
        let vips = config
            .vips
            .iter()
            .map(|v| {
                let weighted: Vec<WeightedBackend> = v
                    .backends
                    .iter()
                    .map(|b| WeightedBackend {
                        address: b.address,
                        weight: b.weight,
                    })
                    .collect();
                let table = maglev::build(&weighted, v.table_size).map_err(|problem| {
                    ConfigError::Table {
                        vip: v.name.clone(),
                        problem,
                    }
                })?;
                Ok(PlannedVip {
                    vip: v.clone(),
                    table,
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Plan {
            hash_seed: config.hash_seed,
            vips,
        })
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
