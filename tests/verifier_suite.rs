//! cpumapd's verifier against the kernel's own verifier tests
//! (tools/testing/selftests/bpf/progs/verifier_*.c of linux-source-6.12),
//! program by program.
//!
//! scripts/get-verifier-suite.sh builds the suite once into
//! `$CPUMAPD_CACHE/verifier-suite` (or `$CPUMAPD_VERIFIER_SUITE`): every
//! program's section becomes SEC("xdp"), so each is judged as an XDP
//! program by both verifiers, and `kverdict`, which loads each program
//! alone into the running kernel (libbpf of the same tree, privileged) and
//! says what the kernel's verifier answered.
//!
//! For every program the kernel judged, cpumapd loads it from the same
//! object, and:
//! - a program the kernel refuses and cpumapd accepts fails the test,
//!   unless tests/data/verifier_suite_accepted.txt lists it with the reason
//!   it is safe here (the JIT checks no bounds: a wrong acceptance is a
//!   memory-safety hole). A listed program that cpumapd now refuses, or
//!   the kernel now accepts, fails too: the list stays exact.
//! - a program both accept that carries a `__retval` runs once in each, on
//!   64 zero bytes as the kernel's test_loader runs it (BPF_PROG_TEST_RUN;
//!   cpumapd's interpreter and, where it compiles, its JIT): the return
//!   values must be equal.
//! - the counts are the table in docs/EBPF.md between the
//!   `verifier-suite` markers (CPUMAPD_BLESS=1 rewrites it).
//!
//! A report of every disagreement goes to target/verifier-suite.md.
//!
//! Needs root and the built suite: `#[ignore]`d with that reason; CI runs it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cpumapd::filter::ebpf::globals::options;
use cpumapd::filter::ebpf::verifier::CtxField;
use cpumapd::filter::ebpf::{EbpfError, Instance, parse_object_with};
use cpumapd::frame::Pool;
use serde_json::Value;

/// The kernel's verdict on one program, and its annotations.
struct Kernel {
    obj: String,
    prog: String,
    /// `__success` / `__failure` (or "").
    expect: String,
    ok: bool,
    /// The last line of the kernel's verifier log when it refused.
    why: String,
    /// BPF_PROG_TEST_RUN's retval, for accepted programs with `__retval`.
    retval: Option<i64>,
}

/// cpumapd's verdict on one program.
enum Ours {
    Accepted(Arc<cpumapd::filter::ebpf::Program>),
    /// Refused; the group (see [`group`]) and the message.
    Refused(&'static str, String),
}

fn suite_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CPUMAPD_VERIFIER_SUITE") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("CPUMAPD_CACHE").unwrap_or_else(|| "/var/cache/cpumapd".into());
    Path::new(&cache).join("verifier-suite")
}

fn kernel_verdicts(dir: &Path) -> Vec<Kernel> {
    let mut objs: Vec<PathBuf> = std::fs::read_dir(dir.join("obj"))
        .expect("the suite's obj/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .collect();
    objs.sort();
    let out = Command::new(dir.join("kverdict"))
        .args(&objs)
        .output()
        .expect("kverdict runs");
    assert!(
        out.status.success(),
        "kverdict: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            Kernel {
                obj: s("obj"),
                prog: s("prog"),
                expect: s("expect"),
                ok: v["kernel"] == "ok",
                why: if v["kernel"] == "libbpf" {
                    format!("libbpf: {}", s("why").trim())
                } else {
                    s("why")
                },
                retval: v["retval"].as_i64(),
            }
        })
        .collect()
}

