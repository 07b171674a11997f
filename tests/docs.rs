//! The docs' options and defaults, checked against the code: every option
//! docs/ and the README name exists, and every default they or `--help`
//! state is the one a run gets.
//!
//! A default is checked by what it means: a plan resolved with the option
//! given at its stated default equals the plan resolved without it. A
//! range `(1..=N)` in `--help` is checked the same way: N is accepted and
//! N + 1 refused.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;
use common::{doc_pages, skip};
use cpumapd::config::{AppArgs, Plan};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `--long` option of `cpumapd --help` (EAL, application, ctl).
fn cpumapd_options() -> BTreeSet<String> {
    long_options(&cpumapd::cli::help())
}

/// Every `--long` option token in `text`.
fn long_options(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("--") {
        let before = text[..i].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-') {
            continue;
        }
        let name: String = text[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if name.len() > 1 && name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
            out.insert(format!("--{name}"));
        }
    }
    out
}

/// scripts/loadtest.sh's options, from its own `case` labels.
fn loadtest_options() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("scripts/loadtest.sh")).unwrap();
    text.lines()
        .filter_map(|l| l.trim().split(')').next())
        .flat_map(|labels| labels.split('|'))
        .filter(|l| l.starts_with("--") && !l.contains(' '))
        .map(String::from)
        .collect()
}

/// Options of other tools the docs show in commands around cpumapd's.
const OTHER_TOOLS: &[&str] = &[
    "--features",        // cargo
    "--release",         // cargo
    "--include-ignored", // cargo test
    "--test",            // cargo test
    "--lib",             // cargo test
    "--bench",           // cargo bench
    "--example",         // cargo
    "--no-run",          // cargo
    "--help",            // every tool
    "--dry-run",         // dpdk-hugepages.py
];

/// The text of inline code spans (`...`) and of the lines of fenced code
/// blocks that run cpumapd (from the word `cpumapd` to the end of its
/// command).
fn cpumapd_code(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            if let Some(i) = line.find("cpumapd ") {
                let cmd = &line[i..];
                let end = cmd.find(['|', ';', '>', '#', '&']).unwrap_or(cmd.len());
                out.push(cmd[..end].to_string());
            }
            continue;
        }
        for (k, span) in line.split('`').enumerate() {
            if k % 2 == 1 && span.trim_start().starts_with("--") {
                out.push(span.to_string());
            }
        }
    }
    out
}

#[test]
fn every_option_the_docs_name_is_an_option() {
    let known: BTreeSet<String> = cpumapd_options()
        .into_iter()
        .chain(loadtest_options())
        .chain(OTHER_TOOLS.iter().map(|s| s.to_string()))
        .collect();
    assert!(known.contains("--qsize") && known.contains("--lcores") && known.contains("--rates"));
    let mut unknown = Vec::new();
    let mut seen = 0;
    for (page, text) in doc_pages() {
        for code in cpumapd_code(&text) {
            for opt in long_options(&code) {
                seen += 1;
                if !known.contains(&opt) {
                    unknown.push(format!("{}: {opt} (in `{code}`)", page.display()));
                }
            }
        }
    }
    assert!(seen > 100, "the scan finds the docs' options ({seen})");
    assert!(
        unknown.is_empty(),
        "docs name options cpumapd does not have:\n{}",
        unknown.join("\n")
    );
}

/// A native plan from `app` options (after the EAL options every check
/// shares).
fn plan(app: &[&str]) -> Result<Plan, String> {
    let mut args: Vec<String> = ["--lcores", "0@0,1@1", "--vdev", "net_gen0", "--"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(app.iter().map(|s| s.to_string()));
    Plan::from_args(&args).map_err(|e| e.to_string())
}

/// A plan as text, an endpoint given the same as one defaulted (the
/// difference is only whether a failure to open is fatal).
fn shape(p: &Plan) -> String {
    format!("{p:?}").replace("Given(", "Default(")
}

/// `opt value` is what a run gets without `opt`.
fn is_default(opt: &str, value: &str) -> Result<(), String> {
    let without = plan(&[]).map_err(|e| format!("the base plan: {e}"))?;
    let with = plan(&[opt, value]).map_err(|e| format!("{opt} {value}: {e}"))?;
    if shape(&with) == shape(&without) {
        Ok(())
    } else {
        Err(format!(
            "{opt} {value} changes the plan: it is not the default"
        ))
    }
}

/// The word after "default" in `s` (a number, an address, a path).
fn stated_default(s: &str) -> Option<String> {
    let at = s.find("default ")? + "default ".len();
    let v: String = s[at..]
        .trim_start_matches('`')
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, ')' | ',' | ';' | '`'))
        .collect();
    let v = v.trim_end_matches('.').to_string();
    let literal = v
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '/');
    literal.then_some(v)
}

#[test]
fn defaults_and_ranges_in_help_are_what_a_run_gets() {
    let checked = help_defaults(false);
    for want in [
        "--bulk-size 8",
        "--max-entries 128",
        "--metrics 127.0.0.1:9419",
        "--qsize 1..=16384",
    ] {
        assert!(
            checked.iter().any(|c| c == want),
            "{want} not found in --help: {checked:?}"
        );
    }
}

