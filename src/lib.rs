#![deny(unsafe_code)]
pub mod ring;
