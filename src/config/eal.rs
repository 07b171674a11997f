//! The EAL arguments cpumapd understands without DPDK.

use std::collections::BTreeSet;

use super::ConfigError;
use crate::ids::LcoreId;

/// One lcore and the CPUs its thread may run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LcoreSpec {
    /// The lcore id.
    pub id: LcoreId,
    /// The CPUs its thread may run on.
    pub cpus: Vec<usize>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
/// The EAL arguments a native run understands.
pub struct EalArgs {
    /// `-l` / `--lcores`, if given.
    pub lcores: Option<Vec<LcoreSpec>>,
    /// `--vdev` arguments, in order.
    pub vdevs: Vec<String>,
}

/// Options that take a value, as DPDK 22.11's EAL defines them.
pub const WITH_VALUE: &[&str] = &[
    "-l",
    "--lcores",
    "-c",
    "--main-lcore",
    "-a",
    "--allow",
    "-b",
    "--block",
    "--vdev",
    "-n",
    "-r",
    "-m",
    "--socket-mem",
    "--socket-limit",
    "--huge-dir",
    "--file-prefix",
    "--proc-type",
    "--log-level",
    "--iova-mode",
    "--vfio-intr",
    "--vfio-vf-token",
    "--base-virtaddr",
    "-d",
    "--mbuf-pool-ops-name",
    "--service-corelist",
    "-S",
    "--service-coremask",
    "-s",
    "--huge-worker-stack",
];
/// Options that take no value, as DPDK 22.11's EAL defines them.
pub const FLAGS: &[&str] = &[
    "--no-huge",
    "--in-memory",
    "--no-pci",
    "--no-shconf",
    "--no-telemetry",
    "--telemetry",
    "--legacy-mem",
    "--single-file-segments",
    "--match-allocations",
    "--huge-unlink",
    "--no-hpet",
    "--create-uio-dev",
    "--record-core-cycles",
    "-v",
];

/// EAL options that change nothing natively (memory, PCI, process model).
/// Every other option DPDK knows needs the DPDK backend.
pub const NATIVE_NO_OP: &[&str] = &[
    "-n",
    "-m",
    "--file-prefix",
    "--log-level",
    "--main-lcore",
    "--proc-type",
    "--no-huge",
    "--no-pci",
    "--no-shconf",
    "--in-memory",
    "--no-telemetry",
];

/// One EAL option as `rte_eal_init` reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EalOpt<'a> {
    /// The option as written, without an `=value`: `-l`, `--vdev`.
    pub opt: &'a str,
    /// Its value; None for a flag.
    pub value: Option<&'a str>,
}

/// Splits EAL arguments (everything before `--`) into options, with DPDK
/// 22.11's option table: `--opt=value`, `--opt value`, `-lVALUE`, `-l VALUE`
/// and flags. An option DPDK does not know, a flag with a value and an
/// option missing its value are errors. The one EAL reader: the native
/// parse ([`EalArgs::parse`]) and `--check-config`'s DPDK reader use it.
pub fn options(args: &[String]) -> Result<Vec<EalOpt<'_>>, ConfigError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let (opt, inline): (&str, Option<&str>) = if let Some(long) = a.strip_prefix("--") {
            match long.split_once('=') {
                Some((o, v)) => (&a[..o.len() + 2], Some(v)),
                None => (a, None),
            }
        } else if let Some((short, rest)) = a
            .get(..2)
            .zip(a.get(2..))
            .filter(|(o, r)| !r.is_empty() && WITH_VALUE.contains(o))
        {
            // -l0-3: the value attached (`get`: no slicing inside a
            // multi-byte character of a hostile argument).
            (short, Some(rest))
        } else {
            (a, None)
        };
        if FLAGS.contains(&opt) {
            if inline.is_some() {
                return Err(ConfigError::Eal(format!("EAL option {opt} takes no value")));
            }
            out.push(EalOpt { opt, value: None });
        } else if WITH_VALUE.contains(&opt) {
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    args.get(i).map(String::as_str).ok_or_else(|| {
                        ConfigError::Eal(format!("EAL option {opt} needs a value"))
                    })?
                }
            };
            out.push(EalOpt {
                opt,
                value: Some(value),
            });
        } else {
            return Err(ConfigError::Eal(format!(
                "unknown EAL option '{opt}' (application options go after `--`: cpumapd [EAL args] -- [app args])"
            )));
        }
        i += 1;
    }
    Ok(out)
}

impl EalArgs {
    /// Reads the EAL arguments a native run understands: lcores, vdevs and
    /// the options that change nothing without DPDK; any other EAL option
    /// is an error naming the DPDK backend.
    pub fn parse(args: &[String]) -> Result<Self, ConfigError> {
        let mut out = EalArgs::default();
        for o in options(args)? {
            match (o.opt, o.value) {
                ("-l", Some(v)) => out.lcores = Some(parse_corelist(v)?),
                ("--lcores", Some(v)) => out.lcores = Some(parse_lcores(v)?),
                ("--vdev", Some(v)) => out.vdevs.push(v.to_string()),
                (opt, _) if NATIVE_NO_OP.contains(&opt) => {}
                (opt, _) => {
                    return Err(ConfigError::Eal(format!(
                        "EAL option {opt} needs the DPDK backend (cargo feature `dpdk`), which this build does not include"
                    )));
                }
            }
        }
        Ok(out)
    }
}

