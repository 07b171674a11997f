#![deny(unsafe_code)]
pub mod frame;
pub mod ring;
