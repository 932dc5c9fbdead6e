//! A validated configuration with its Maglev tables built: what the data
//! plane holds and what the reference model reads. A pure function of the
//! configuration, so every node derives the same plan.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::abi::{Mode, VIP_F_STICKY};
use crate::config::{Config, ConfigError, Protocol, Vip};
use crate::maglev::{self, MaglevTable, WeightedBackend};
use crate::quick_filter::QuickFilter;

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
    /// Backends of non-zero weight left out because their health check
    /// says they are down.
    pub down: Vec<IpAddr>,
    /// Every backend of non-zero weight is down, so all are in the table:
    /// better a chance than certain loss.
    pub failed_open: bool,
}

/// Backends whose health checks say they are down, by (VIP name, address).
pub type Down = BTreeSet<(String, IpAddr)>;

impl PlannedVip {
    fn down_set(&self) -> Down {
        self.down
            .iter()
            .map(|a| (self.vip.name.clone(), *a))
            .collect()
    }

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

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub hash_seed: u32,
    pub gue_port: u16,
    pub vips: Vec<PlannedVip>,
    /// Time spent building tables for this plan (reused ones cost nothing).
    pub build_time: Duration,
    /// Tables built (not reused) for this plan.
    pub tables_built: usize,
    /// The nat return path: (backend, backend port, protocol) -> index of
    /// its VIP in `vips`. Port 0: the VIP takes every port.
    pub nat_returns: std::collections::HashMap<(IpAddr, u16, Protocol), usize>,
    /// The program's first test for these VIPs and nat backends.
    pub quick: QuickFilter,
}

/// What a table is a function of: size, (address, weight) pairs in address
/// order, and which of them are down.
type TableInputs = (u32, Vec<WeightedBackend>, Vec<IpAddr>);

fn table_inputs(v: &Vip, down: &Down) -> TableInputs {
    let mut weighted: Vec<WeightedBackend> = v
        .backends
        .iter()
        .map(|b| WeightedBackend {
            address: b.address,
            weight: b.weight,
        })
        .collect();
    weighted.sort_by_key(|b| b.address);
    // Only a checked VIP has down backends: the health of a check just
    // turned off may linger until the checks are restarted, and must not
    // keep a backend out of the table.
    let checked = v.health_check.timing().is_some();
    let down: Vec<IpAddr> = weighted
        .iter()
        .filter(|b| checked && b.weight > 0 && down.contains(&(v.name.clone(), b.address)))
        .map(|b| b.address)
        .collect();
    (v.table_size, weighted, down)
}

/// A built table and whether it failed open, or why it could not be built.
type Built = Result<(MaglevTable, bool), maglev::MaglevError>;

/// The table for `inputs`, and whether it failed open.
///
/// Health never reshuffles healthy backends' flows: the base table is built
/// from the configured weights; each slot of a down backend is then given
/// to the backend a table of the healthy ones alone names for that slot.
/// Healthy backends keep every slot they had, the down backend's slots
/// spread over them by weight, and when it comes back it gets exactly its
/// slots back.
fn build_table(inputs: &TableInputs, spread: bool) -> Built {
    let (size, weighted, down) = inputs;
    if down.is_empty() {
        return Ok((maglev::build(weighted, *size)?, false));
    }
    let healthy: Vec<WeightedBackend> = weighted
        .iter()
        .filter(|b| !down.contains(&b.address))
        .copied()
        .collect();
    if healthy.iter().all(|b| b.weight == 0) {
        return Ok((maglev::build(weighted, *size)?, true));
    }
    // Two tables, independent: on two CPUs when asked (`spread`: no other
    // build runs beside this one) and there are. A VIP with a backend down
    // builds both on every change of it (~1.4 ms each for 1000 backends on
    // a 2 GHz Zen 1).
    let (base, fallback) =
        if spread && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) {
            std::thread::scope(|scope| {
                let fallback = scope.spawn(|| maglev::build(&healthy, *size));
                let base = maglev::build(weighted, *size);
                (base, fallback.join().expect("a table build panicked"))
            })
        } else {
            (
                maglev::build(weighted, *size),
                maglev::build(&healthy, *size),
            )
        };
    let (base, fallback) = (base?, fallback?);
    let index: std::collections::HashMap<IpAddr, u32> = fallback
        .backends
        .iter()
        .enumerate()
        .map(|(i, a)| (*a, i as u32))
        .collect();
    // Base backend index -> its index among the healthy, once per backend
    // rather than a hash lookup per slot.
    let healthy_index: Vec<Option<u32>> = base
        .backends
        .iter()
        .map(|a| index.get(a).copied())
        .collect();
    let slots = base
        .slots
        .iter()
        .zip(&fallback.slots)
        .map(|(&b, &f)| healthy_index[b as usize].unwrap_or(f))
        .collect();
    Ok((
        MaglevTable {
            backends: fallback.backends,
            slots,
        },
        false,
    ))
}

