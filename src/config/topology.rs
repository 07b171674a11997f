//! Where the plan's lcores and ports sit on this host: each CPU's NUMA
//! node, core, SMT siblings and the CPUs sharing its L3, and each PCI
//! port's NUMA node. From hwloc (cargo feature `hwloc`, Debian's
//! libhwloc-dev, through `hwlocality`) where it is built in and loads, else
//! from sysfs; [`Topology::source`] says which. Read once by
//! `--check-config` and at start; nothing here runs on an lcore.

use std::collections::BTreeMap;
use std::path::Path;

/// Where one CPU sits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuPlace {
    /// Its NUMA node, if the host has NUMA information.
    pub node: Option<u32>,
    /// Its core (the OS's core id).
    pub core: Option<u32>,
    /// Every CPU of its core, itself included (SMT siblings).
    pub siblings: Vec<usize>,
    /// Every CPU sharing its last-level (L3) cache, itself included.
    pub l3: Vec<usize>,
}

/// The host's CPUs and PCI devices, as far as cpumapd needs them.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    /// `hwloc` or `sysfs`.
    pub source: &'static str,
    cpus: BTreeMap<usize, CpuPlace>,
    /// The sysfs root PCI NUMA nodes are read from (`/sys` on a real host).
    sys: std::path::PathBuf,
}

impl Topology {
    /// This host's topology: hwloc where built in and it loads, else sysfs.
    pub fn detect() -> Topology {
        #[cfg(feature = "hwloc")]
        if let Ok(t) = hwlocality::Topology::new() {
            return Self::from_hwloc(&t, Path::new("/sys"));
        }
        Self::from_sysfs(Path::new("/sys"))
    }

    /// Reads `SYS/devices/system/cpu/cpuN/{topology,cache,nodeM}` (a fake
    /// tree in tests). CPUs without a topology directory are left out.
    pub fn from_sysfs(sys: &Path) -> Topology {
        let mut cpus = BTreeMap::new();
        let dir = sys.join("devices/system/cpu");
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            let Some(cpu) = name
                .to_str()
                .and_then(|n| n.strip_prefix("cpu"))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            let p = e.path();
            let read = |f: &str| std::fs::read_to_string(p.join(f)).ok();
            let node = std::fs::read_dir(&p)
                .into_iter()
                .flatten()
                .flatten()
                .find_map(|n| n.file_name().to_str()?.strip_prefix("node")?.parse().ok());
            let l3 = (0..8)
                .find(|i| read(&format!("cache/index{i}/level")).is_some_and(|l| l.trim() == "3"))
                .and_then(|i| read(&format!("cache/index{i}/shared_cpu_list")))
                .map(|l| parse_cpu_list(&l))
                .unwrap_or_default();
            cpus.insert(
                cpu,
                CpuPlace {
                    node,
                    core: read("topology/core_id").and_then(|c| c.trim().parse().ok()),
                    siblings: read("topology/thread_siblings_list")
                        .map(|l| parse_cpu_list(&l))
                        .unwrap_or_else(|| vec![cpu]),
                    l3,
                },
            );
        }
        Topology {
            source: "sysfs",
            cpus,
            sys: sys.to_path_buf(),
        }
    }

    /// From an hwloc topology (the host's, or a synthetic one in tests).
    #[cfg(feature = "hwloc")]
    pub fn from_hwloc(t: &hwlocality::Topology, sys: &Path) -> Topology {
        use hwlocality::object::types::ObjectType;
        let set = |o: &hwlocality::object::TopologyObject| -> Vec<usize> {
            o.cpuset()
                .map(|s| s.iter_set().map(usize::from).collect())
                .unwrap_or_default()
        };
        let mut cpus = BTreeMap::new();
        for pu in t.objects_with_type(ObjectType::PU) {
            let Some(cpu) = pu.os_index() else { continue };
            let core = pu.first_ancestor_with_type(ObjectType::Core);
            let node = t
                .objects_with_type(ObjectType::NUMANode)
                .find(|n| n.cpuset().is_some_and(|s| s.is_set(cpu)))
                .and_then(|n| n.os_index())
                .map(|n| n as u32);
            cpus.insert(
                cpu,
                CpuPlace {
                    node,
                    core: core.and_then(|c| c.os_index()).map(|c| c as u32),
                    siblings: core.map(set).unwrap_or_else(|| vec![cpu]),
                    l3: pu
                        .first_ancestor_with_type(ObjectType::L3Cache)
                        .map(set)
                        .unwrap_or_default(),
                },
            );
        }
        Topology {
            source: "hwloc",
            cpus,
            sys: sys.to_path_buf(),
        }
    }

    /// Where `cpu` sits (None: not a CPU of this host).
    pub fn place(&self, cpu: usize) -> Option<&CpuPlace> {
        self.cpus.get(&cpu)
    }

    /// The NUMA node of `cpu`.
    pub fn node_of(&self, cpu: usize) -> Option<u32> {
        self.place(cpu)?.node
    }

    /// True when CPUs `a` and `b` are two hardware threads of one core.
    pub fn smt_siblings(&self, a: usize, b: usize) -> bool {
        a != b && self.place(a).is_some_and(|p| p.siblings.contains(&b))
    }

    /// The NUMA node of PCI device `addr` (`0000:3b:00.0`), from
    /// `SYS/bus/pci/devices/ADDR/numa_node` (hwloc reads the same file);
    /// None where the device is absent or the host has no NUMA (-1).
    pub fn pci_node(&self, addr: &str) -> Option<u32> {
        read_node(
            &self
                .sys
                .join("bus/pci/devices")
                .join(addr)
                .join("numa_node"),
        )
    }

    /// The NUMA node of Linux interface `iface`'s device
    /// (`SYS/class/net/IF/device/numa_node`); None for virtual interfaces.
    pub fn netdev_node(&self, iface: &str) -> Option<u32> {
        read_node(
            &self
                .sys
                .join("class/net")
                .join(iface)
                .join("device/numa_node"),
        )
    }
}