/// The defaults of `--control` and `--state-dir` are root's when run as
/// root ("... as root, else ..."): checked here, as root.
#[test]
#[ignore = "needs root: the defaults --help and docs/ give for root"]
fn root_defaults_in_help_and_docs_are_what_a_run_gets_as_root() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root: the defaults --help and docs/ give for root");
    }
    let checked = help_defaults(true);
    for want in [
        "--control /run/cpumapd.sock",
        "--state-dir /var/lib/cpumapd",
    ] {
        assert!(checked.iter().any(|c| c == want), "{want}: {checked:?}");
    }
    let found = docs_defaults(true);
    assert!(
        found.iter().any(|f| f == "--state-dir /var/lib/cpumapd"),
        "{found:?}"
    );
}

/// Checks `--help`'s stated defaults (root's only, or all others and the
/// ranges) and returns what it checked.
fn help_defaults(root_defaults: bool) -> Vec<String> {
    let mut checked = Vec::new();
    let mut wrong = Vec::new();
    for arg in AppArgs::command().get_arguments() {
        let (Some(long), Some(help)) = (arg.get_long(), arg.get_help()) else {
            continue;
        };
        let help = help.to_string();
        let opt = format!("--{long}");
        if let Some(v) = stated_default(&help) {
            // A path default that holds for root only ("... as root").
            let as_root = help.contains(&format!("{v} as root"));
            if as_root == root_defaults {
                checked.push(format!("{opt} {v}"));
                if let Err(e) = is_default(&opt, &v) {
                    wrong.push(e);
                }
            }
        }
        if let Some(r) = help.split("(1..=").nth(1).filter(|_| !root_defaults) {
            let n: u64 = r
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap();
            checked.push(format!("{opt} 1..={n}"));
            if let Err(e) = plan(&[&opt, &n.to_string()]) {
                wrong.push(format!("{opt} {n} is in the stated range but refused: {e}"));
            }
            if plan(&[&opt, &(n + 1).to_string()]).is_ok() {
                wrong.push(format!(
                    "{opt} {} is past the stated range but accepted",
                    n + 1
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "--help states wrong defaults or ranges:\n{}",
        wrong.join("\n")
    );
    checked
}

/// `--opt VALUE` followed by "(default)" or "(the default)", and `--opt
/// ...` followed by "default `VALUE`", in docs/ and the README.
fn prose_defaults(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let parts: Vec<&str> = text.split('`').collect();
    for k in (1..parts.len()).step_by(2) {
        // `--opt VALUE` or `cpumapd --opt VALUE`
        let mut words = parts[k].split_whitespace().skip_while(|w| *w == "cpumapd");
        let Some(opt) = words.next().filter(|o| o.starts_with("--")) else {
            continue;
        };
        let value = words.next();
        let after = parts.get(k + 1).copied().unwrap_or("");
        let after = after.trim_start_matches([',', ' ', '\n']);
        if let Some(v) = value.filter(|v| !v.chars().all(|c| c.is_ascii_uppercase() || c == ':'))
            && (after.starts_with("(default)") || after.starts_with("(the default)"))
        {
            out.push((opt.to_string(), v.to_string()));
        } else if (after.starts_with("default ") || after.starts_with("(default "))
            && after.trim_start_matches('(') == "default "
            && let Some(v) = parts.get(k + 2)
        {
            // `--opt ...` (default `VALUE`, or default `--other VALUE`
            let mut w = v.split_whitespace();
            match (w.next(), w.next()) {
                (Some(o), Some(v)) if o.starts_with("--") => out.push((o.into(), v.into())),
                _ => out.push((opt.to_string(), v.to_string())),
            }
        }
    }
    out
}

#[test]
fn defaults_the_docs_state_are_what_a_run_gets() {
    let found = docs_defaults(false);
    for want in [
        "--idle adaptive",
        "--kernel-mac rewrite",
        "--metrics 127.0.0.1:9419",
    ] {
        assert!(
            found.iter().any(|f| f == want),
            "{want} not found: {found:?}"
        );
    }
}

/// Checks the defaults docs/ and the README state (root's only, or all
/// others) and returns what it checked.
fn docs_defaults(root_defaults: bool) -> Vec<String> {
    let mut found = Vec::new();
    let mut wrong = Vec::new();
    for (page, text) in doc_pages() {
        for (opt, v) in prose_defaults(&text) {
            if !cpumapd_options().contains(&opt) {
                continue; // another tool's (loadtest.sh's --out)
            }
            // Root's default where the docs give root's ("... as root").
            if text.contains(&format!("`{v}` as root")) != root_defaults {
                continue;
            }
            found.push(format!("{opt} {v}"));
            if let Err(e) = is_default(&opt, &v) {
                wrong.push(format!("{}: {e}", page.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the docs state wrong defaults:\n{}",
        wrong.join("\n")
    );
    found
}

#[test]
fn a_wrong_default_is_caught() {
    assert!(is_default("--bulk-size", "8").is_ok());
    assert!(is_default("--bulk-size", "9").is_err());
    assert!(is_default("--idle", "spin").is_err());
    let text = "the `--idle spin` (default) policy, `--metrics ADDR:PORT` (default `1.2.3.4:5`)";
    assert_eq!(
        prose_defaults(text),
        [
            ("--idle".to_string(), "spin".to_string()),
            ("--metrics".to_string(), "1.2.3.4:5".to_string())
        ]
    );
}