fn num(s: &str, what: &str) -> Result<usize, ConfigError> {
    s.trim()
        .parse()
        .map_err(|_| ConfigError::Eal(format!("bad {what} '{s}'")))
}

/// `0-3,5` or `(0-3,5)`: a set of numbers.
fn parse_set(s: &str, what: &str) -> Result<BTreeSet<usize>, ConfigError> {
    let s = s.trim();
    let s = s
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .unwrap_or(s);
    let mut set = BTreeSet::new();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a, what)?, num(b, what)?);
                if a > b || b - a > 1024 {
                    return Err(ConfigError::Eal(format!("bad {what} range '{part}'")));
                }
                set.extend(a..=b);
            }
            None => {
                set.insert(num(part, what)?);
            }
        }
    }
    Ok(set)
}

/// `-l 0-2,4`: lcore N runs on CPU N.
pub fn parse_corelist(s: &str) -> Result<Vec<LcoreSpec>, ConfigError> {
    Ok(parse_set(s, "lcore list")?
        .into_iter()
        .map(|c| LcoreSpec {
            id: LcoreId(c as u32),
            cpus: vec![c],
        })
        .collect())
}

/// `--lcores 0@0,1@1,2@0,(3-4)@(0,1)`: DPDK's lcore-to-CPU placement.
pub fn parse_lcores(s: &str) -> Result<Vec<LcoreSpec>, ConfigError> {
    // Split at top-level commas (commas inside parentheses belong to a set).
    let mut items = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, ch) in s.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(ConfigError::Eal(format!(
                "unbalanced ')' in --lcores '{s}'"
            )));
        }
    }
    if depth != 0 {
        return Err(ConfigError::Eal(format!(
            "unbalanced '(' in --lcores '{s}'"
        )));
    }
    items.push(&s[start..]);
    let mut out: Vec<LcoreSpec> = Vec::new();
    for item in items {
        let (ids, cpus) = match item.split_once('@') {
            Some((l, c)) => (parse_set(l, "lcore set")?, Some(parse_set(c, "cpu set")?)),
            None => (parse_set(item, "lcore set")?, None),
        };
        for id in ids {
            if out.iter().any(|l| l.id.0 as usize == id) {
                return Err(ConfigError::Eal(format!(
                    "lcore {id} appears twice in --lcores '{s}'"
                )));
            }
            let cpus = cpus
                .as_ref()
                .map_or(vec![id], |c| c.iter().copied().collect());
            out.push(LcoreSpec {
                id: LcoreId(id as u32),
                cpus,
            });
        }
    }
    out.sort_by_key(|l| l.id);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn lcore_syntaxes() {
        let l = parse_corelist("0-2,5").unwrap();
        assert_eq!(
            l.iter().map(|x| x.id.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 5]
        );
        let l = parse_lcores("0@0,1@1,2@0").unwrap();
        assert_eq!(
            l[2],
            LcoreSpec {
                id: LcoreId(2),
                cpus: vec![0]
            }
        );
        let l = parse_lcores("(3-4)@(0,1),7").unwrap();
        assert_eq!(
            l[0],
            LcoreSpec {
                id: LcoreId(3),
                cpus: vec![0, 1]
            }
        );
        assert_eq!(
            l[2],
            LcoreSpec {
                id: LcoreId(7),
                cpus: vec![7]
            }
        );
        assert!(parse_lcores("1@0,1@1").is_err());
        assert!(parse_lcores("(1@0").is_err());
        assert!(parse_corelist("3-1").is_err());
        assert!(parse_corelist("x").is_err());
    }

    #[test]
    fn eal_options() {
        let e = EalArgs::parse(&s(&[
            "-l",
            "0-1",
            "-n",
            "4",
            "--no-huge",
            "--vdev=net_null0",
            "--vdev",
            "net_gen0",
        ]))
        .unwrap();
        assert_eq!(e.vdevs, vec!["net_null0", "net_gen0"]);
        assert_eq!(e.lcores.unwrap().len(), 2);
        assert!(EalArgs::parse(&s(&["-l0-3"])).unwrap().lcores.is_some());
        let err = EalArgs::parse(&s(&["-a", "0000:01:00.0"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs the DPDK backend"), "{err}");
        let err = EalArgs::parse(&s(&["--mode", "touch"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("go after `--`"), "{err}");
        assert!(
            EalArgs::parse(&s(&["-l"]))
                .unwrap_err()
                .to_string()
                .contains("needs a value")
        );
    }
}
