//! The DPDK EAL arguments as `rte_eal_init` would read them, without
//! DPDK: lcores and the main lcore, PCI addresses, the memory options that
//! cannot be combined, and the ports DPDK would probe, in its order (the
//! PCI allow-list by address, then the vdevs as given). What
//! `--check-config` reports for a DPDK profile in any build, so CI
//! validates production profiles without DPDK or a NIC.

use std::path::Path;

use super::{ConfigError, LcoreSpec, eal};
use crate::ids::LcoreId;

/// A device the EAL arguments name, before `rte_eal_init` probes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredPort {
    /// `0000:3b:00.0` or the vdev's name (`net_tap0`).
    pub name: String,
    /// `pci` or the vdev's driver (`net_tap`).
    pub driver: String,
    /// What the plan may map: the driver's own limit where it is fixed by
    /// its arguments, else DPDK's per-port maximum (the device's real limit
    /// is checked at start).
    pub max_rx_queues: u16,
}

/// RTE_MAX_QUEUES_PER_PORT in Debian's DPDK 22.11 build.
const RTE_MAX_QUEUES_PER_PORT: u16 = 1024;
/// RTE_PMD_TAP_MAX_QUEUES in DPDK 22.11.
const TAP_MAX_QUEUES: u16 = 16;

/// The EAL arguments of a DPDK profile, read as `rte_eal_init` reads them.
#[derive(Clone, Debug, Default)]
pub struct DpdkEal {
    /// Every lcore, the main one included.
    pub lcores: Vec<LcoreSpec>,
    /// The EAL's main lcore (the control thread).
    pub main: LcoreId,
    /// `-a` entries (address normalised to its domain form, devargs kept).
    pub pci: Vec<String>,
    /// `--vdev` arguments, in order.
    pub vdevs: Vec<String>,
    /// `--no-huge`: 4 KB pages.
    pub no_huge: bool,
    /// `--in-memory`: no files in the hugetlbfs mount.
    pub in_memory: bool,
    /// `--no-pci`: the PCI bus is not scanned.
    pub no_pci: bool,
    /// `--socket-mem`, as given.
    pub socket_mem: Option<String>,
    /// `-m`, as given.
    pub mem_mb: Option<String>,
    /// `--huge-dir`, as given.
    pub huge_dir: Option<String>,
    /// What the check noticed but does not refuse.
    pub warnings: Vec<String>,
}

fn eal_err(s: impl Into<String>) -> ConfigError {
    ConfigError::Eal(s.into())
}

/// `DDDD:BB:DD.F` or `BB:DD.F` (domain 0000), normalised to the former.
fn pci_addr(s: &str) -> Option<String> {
    let (dom, rest) = match s.matches(':').count() {
        2 => s.split_once(':')?,
        1 => ("0000", s),
        _ => return None,
    };
    let (bus, rest) = rest.split_once(':')?;
    let (dev, func) = rest.split_once('.')?;
    let hex = |x: &str, n: usize| x.len() == n && x.chars().all(|c| c.is_ascii_hexdigit());
    let func_ok = func.len() == 1 && ('0'..='7').contains(&func.chars().next()?);
    (hex(dom, 4) && hex(bus, 2) && hex(dev, 2) && func_ok)
        .then(|| format!("{dom}:{bus}:{dev}.{func}").to_ascii_lowercase())
}