/// Builds the tables for `inputs`, in order, on up to one thread per CPU:
/// tables are independent, and a configuration of 100 VIPs builds 100 of
/// them (~130 ms on one core of a 2 GHz Zen 1). One table is built on the
/// calling thread.
fn build_tables(inputs: &[&TableInputs]) -> Vec<Built> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(inputs.len());
    if threads <= 1 {
        return inputs.iter().map(|i| build_table(i, true)).collect();
    }
    // Each thread takes the next table not yet taken: sizes and backend
    // counts differ, so fixed shares would leave threads idle.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<Option<Built>> = (0..inputs.len()).map(|_| None).collect();
    let done: Vec<Vec<(usize, Built)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(input) = inputs.get(i) else {
                            return mine;
                        };
                        mine.push((i, build_table(input, false)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a table build panicked"))
            .collect()
    });
    for (i, r) in done.into_iter().flatten() {
        out[i] = Some(r);
    }
    out.into_iter()
        .map(|r| r.expect("every table built"))
        .collect()
}

impl Plan {
    /// Validates `config` and builds every VIP's table, all backends up.
    pub fn new(config: &Config) -> Result<Plan, ConfigError> {
        Plan::default().update(config, &Down::new())
    }

    /// The plan for `config` with the backends in `down` out of their
    /// tables, reusing this plan's tables for VIPs whose table inputs (size,
    /// backends, weights, down set) are unchanged: a change to one VIP
    /// rebuilds one table.
    pub fn update(&self, config: &Config, down: &Down) -> Result<Plan, ConfigError> {
        config.validate()?;
        let started = Instant::now();
        let inputs: Vec<TableInputs> = config.vips.iter().map(|v| table_inputs(v, down)).collect();
        let reused: Vec<Option<(Arc<MaglevTable>, bool)>> = config
            .vips
            .iter()
            .zip(&inputs)
            .map(|(v, inputs)| {
                // Equal inputs need as many backends (and sorting a VIP's
                // 1000 backends to compare costs ~50 us).
                self.vips
                    .iter()
                    .find(|p| {
                        p.vip.name == v.name
                            && p.vip.backends.len() == v.backends.len()
                            && table_inputs(&p.vip, &p.down_set()) == *inputs
                    })
                    .map(|p| (p.table.clone(), p.failed_open))
            })
            .collect();
        let wanted: Vec<usize> = (0..inputs.len()).filter(|&i| reused[i].is_none()).collect();
        let mut built =
            build_tables(&wanted.iter().map(|&i| &inputs[i]).collect::<Vec<_>>()).into_iter();
        let mut vips = Vec::with_capacity(config.vips.len());
        for ((v, inputs), reused) in config.vips.iter().zip(inputs).zip(reused) {
            let (table, failed_open) = match reused {
                Some(t) => t,
                None => {
                    let (t, failed_open) = built
                        .next()
                        .expect("one build per table not reused")
                        .map_err(|problem| ConfigError::Table {
                            vip: v.name.clone(),
                            problem,
                        })?;
                    (Arc::new(t), failed_open)
                }
            };
            vips.push(PlannedVip {
                vip: v.clone(),
                table,
                down: inputs.2,
                failed_open,
            });
        }
        let built = wanted.len();
        let mut nat_returns = std::collections::HashMap::new();
        for (i, v) in config.vips.iter().enumerate() {
            if v.mode == crate::abi::Mode::Nat {
                for b in &v.backends {
                    nat_returns.insert((b.address, v.backend_port(b), v.protocol), i);
                }
            }
        }
        let quick = QuickFilter::new(
            config
                .vips
                .iter()
                .map(|v| (v.address, v.port, v.protocol.number())),
            nat_returns.keys().map(|k| k.0),
        );
        Ok(Plan {
            hash_seed: config.hash_seed,
            gue_port: config.gue_port,
            vips,
            build_time: started.elapsed(),
            tables_built: built,
            nat_returns,
            quick,
        })
    }

