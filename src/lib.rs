//! Lethe: a stateless L4 load balancer on XDP.
//!
//! - [`flow_hash`] and [`maglev`]: the pure functions every node agrees on.
//! - [`config`] and [`plan`]: the desired state, validated, with its tables.
//! - [`model`]: the Rust reference model of the XDP program.
//! - [`dataplane`]: the only code that touches the BPF skeleton and maps.

pub mod abi;
pub mod api;
pub mod checksum;
pub mod cli;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod decap;
pub mod doctor;
pub mod edit;
pub mod events;
pub mod fast_hash;
pub mod flow_hash;
pub mod health;
pub mod maglev;
pub mod model;
pub mod neighbours;
pub mod plan;
pub mod quick_filter;
pub mod route_watch;
pub mod serve;
pub mod store;