/// A sysfs `numa_node` file: the node, or None (absent, or -1: no NUMA).
fn read_node(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse::<i64>()
        .ok()?
        .try_into()
        .ok()
}

/// `0-3,8,10-11` -> [0, 1, 2, 3, 8, 10, 11]; malformed parts are skipped.
fn parse_cpu_list(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>())
                    && a <= b
                    && b - a < 4096
                {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<usize>().ok()),
        }
    }
    out
}

/// Test support: a fake sysfs tree.
#[cfg(test)]
/// A fake sysfs: 2 nodes x 2 cores x 2 threads, an L3 per node, and one
/// PCI device on node 1.
pub(crate) fn fake_sys() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for cpu in 0..8usize {
        let p = d.path().join(format!("devices/system/cpu/cpu{cpu}"));
        let node = cpu / 4;
        std::fs::create_dir_all(p.join(format!("node{node}"))).unwrap();
        std::fs::create_dir_all(p.join("topology")).unwrap();
        std::fs::write(p.join("topology/core_id"), format!("{}\n", cpu / 2)).unwrap();
        let first = cpu / 2 * 2;
        std::fs::write(
            p.join("topology/thread_siblings_list"),
            format!("{first}-{}\n", first + 1),
        )
        .unwrap();
        for (i, level) in [(0, 1), (2, 2), (3, 3)] {
            let c = p.join(format!("cache/index{i}"));
            std::fs::create_dir_all(&c).unwrap();
            std::fs::write(c.join("level"), format!("{level}\n")).unwrap();
            let l3 = format!("{}-{}\n", node * 4, node * 4 + 3);
            std::fs::write(
                c.join("shared_cpu_list"),
                if level == 3 { l3 } else { format!("{cpu}\n") },
            )
            .unwrap();
        }
    }
    std::fs::create_dir_all(d.path().join("devices/system/cpu/cpufreq")).unwrap();
    let pci = d.path().join("bus/pci/devices/0000:3b:00.0");
    std::fs::create_dir_all(&pci).unwrap();
    std::fs::write(pci.join("numa_node"), "1\n").unwrap();
    let pci = d.path().join("bus/pci/devices/0000:00:02.0");
    std::fs::create_dir_all(&pci).unwrap();
    std::fs::write(pci.join("numa_node"), "-1\n").unwrap();
    let net = d.path().join("class/net/ens1f0/device");
    std::fs::create_dir_all(&net).unwrap();
    std::fs::write(net.join("numa_node"), "1\n").unwrap();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_gives_nodes_cores_siblings_l3_and_pci_nodes() {
        let d = fake_sys();
        let t = Topology::from_sysfs(d.path());
        assert_eq!(t.source, "sysfs");
        let p = t.place(5).unwrap();
        assert_eq!(
            *p,
            CpuPlace {
                node: Some(1),
                core: Some(2),
                siblings: vec![4, 5],
                l3: vec![4, 5, 6, 7],
            }
        );
        assert!(t.smt_siblings(4, 5));
        assert!(!t.smt_siblings(5, 6));
        assert!(!t.smt_siblings(5, 5));
        assert_eq!(t.pci_node("0000:3b:00.0"), Some(1));
        assert_eq!(t.pci_node("0000:00:02.0"), None, "-1: no NUMA");
        assert_eq!(t.pci_node("0000:99:00.0"), None, "absent");
        assert!(t.place(8).is_none());
        assert_eq!(t.netdev_node("ens1f0"), Some(1));
        assert_eq!(t.netdev_node("lo"), None);
    }

    #[test]
    fn cpu_lists_parse_and_bad_parts_are_skipped() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list("x,3-1,5"), vec![5]);
        assert_eq!(parse_cpu_list(""), Vec::<usize>::new());
    }

    #[test]
    fn this_host_has_a_place_for_cpu_0() {
        let t = Topology::detect();
        let p = t.place(0).expect("cpu 0 exists");
        assert!(p.siblings.contains(&0), "{p:?}");
    }

    #[cfg(feature = "hwloc")]
    #[test]
    fn hwloc_synthetic_topology_gives_the_same_picture() {
        let h = hwlocality::Topology::builder()
            .from_synthetic("node:2 core:2 pu:2")
            .unwrap()
            .build()
            .unwrap();
        let t = Topology::from_hwloc(&h, Path::new("/nonexistent"));
        assert_eq!(t.source, "hwloc");
        let p = t.place(5).unwrap();
        assert_eq!(p.node, Some(1));
        assert_eq!(p.siblings, vec![4, 5]);
        assert!(t.smt_siblings(6, 7));
        assert!(!t.smt_siblings(3, 4));
        assert_eq!(Topology::detect().source, "hwloc", "the host's hwloc loads");
    }
}