    /// The nat VIP whose backend sent a packet from (address, port,
    /// protocol): the exact port first, then an every-port VIP. Index into
    /// `vips`.
    pub fn find_nat_return(&self, address: IpAddr, port: u16, protocol: Protocol) -> Option<usize> {
        self.nat_returns
            .get(&(address, port, protocol))
            .or_else(|| self.nat_returns.get(&(address, 0, protocol)))
            .copied()
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
        let second = first.update(&c, &Down::new()).unwrap();
        assert_eq!(
            second.tables_built, 0,
            "sticky and sampling change no table"
        );
        assert!(Arc::ptr_eq(&first.vips[0].table, &second.vips[0].table));
        c.vips[0].backends[0].weight = 3;
        let third = second.update(&c, &Down::new()).unwrap();
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

    /// Tables built on several threads land with their own VIPs: each is
    /// the table of that VIP's backends, with reused tables among them.
    #[test]
    fn tables_built_together_belong_to_their_vips() {
        let vip = |i: u32, n: u32| {
            let size = [251, 7919, 65537][i as usize % 3];
            let backends: Vec<serde_json::Value> = (0..n)
                .map(|b| serde_json::json!({"address": format!("10.1.{i}.{b}"), "weight": b % 3 + 1}))
                .collect();
            serde_json::json!({"name": format!("v{i}"), "address": format!("10.0.0.{i}"),
                "port": 80, "protocol": "tcp", "table_size": size,
                "health_check": {"kind": "tcp"}, "backends": backends})
        };
        let config = |sizes: &[u32]| -> Config {
            let vips: Vec<_> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| vip(i as u32, n))
                .collect();
            serde_json::from_value(serde_json::json!({ "vips": vips })).unwrap()
        };
        let first = Plan::new(&config(&[3, 1, 40, 7, 2, 100, 5, 9, 1])).unwrap();
        // Every other VIP changes: five tables built, four reused.
        let c = config(&[4, 1, 41, 7, 3, 100, 6, 9, 2]);
        let second = first.update(&c, &Down::new()).unwrap();
        assert_eq!(second.tables_built, 5);
        for (v, planned) in c.vips.iter().zip(&second.vips) {
            let (_, weighted, _) = table_inputs(v, &Down::new());
            assert_eq!(
                *planned.table,
                maglev::build(&weighted, v.table_size).unwrap(),
                "{}",
                v.name
            );
        }

        // With backends down, each table is two builds merged: the same
        // whether the two run side by side or one after the other.
        let down: Down = [(0, 1), (2, 7), (3, 0), (5, 42)]
            .into_iter()
            .map(|(v, b)| (format!("v{v}"), format!("10.1.{v}.{b}").parse().unwrap()))
            .collect();
        let third = second.update(&c, &down).unwrap();
        assert_eq!(third.tables_built, 4);
        for (v, planned) in c.vips.iter().zip(&third.vips) {
            let inputs = table_inputs(v, &down);
            let (alone, _) = build_table(&inputs, false).unwrap();
            assert_eq!(*planned.table, alone, "{}", v.name);
            assert_eq!(build_table(&inputs, true).unwrap().0, alone, "{}", v.name);
        }
    }

