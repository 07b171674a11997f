//! Newtypes for the ids that cross module boundaries. They print the way
//! operators read them: `lcore3`, `port0`.

use std::fmt;

use serde::Serialize;

/// An EAL-style logical core id (not a CPU number: `--lcores 2@0` runs
/// lcore 2 on CPU 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct LcoreId(pub u32);

/// A port, numbered in `--vdev` order as DPDK numbers them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct PortId(pub u16);

/// A redirect target: the key of a cpumap entry, which is the id of the
/// lcore that serves it (the kernel keys cpumap by CPU number).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TargetId(pub u32);

/// A target id is its cpumap key (what an eBPF program redirects to).
impl From<TargetId> for u32 {
    fn from(t: TargetId) -> u32 {
        t.0
    }
}

impl TargetId {
    /// The lcore that serves this target.
    pub fn lcore(self) -> LcoreId {
        LcoreId(self.0)
    }
    /// The target as an index into per-key arrays.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl From<LcoreId> for TargetId {
    fn from(l: LcoreId) -> Self {
        TargetId(l.0)
    }
}

impl fmt::Display for LcoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lcore{}", self.0)
    }
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port{}", self.0)
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lcore{}", self.0)
    }
}
