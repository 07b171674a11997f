//! bindgen output (see build.rs): DPDK's exported functions that cpumapd
//! calls, the types they need, and the shim's wrappers.
#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    missing_docs,
    clippy::pedantic,
    unnecessary_transmutes
)]
include!(concat!(env!("OUT_DIR"), "/dpdk_bindings.rs"));