/// Why cpumapd refused, in groups a reader can act on: what cpumapd does
/// not support at all, and where its verifier is stricter than the
/// kernel's.
fn group(msg: &str) -> &'static str {
    const GROUPS: &[(&str, &str)] = &[
        (
            "bpf-to-bpf calls are not supported",
            "unsupported: bpf-to-bpf call",
        ),
        ("LD_ABS/LD_IND", "unsupported: LD_ABS/LD_IND"),
        ("unknown or unsupported helper", "unsupported: helper"),
        ("kfunc", "unsupported: kfunc"),
        (
            "is not supported (hash, percpu_hash",
            "unsupported: map type",
        ),
        ("unknown atomic", "unsupported: atomic"),
        ("unknown instruction opcode", "unsupported: instruction"),
        ("uses reserved fields", "unsupported: instruction"),
        (
            "read before it is written",
            "stricter: register read before written",
        ),
        ("stack", "stricter: stack access"),
        ("packet", "stricter: packet access"),
        ("map value", "stricter: map value access"),
        ("too complex", "stricter: too complex / loop"),
        ("loop", "stricter: too complex / loop"),
        ("pointer", "stricter: pointer use"),
        ("context", "stricter: context access"),
    ];
    GROUPS
        .iter()
        .find(|(k, _)| msg.contains(k))
        .map_or("stricter: other", |(_, g)| g)
}

fn ours(dir: &Path, k: &Kernel) -> Ours {
    let path = dir.join("obj").join(format!("{}.o", k.obj));
    let bytes = std::fs::read(&path).unwrap();
    match parse_object_with(&path.to_string_lossy(), &bytes, Some(&k.prog), &options()) {
        Ok(p) => Ours::Accepted(Arc::new(p)),
        Err(e) => {
            let msg = match &e {
                EbpfError::Rejected { err, .. } => err.to_string(),
                other => other.to_string(),
            };
            let g = match &e {
                EbpfError::Object { .. } => "unsupported: object (relocation, map, BTF)",
                _ => group(&msg),
            };
            Ours::Refused(g, msg)
        }
    }
}

/// `OBJ/PROG -> reason` from tests/data/verifier_suite_accepted.txt.
fn reviewed() -> BTreeMap<String, String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/verifier_suite_accepted.txt");
    std::fs::read_to_string(&p)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, why) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("{l}: OBJ/PROG REASON"));
            assert!(
                why.trim().len() > 20,
                "{k}: the reason must say why it is safe"
            );
            (k.to_string(), why.trim().to_string())
        })
        .collect()
}

/// cpumapd's return value on 64 zero bytes (the test_loader's input).
fn retval(p: &Arc<cpumapd::filter::ebpf::Program>, jit: bool) -> Result<Option<u64>, String> {
    let mut inst = Instance::new(p.clone(), 0, jit).map_err(|e| e.to_string())?;
    let mut pool = Pool::new("vs", 2, 256, 2048).unwrap();
    let mut f = pool.alloc().unwrap();
    f.copy_from(&[0u8; 64]).unwrap();
    Ok(inst.test_run(&mut f, &|_| false))
}

/// Do two loads of a program return different values on 64 zero bytes,
/// the second run on a thread of its own (so its instance, context, stack
/// and maps come from another allocator arena, far from the first's: a
/// value made of an address differs in its upper bits)?
fn differ(
    p: &Arc<cpumapd::filter::ebpf::Program>,
    q: &Arc<cpumapd::filter::ebpf::Program>,
) -> bool {
    let run = |p: &Arc<cpumapd::filter::ebpf::Program>| -> Option<u64> {
        let mut inst = Box::new(Instance::new(p.clone(), 0, false).ok()?);
        let mut pool = Pool::new("vs2", 2, 256, 2048).unwrap();
        let mut f = pool.alloc().unwrap();
        f.copy_from(&[0u8; 64]).unwrap();
        inst.test_run(&mut f, &|_| false)
    };
    let here = run(p);
    let there = std::thread::scope(|s| s.spawn(|| run(q)).join().unwrap());
    here != there
}

const BEGIN: &str = "<!-- verifier-suite:begin (generated by tests/verifier_suite.rs) -->";
const END: &str = "<!-- verifier-suite:end -->";

