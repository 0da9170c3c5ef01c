//! Shared by the integration tests.
#![allow(dead_code)]

pub mod databases;
pub mod process;
pub mod server;
