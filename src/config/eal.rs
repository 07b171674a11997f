//! The EAL arguments cpumapd understands without DPDK.

use std::collections::BTreeSet;

use super::ConfigError;
use crate::ids::LcoreId;

/// One lcore and the CPUs its thread may run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LcoreSpec {
    pub id: LcoreId,
    pub cpus: Vec<usize>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EalArgs {
    pub lcores: Option<Vec<LcoreSpec>>,
    pub vdevs: Vec<String>,
}

/// EAL options that change nothing natively (memory, PCI, process model).
const NO_OP_WITH_VALUE: &[&str] = &[
    "-n",
    "-m",
    "--file-prefix",
    "--log-level",
    "--main-lcore",
    "--proc-type",
];
const NO_OP_FLAGS: &[&str] = &[
    "--no-huge",
    "--no-pci",
    "--no-shconf",
    "--in-memory",
    "--no-telemetry",
];
/// EAL options that only make sense with DPDK underneath.
const NEEDS_DPDK: &[&str] = &[
    "-a",
    "--allow",
    "-b",
    "--block",
    "--socket-mem",
    "--socket-limit",
    "--huge-dir",
    "--iova-mode",
    "--vfio-intr",
    "--vfio-vf-token",
    "--legacy-mem",
    "--single-file-segments",
    "--base-virtaddr",
    "-d",
];

fn value<'a>(args: &'a [String], i: &mut usize, opt: &str) -> Result<&'a str, ConfigError> {
    *i += 1;
    args.get(*i)
        .map(String::as_str)
        .ok_or_else(|| ConfigError::Eal(format!("{opt} needs a value")))
}

impl EalArgs {
    pub fn parse(args: &[String]) -> Result<Self, ConfigError> {
        let mut out = EalArgs::default();
        let mut i = 0;
        while i < args.len() {
            let a = args[i].as_str();
            let (opt, inline) = match a.split_once('=') {
                Some((o, v)) if o.starts_with("--") => (o, Some(v)),
                _ if a.starts_with("-l") && a.len() > 2 && !a.starts_with("--") => {
                    ("-l", Some(&a[2..]))
                }
                _ => (a, None),
            };
            let val = |i: &mut usize| -> Result<String, ConfigError> {
                match inline {
                    Some(v) => Ok(v.to_string()),
                    None => value(args, i, opt).map(str::to_string),
                }
            };
            match opt {
                "-l" => out.lcores = Some(parse_corelist(&val(&mut i)?)?),
                "--lcores" => out.lcores = Some(parse_lcores(&val(&mut i)?)?),
                "--vdev" => out.vdevs.push(val(&mut i)?),
                o if NO_OP_WITH_VALUE.contains(&o) => {
                    val(&mut i)?;
                }
                o if NO_OP_FLAGS.contains(&o) => {}
                o if NEEDS_DPDK.contains(&o) => {
                    return Err(ConfigError::Eal(format!(
                        "EAL option {o} needs the DPDK backend (cargo feature `dpdk`), which this build does not include"
                    )));
                }
                o => {
                    return Err(ConfigError::Eal(format!(
                        "unknown EAL option '{o}' (application options go after `--`: cpumapd [EAL args] -- [app args])"
                    )));
                }
            }
            i += 1;
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
