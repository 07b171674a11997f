#![deny(unsafe_code)]
pub mod filter;
pub mod frame;
pub mod ids;
pub mod ring;
pub mod wire;
