#![deny(unsafe_code)]
pub mod cpumap;
pub mod filter;
pub mod frame;
pub mod ids;
pub mod metrics;
pub mod port;
pub mod ring;
pub mod wire;
