//! What a run tells the outside (layer 7): the exit summary and its
//! accounting check ([`Summary`]), the live table, and the Prometheus
//! `/metrics` exporter ([`exporter`]).
//!
//! Everything here reads the registry of a run ([`crate::lcore::StatsSet`])
//! on its own thread and sums the single-writer counter blocks at read time;
//! nothing here runs on an lcore.

pub mod exporter;
mod summary;
mod table;

pub use summary::{PortSummary, RxSummary, Summary, TargetSummary};