    fn three() -> Config {
        serde_json::from_str(
            r#"{"vips": [{"name": "web", "address": "10.0.0.1", "port": 80, "protocol": "tcp", "table_size": 7919,
                "health_check": {"kind": "tcp"}, "backends": [{"address": "10.1.0.1"}, {"address": "10.1.0.2", "weight": 2},
                             {"address": "10.1.0.3"}, {"address": "10.1.0.4", "weight": 0}]}]}"#,
        )
        .unwrap()
    }

    fn down(list: &[&str]) -> Down {
        list.iter()
            .map(|a| ("web".to_string(), a.parse().unwrap()))
            .collect()
    }

    #[test]
    fn a_down_backend_moves_only_its_own_flows_and_comes_back_to_them() {
        let c = three();
        let up = Plan::new(&c).unwrap();
        let one_down = up.update(&c, &down(&["10.1.0.2"])).unwrap();
        let (a, b) = (&up.vips[0].table, &one_down.vips[0].table);
        let gone: IpAddr = "10.1.0.2".parse().unwrap();
        assert_eq!(one_down.vips[0].down, vec![gone]);
        assert!(!one_down.vips[0].failed_open);
        for s in 0..a.size() {
            let before = a.backend_at(s).unwrap();
            let after = b.backend_at(s).unwrap();
            assert_ne!(after, gone);
            if before != gone {
                assert_eq!(before, after, "slot {s} of a healthy backend moved");
            }
        }
        // The down backend's slots spread over the others by weight (1:1).
        let counts = b.slot_counts();
        let (x, y) = (f64::from(counts[0]), f64::from(counts[1]));
        assert!((x / y - 1.0).abs() < 0.05, "{counts:?}");
        // Back up: exactly the original table.
        let again = one_down.update(&c, &Down::new()).unwrap();
        assert_eq!(again.vips[0].table, up.vips[0].table);
    }

    #[test]
    fn all_down_fails_open_and_drained_backends_do_not_count() {
        let c = three();
        let all = down(&["10.1.0.1", "10.1.0.2", "10.1.0.3"]);
        let p = Plan::new(&c).unwrap().update(&c, &all).unwrap();
        assert!(p.vips[0].failed_open);
        assert_eq!(p.vips[0].table, Plan::new(&c).unwrap().vips[0].table);
        // Down but drained (weight 0) is not "down" for the table.
        let p = Plan::new(&c)
            .unwrap()
            .update(&c, &down(&["10.1.0.4"]))
            .unwrap();
        assert!(p.vips[0].down.is_empty());
        assert_eq!(p.tables_built, 0, "the same inputs: the table is reused");
    }

    #[test]
    fn a_vip_without_a_check_has_no_down_backends() {
        let mut c = three();
        let d = Plan::new(&c)
            .unwrap()
            .update(&c, &down(&["10.1.0.1"]))
            .unwrap();
        assert_eq!(d.vips[0].down.len(), 1);
        // The check turned off while the backend was down: the health
        // book may still say down until the checks restart.
        c.vips[0].health_check = crate::config::HealthCheck::None;
        let off = d.update(&c, &down(&["10.1.0.1"])).unwrap();
        assert!(off.vips[0].down.is_empty());
        assert_eq!(off.vips[0].table, Plan::new(&c).unwrap().vips[0].table);
    }

    #[test]
    fn health_changes_are_in_the_table_inputs() {
        let c = three();
        let p = Plan::new(&c).unwrap();
        let d = p.update(&c, &down(&["10.1.0.1"])).unwrap();
        assert_eq!(d.tables_built, 1);
        let same = d.update(&c, &down(&["10.1.0.1"])).unwrap();
        assert_eq!(same.tables_built, 0);
        assert!(Arc::ptr_eq(&d.vips[0].table, &same.vips[0].table));
    }
}