#[test]
#[ignore = "needs root and the kernel's verifier suite (scripts/get-verifier-suite.sh)"]
fn cpumapd_verdicts_match_the_kernels_verifier_suite() {
    if !nix::unistd::geteuid().is_root() {
        return common::skip("needs root to load programs into the kernel");
    }
    let dir = suite_dir();
    if !dir.join("kverdict").exists() {
        return common::skip(&format!(
            "no verifier suite in {} (run scripts/get-verifier-suite.sh)",
            dir.display()
        ));
    }
    let kernel = kernel_verdicts(&dir);
    assert!(
        kernel.len() > 1000,
        "the suite has {} programs",
        kernel.len()
    );
    let reviewed = reviewed();

    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut refusals: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut holes = Vec::new();
    let mut accepted_listed = BTreeSet::new();
    let mut retval_checked = (0, 0);
    let mut wrong_retval = Vec::new();
    let mut address_dependent = 0;
    // Where the running kernel's verdict is not the test's annotation: the
    // program now loads as XDP, or this kernel's verifier is not 6.12's.
    let moved = kernel
        .iter()
        .filter(|k| !k.why.starts_with("libbpf:"))
        .filter(|k| (k.expect == "success" && !k.ok) || (k.expect == "failure" && k.ok))
        .count();
    for k in &kernel {
        let key = format!("{}/{}", k.obj, k.prog);
        let kv = if k.why.starts_with("libbpf:") {
            "not loaded by libbpf"
        } else if k.ok {
            "kernel accepts"
        } else {
            "kernel refuses"
        };
        let o = ours(&dir, k);
        let ov = match &o {
            Ours::Accepted(_) => "cpumapd accepts",
            Ours::Refused(g, _) if g.starts_with("unsupported") => "cpumapd: unsupported",
            Ours::Refused(..) => "cpumapd refuses",
        };
        *counts.entry((kv, ov)).or_default() += 1;
        match (&o, kv) {
            (Ours::Accepted(_), "kernel refuses") => {
                if reviewed.contains_key(&key) {
                    accepted_listed.insert(key.clone());
                } else {
                    holes.push(format!("{key} (kernel: {})", k.why));
                }
            }
            (Ours::Refused(g, msg), "kernel accepts") => {
                refusals.entry(g).or_default().push(format!("{key}: {msg}"));
            }
            (Ours::Accepted(p), "kernel accepts") => {
                // The interface a frame came in on is the test run's own
                // (the kernel's BPF_PROG_TEST_RUN says lo), and a returned
                // pointer an address of each one's memory: not arithmetic.
                let env = p
                    .verified
                    .ctx_loads
                    .iter()
                    .any(|l| l.1 == CtxField::IngressIfindex)
                    || p.verified.pointer_exit.is_some();
                // A result made of an address (a pointer's bytes read as
                // a number) differs between two loads of the program, each
                // with its own maps and stack: not arithmetic either.
                let addressy = match ours(&dir, k) {
                    Ours::Accepted(q) => differ(p, &q),
                    Ours::Refused(..) => true,
                };
                address_dependent += usize::from(addressy && k.retval.is_some());
                if let Some(want) = k.retval.filter(|_| !env && !addressy) {
                    for jit in [false, true] {
                        match retval(p, jit) {
                            // The JIT refuses what rbpf cannot compile; the
                            // interpreter runs everything.
                            Err(e) if jit => {
                                let _ = e;
                                continue;
                            }
                            Err(e) => wrong_retval.push(format!("{key} (interpreter): {e}")),
                            Ok(got) => {
                                retval_checked.0 += usize::from(!jit);
                                retval_checked.1 += usize::from(jit);
                                // The kernel's retval is the low 32 bits.
                                if got.map(|g| g as u32) != Some(want as u32) {
                                    wrong_retval.push(format!(
                                        "{key} (jit {jit}): cpumapd {got:?}, kernel {want}"
                                    ));
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let stale: Vec<&String> = reviewed
        .keys()
        .filter(|k| !accepted_listed.contains(*k))
        .collect();

    // The report: every disagreement, by group.
    let mut md = String::new();
    let _ = writeln!(md, "# cpumapd vs the kernel's verifier suite\n");
    let _ = writeln!(md, "{}\n", table(&counts, &refusals, retval_checked));
    let _ = writeln!(
        md,
        "Return values not compared because they are made of addresses (they differ between two loads in cpumapd): {address_dependent}.\n"
    );
    let _ = writeln!(
        md,
        "The running kernel's verdict differs from the test's own __success/__failure for {moved} programs (loaded as XDP, or a verifier newer than 6.12's).\n"
    );
    let _ = writeln!(md, "## Kernel refuses, cpumapd accepts (reviewed)\n");
    for k in &accepted_listed {
        let _ = writeln!(md, "- {k}: {}", reviewed[k]);
    }
    for (g, list) in &refusals {
        let _ = writeln!(
            md,
            "\n## Kernel accepts, cpumapd refuses: {g} ({})\n",
            list.len()
        );
        for l in list {
            let _ = writeln!(md, "- {l}");
        }
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let _ = std::fs::create_dir_all(&target);
    std::fs::write(target.join("verifier-suite.md"), &md).unwrap();
    eprintln!("{md}");

    assert!(
        holes.is_empty(),
        "programs the kernel refuses that cpumapd accepts, not in tests/data/verifier_suite_accepted.txt:\n{}",
        holes.join("\n")
    );
    assert!(
        stale.is_empty(),
        "tests/data/verifier_suite_accepted.txt lists programs that are no longer accepted by cpumapd and refused by the kernel: {stale:?}"
    );
    assert!(
        wrong_retval.is_empty(),
        "return values that differ from the kernel's:\n{}",
        wrong_retval.join("\n")
    );
    assert!(
        retval_checked.0 > 100,
        "return values compared: {retval_checked:?}"
    );

    let generated = table(&counts, &refusals, retval_checked);
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/EBPF.md");
    let text = std::fs::read_to_string(&doc).unwrap();
    let (Some(a), Some(b)) = (text.find(BEGIN), text.find(END)) else {
        panic!("docs/EBPF.md has no {BEGIN} ... {END} block");
    };
    let current = text[a + BEGIN.len()..b].trim();
    if current != generated.trim() {
        if std::env::var_os("CPUMAPD_BLESS").is_some() {
            let new = format!(
                "{}{BEGIN}\n{}\n{END}{}",
                &text[..a],
                generated.trim(),
                &text[b + END.len()..]
            );
            std::fs::write(&doc, new).unwrap();
        } else {
            panic!(
                "docs/EBPF.md's verifier-suite table is not what this run measured (CPUMAPD_BLESS=1 rewrites it):\n{generated}"
            );
        }
    }
}

/// The counts as docs/EBPF.md shows them.
fn table(
    counts: &BTreeMap<(&str, &str), usize>,
    refusals: &BTreeMap<&'static str, Vec<String>>,
    retvals: (usize, usize),
) -> String {
    let mut t = String::new();
    let total: usize = counts.values().sum();
    let _ = writeln!(
        t,
        "{total} programs from the kernel's verifier tests (linux-source-6.12), each loaded as XDP:\n"
    );
    let _ = writeln!(
        t,
        "| the kernel | cpumapd accepts | cpumapd refuses | cpumapd: unsupported |"
    );
    let _ = writeln!(t, "|---|---:|---:|---:|");
    for kv in ["kernel accepts", "kernel refuses", "not loaded by libbpf"] {
        let c = |ov: &str| counts.get(&(kv, ov)).copied().unwrap_or(0);
        let _ = writeln!(
            t,
            "| {kv} | {} | {} | {} |",
            c("cpumapd accepts"),
            c("cpumapd refuses"),
            c("cpumapd: unsupported")
        );
    }
    let _ = writeln!(t, "\nWhy cpumapd refuses programs the kernel accepts:\n");
    let _ = writeln!(t, "| group | programs |");
    let _ = writeln!(t, "|---|---:|");
    for (g, l) in refusals {
        let _ = writeln!(t, "| {g} | {} |", l.len());
    }
    let _ = writeln!(
        t,
        "\nReturn values compared with BPF_PROG_TEST_RUN's: {} interpreted, {} JIT-compiled, all equal.",
        retvals.0, retvals.1
    );
    t
}
