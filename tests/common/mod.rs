//! Shared by the privileged tests: a private network namespace per test,
//! the fixture topology inside it, and the model's view of that topology.
#![allow(dead_code)]

pub mod config;
pub mod http;
pub mod lab;
pub mod netns;
pub mod packets;
pub mod pins;
pub mod rawsock;
pub mod topology;
