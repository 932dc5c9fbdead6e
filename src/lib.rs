//! Lethe: a stateless L4 load balancer on XDP.
//!
//! - [`flow_hash`] and [`maglev`]: the pure functions every node agrees on.
//! - [`model`]: the Rust reference model of the XDP program.
//! - [`dataplane`]: the only code that touches the BPF skeleton and maps.

pub mod flow_hash;
pub mod maglev;
