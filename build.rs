//! Build script. The native build needs nothing generated; the DPDK backend
//! (cargo feature `dpdk`, added with the DPDK bindings) will run pkg-config,
//! bindgen and the C shim from here.
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
}