impl DpdkEal {
    /// Parses and checks `args` (everything before `--`).
    pub fn parse(args: &[String]) -> Result<DpdkEal, ConfigError> {
        let mut out = DpdkEal::default();
        let mut lcore_opts = Vec::new();
        let mut main = None;
        for o in eal::options(args)? {
            let Some(v) = o.value else {
                match o.opt {
                    "--no-huge" => out.no_huge = true,
                    "--in-memory" => out.in_memory = true,
                    "--no-pci" => out.no_pci = true,
                    _ => {}
                }
                continue;
            };
            let opt = o.opt;
            match opt {
                "-l" => lcore_opts.push(("-l", eal::parse_corelist(v)?)),
                "--lcores" => lcore_opts.push(("--lcores", eal::parse_lcores(v)?)),
                "-c" => lcore_opts.push(("-c", parse_coremask(v)?)),
                "--main-lcore" => {
                    main = Some(LcoreId(v.parse().map_err(|_| {
                        eal_err(format!("--main-lcore '{v}': expected an lcore number"))
                    })?))
                }
                "-a" | "--allow" | "-b" | "--block" => {
                    let (addr, devargs) =
                        v.split_once(',').map_or((v, None), |(a, d)| (a, Some(d)));
                    let norm = pci_addr(addr).ok_or_else(|| {
                        eal_err(format!(
                            "{opt} '{v}': '{addr}' is not a PCI address (DDDD:BB:DD.F, e.g. 0000:3b:00.0)"
                        ))
                    })?;
                    if opt.starts_with("-a") || opt == "--allow" {
                        out.pci.push(match devargs {
                            Some(d) => format!("{norm},{d}"),
                            None => norm,
                        });
                    }
                }
                "--vdev" => out.vdevs.push(v.to_string()),
                "-m" => out.mem_mb = Some(v.to_string()),
                "--socket-mem" => out.socket_mem = Some(v.to_string()),
                "--huge-dir" => out.huge_dir = Some(v.to_string()),
                "--proc-type" if !["primary", "secondary", "auto"].contains(&v) => {
                    return Err(eal_err(format!(
                        "--proc-type '{v}': expected primary, secondary or auto"
                    )));
                }
                "--iova-mode" if !["pa", "va"].contains(&v) => {
                    return Err(eal_err(format!("--iova-mode '{v}': expected pa or va")));
                }
                _ => {}
            }
        }
        out.lcores = Self::lcores(lcore_opts, &mut out.warnings)?;
        out.main = Self::main_lcore(main, &out.lcores)?;
        out.check_memory()?;
        if out.no_pci && !out.pci.is_empty() {
            return Err(eal_err(format!(
                "-a {} with --no-pci: the PCI bus is off, the device would not be probed",
                out.pci[0]
            )));
        }
        Ok(out)
    }

    /// The one lcore option given (or every allowed CPU, with a warning).
    fn lcores(
        mut lcore_opts: Vec<(&str, Vec<LcoreSpec>)>,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<LcoreSpec>, ConfigError> {
        if lcore_opts.len() > 1 {
            let names: Vec<_> = lcore_opts.iter().map(|(o, _)| *o).collect();
            return Err(eal_err(format!(
                "give one of -l, --lcores and -c, not {}",
                names.join(" and ")
            )));
        }
        Ok(match lcore_opts.pop() {
            Some((_, l)) => l,
            None => {
                warnings.push(
                    "no -l/--lcores: the EAL makes an lcore of every CPU this process may use"
                        .into(),
                );
                super::allowed_cpus()
                    .into_iter()
                    .map(|c| LcoreSpec {
                        id: LcoreId(c as u32),
                        cpus: vec![c],
                    })
                    .collect()
            }
        })
    }

    /// `--main-lcore`, which must be one of `lcores`; else the first lcore.
    fn main_lcore(main: Option<LcoreId>, lcores: &[LcoreSpec]) -> Result<LcoreId, ConfigError> {
        match main {
            Some(m) if !lcores.iter().any(|l| l.id == m) => Err(eal_err(format!(
                "--main-lcore {}: not one of the EAL's lcores ({})",
                m.0,
                ids(lcores)
            ))),
            Some(m) => Ok(m),
            None => lcores
                .first()
                .map(|l| l.id)
                .ok_or_else(|| eal_err("the lcore list is empty")),
        }
    }

    /// The combinations `rte_eal_init` refuses, and what this host offers.
    fn check_memory(&mut self) -> Result<(), ConfigError> {
        if self.no_huge && self.in_memory {
            return Err(eal_err(
                "--no-huge and --in-memory cannot be combined (the EAL refuses it): use --no-huge --no-shconf for a run without hugepages",
            ));
        }
        if self.no_huge && self.socket_mem.is_some() {
            return Err(eal_err(
                "--socket-mem needs hugepages: it cannot be combined with --no-huge (use -m MB)",
            ));
        }
        if self.mem_mb.is_some() && self.socket_mem.is_some() {
            return Err(eal_err("-m and --socket-mem cannot be combined: give one"));
        }
        for (opt, v) in [("-m", &self.mem_mb), ("--socket-mem", &self.socket_mem)] {
            if let Some(v) = v
                && v.split(',').any(|x| x.trim().parse::<u64>().is_err())
            {
                return Err(eal_err(format!(
                    "{opt} '{v}': expected megabytes (a number, or per socket: 1024,1024)"
                )));
            }
        }
        if self.no_huge {
            return Ok(());
        }
        if let Some(d) = &self.huge_dir
            && !Path::new(d).is_dir()
        {
            self.warnings.push(format!(
                "--huge-dir {d} does not exist on this host (deploy/hugepages/setup-hugepages.sh mounts one)"
            ));
        }
        match host_hugepages() {
            Some((0, _, kb)) => self.warnings.push(format!(
                "this host has no {kb} kB hugepages reserved: deploy/hugepages/setup-hugepages.sh, or --no-huge for a test run"
            )),
            Some((total, free, kb)) => {
                let want = self
                    .socket_mem
                    .as_deref()
                    .or(self.mem_mb.as_deref())
                    .map(|v| v.split(',').filter_map(|x| x.trim().parse::<u64>().ok()).sum::<u64>());
                if let Some(mb) = want
                    && mb * 1024 > free * kb
                {
                    self.warnings.push(format!(
                        "the profile asks for {mb} MB of hugepages; this host has {free} of {total} x {kb} kB free ({} MB)",
                        free * kb / 1024
                    ));
                }
            }
            None => {}
        }
        Ok(())
    }

    /// The ports `rte_eal_init` will create, in port-id order: PCI devices
    /// (the bus scan sorts them by address), then vdevs as given (the vdev
    /// bus probes last).
    pub fn ports(&self) -> Result<Vec<DeclaredPort>, ConfigError> {
        let mut pci: Vec<&String> = self.pci.iter().collect();
        pci.sort();
        let mut out: Vec<DeclaredPort> = pci
            .into_iter()
            .map(|p| DeclaredPort {
                name: p.split(',').next().unwrap_or(p).to_string(),
                driver: "pci".into(),
                max_rx_queues: RTE_MAX_QUEUES_PER_PORT,
            })
            .collect();
        for v in &self.vdevs {
            out.push(declared_vdev(v)?);
        }
        Ok(out)
    }
}

fn ids(l: &[LcoreSpec]) -> String {
    l.iter()
        .map(|l| l.id.0.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `-c 0xf`: lcore N on CPU N for each bit N.
fn parse_coremask(s: &str) -> Result<Vec<LcoreSpec>, ConfigError> {
    let hex = s.strip_prefix("0x").or(s.strip_prefix("0X")).unwrap_or(s);
    let mask = u128::from_str_radix(hex, 16)
        .map_err(|_| eal_err(format!("-c '{s}': expected a hexadecimal core mask")))?;
    Ok((0..128)
        .filter(|b| mask >> b & 1 == 1)
        .map(|b| LcoreSpec {
            id: LcoreId(b),
            cpus: vec![b as usize],
        })
        .collect())
}

/// A DPDK `--vdev NAME[,k=v...]`: its driver and the queues it can have.
fn declared_vdev(v: &str) -> Result<DeclaredPort, ConfigError> {
    let mut parts = v.split(',');
    let name = parts.next().unwrap_or_default().trim().to_string();
    let args: Vec<(&str, &str)> = parts.filter_map(|kv| kv.split_once('=')).collect();
    let driver = name
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .to_string();
    let count = |key: &str| args.iter().filter(|(k, _)| *k == key).count() as u16;
    let num = |key: &str, default: u16| -> Result<u16, ConfigError> {
        match args.iter().find(|(k, _)| *k == key) {
            None => Ok(default),
            Some((_, x)) => x
                .parse()
                .map_err(|_| eal_err(format!("--vdev {v}: {key}='{x}' is not a number"))),
        }
    };
    let max_rx_queues = match driver.as_str() {
        "net_gen" => {
            return Err(eal_err(format!(
                "--vdev {v}: net_gen is cpumapd's own generator, not a DPDK driver; use backend = \"native\" for it, or a DPDK vdev (net_null, net_pcap, net_memif, ...)"
            )));
        }
        "net_kni" => {
            return Err(eal_err(format!(
                "--vdev {v}: KNI was removed from DPDK (23.11) and Debian's 22.11 does not ship it; use net_tap or virtio-user"
            )));
        }
        "net_pcap" => {
            for (k, f) in args.iter().filter(|(k, _)| *k == "rx_pcap") {
                if !Path::new(f).is_file() {
                    return Err(eal_err(format!("--vdev {v}: {k}={f}: no such file")));
                }
            }
            (count("rx_pcap") + count("rx_iface") + count("rx_iface_in") + count("iface")).max(1)
        }
        "net_af_packet" => num("qpairs", 1)?,
        "net_af_xdp" => num("queue_count", 1)?,
        "net_tap" | "net_tun" => TAP_MAX_QUEUES,
        "net_memif" => 255,
        "net_null" | "net_ring" | "net_virtio_user" | "net_vhost" | "net_bonding"
        | "net_failsafe" => RTE_MAX_QUEUES_PER_PORT,
        d if d.starts_with("net_") => RTE_MAX_QUEUES_PER_PORT,
        _ => {
            return Err(eal_err(format!(
                "--vdev {v}: '{name}' is not an ethdev (net_*) driver"
            )));
        }
    };
    Ok(DeclaredPort {
        name,
        driver,
        max_rx_queues,
    })
}

/// HugePages_Total, HugePages_Free and Hugepagesize (kB) of this host.
pub(super) fn host_hugepages() -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    Some((
        field("HugePages_Total:")?,
        field("HugePages_Free:")?,
        field("Hugepagesize:")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn pci_addresses_normalise_or_fail() {
        assert_eq!(pci_addr("3b:00.0").as_deref(), Some("0000:3b:00.0"));
        assert_eq!(pci_addr("0000:AF:00.1").as_deref(), Some("0000:af:00.1"));
        for bad in ["3b:00", "0000:3b:00.8", "zz:00.0", "0:3b:00.0", "3b.00.0"] {
            assert_eq!(pci_addr(bad), None, "{bad}");
        }
    }

    #[test]
    fn eal_combinations_the_eal_refuses_are_refused_here() {
        let cases = [
            ("-l 0-2 --no-huge --in-memory", "--no-huge and --in-memory"),
            (
                "-l 0-2 --no-huge --socket-mem 512",
                "--socket-mem needs hugepages",
            ),
            ("-l 0-2 -m 512 --socket-mem 512", "-m and --socket-mem"),
            ("-l 0-2 --lcores 0@0", "give one of -l, --lcores and -c"),
            ("-l 0-2 --main-lcore 7", "--main-lcore 7"),
            ("-l 0-2 -a 3b:00", "not a PCI address"),
            ("-l 0-2 --no-pci -a 0000:3b:00.0", "--no-pci"),
            ("-l 0-2 --frob", "unknown EAL option '--frob'"),
            ("-l 0-2 --socket-mem 1G", "expected megabytes"),
            ("-l 0-2 --iova-mode xx", "--iova-mode"),
            ("-l 0-2 --vdev", "needs a value"),
            ("-l 0-2 -é", "unknown EAL option '-é'"),
        ];
        for (args, want) in cases {
            let e = DpdkEal::parse(&a(args)).expect_err(args).to_string();
            assert!(e.contains(want), "{args}: {e}");
        }
    }

    #[test]
    fn ports_come_in_dpdk_probe_order() {
        let e = DpdkEal::parse(&a(
            "-l0-3 --vdev net_tap0,iface=x -a 0000:af:00.0 -a 3b:00.1,rx_low_latency=1 -c0x1",
        ));
        assert!(e.unwrap_err().to_string().contains("not -l and -c"));
        let e = DpdkEal::parse(&a(
            "-l0-3 --main-lcore=3 --vdev net_tap0,iface=x -a 0000:af:00.0 -a 3b:00.1,rx_low_latency=1",
        ))
        .unwrap();
        assert_eq!(e.main, LcoreId(3));
        let names: Vec<_> = e.ports().unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["0000:3b:00.1", "0000:af:00.0", "net_tap0"]);
        assert_eq!(parse_coremask("0x5").unwrap().len(), 2);
    }

    #[test]
    fn vdev_queue_limits_and_refusals() {
        assert_eq!(
            declared_vdev("net_af_packet0,iface=e,qpairs=4")
                .unwrap()
                .max_rx_queues,
            4
        );
        assert_eq!(declared_vdev("net_tap0,iface=x").unwrap().max_rx_queues, 16);
        for (v, want) in [
            ("net_gen0", "cpumapd's own generator"),
            ("net_kni0", "KNI was removed"),
            ("crypto_null0", "not an ethdev"),
            ("net_af_xdp0,queue_count=x", "not a number"),
            ("net_pcap0,rx_pcap=/nonexistent.pcap", "no such file"),
        ] {
            let e = declared_vdev(v).expect_err(v).to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
    }
}
