//! The architecture, checked, for both crates of the workspace (the
//! dataplane in `src/`, the eBPF engine in `crates/ebpf/src/`): the layer
//! order of each crate's modules (docs/ARCHITECTURE.md, "Layers", which
//! must list the same layers), the one door between the crates, the
//! length of non-test functions, and the index of memory-ordering labels.
//!
//! Both read the source with `syn`, so a `use crate::…` inside a brace group,
//! a path in an expression and a path inside a macro call all count.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// Bottom up: a module may use modules of its own layer or below, never above.
const LAYERS: &[&[&str]] = &[
    &["ids", "sync", "wire", "counters", "kv"],
    &["ring", "dpdk"],
    &["frame"],
    &["port", "exception", "filter"],
    &["cpumap"],
    &["config"],
    &["lcore"],
    &["telemetry", "control", "cli"],
];

/// The eBPF engine's layers (crates/ebpf), bottom up, the same way. Its
/// root (lib.rs: `Program`, `Instance`, loading) is above them all.
const ENGINE_LAYERS: &[&[&str]] = &[
    &["abi", "buffer", "clock", "insn"],
    &["maps", "printk"],
    &["interp"],
    &["verifier"],
    &["calls", "inline", "jit", "globals"],
];

/// One crate of the workspace: its source directory, its layers and the
/// row prefix of its layer table in docs/ARCHITECTURE.md.
struct Crate {
    src: &'static str,
    layers: &'static [&'static [&'static str]],
    row: char,
}

const CRATES: [Crate; 2] = [
    Crate {
        src: "src",
        layers: LAYERS,
        row: 'L',
    },
    Crate {
        src: "crates/ebpf/src",
        layers: ENGINE_LAYERS,
        row: 'E',
    },
];

/// Longest non-test function, in lines (signature to closing brace).
const MAX_FN_LINES: usize = 120;

fn layer_of(layers: &[&[&str]], module: &str) -> Option<usize> {
    layers.iter().position(|l| l.contains(&module))
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every source file of the workspace.
fn all_src_files() -> Vec<PathBuf> {
    CRATES.iter().flat_map(|c| src_files(c.src)).collect()
}

fn src_files(src: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(src), &mut out);
    out.sort();
    out
}

/// `src/a/b.rs` -> ["a", "b"]; `src/a/mod.rs` -> ["a"]; `src/lib.rs` -> [].
fn module_path(src: &str, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root().join(src)).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn is_test_file(file: &Path) -> bool {
    let name = file.file_name().unwrap().to_string_lossy();
    name == "tests.rs" || name.ends_with("_tests.rs")
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && {
            let s = a.meta.to_token_stream_string();
            s.contains("test") || s.contains("loom")
        }
    })
}

trait TokenString {
    fn to_token_stream_string(&self) -> String;
}
impl TokenString for syn::Meta {
    fn to_token_stream_string(&self) -> String {
        quote::ToTokens::to_token_stream(self).to_string()
    }
}

/// Every top-level module a file names through `crate::` (or `super::` that
/// climbs to the crate root), outside `#[cfg(test)]` items.
struct Uses<'a> {
    module: &'a [String],
    found: BTreeSet<(String, usize)>,
}

impl Uses<'_> {
    fn resolve(&mut self, segs: &[String], line: usize) {
        let mut base: Vec<String> = self.module.to_vec();
        let mut rest = segs;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop();
                    rest = &rest[1..];
                }
            }
            _ => return,
        }
        let top = base.first().or(rest.first());
        if let Some(t) = top {
            self.found.insert((t.clone(), line));
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, t: &syn::UseTree) {
        match t {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.resolve(&prefix.clone(), n.ident.span().start().line);
                prefix.pop();
            }
            syn::UseTree::Rename(n) => {
                prefix.push(n.ident.to_string());
                self.resolve(&prefix.clone(), n.ident.span().start().line);
                prefix.pop();
            }
            syn::UseTree::Glob(g) => {
                self.resolve(&prefix.clone(), g.star_token.spans[0].start().line)
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Uses<'_> {
    fn visit_item(&mut self, i: &'ast syn::Item) {
        let attrs = match i {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(f) => &f.attrs,
            syn::Item::Use(u) => &u.attrs,
            _ => return syn::visit::visit_item(self, i),
        };
        if !is_cfg_test(attrs) {
            syn::visit::visit_item(self, i);
        }
    }
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }
    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(s) = p.segments.first() {
            self.resolve(&segs, s.ident.span().start().line);
        }
        syn::visit::visit_path(self, p);
    }
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        let toks: Vec<proc_macro2::TokenTree> = flatten(m.tokens.clone());
        for w in toks.windows(4) {
            if let (
                proc_macro2::TokenTree::Ident(a),
                proc_macro2::TokenTree::Punct(p1),
                proc_macro2::TokenTree::Punct(p2),
                proc_macro2::TokenTree::Ident(b),
            ) = (&w[0], &w[1], &w[2], &w[3])
                && a == "crate"
                && p1.as_char() == ':'
                && p2.as_char() == ':'
            {
                self.resolve(&["crate".to_string(), b.to_string()], a.span().start().line);
            }
        }
        syn::visit::visit_macro(self, m);
    }
}

fn flatten(ts: proc_macro2::TokenStream) -> Vec<proc_macro2::TokenTree> {
    let mut out = Vec::new();
    for t in ts {
        match t {
            proc_macro2::TokenTree::Group(g) => out.extend(flatten(g.stream())),
            t => out.push(t),
        }
    }
    out
}

fn parse(file: &Path) -> syn::File {
    let text = std::fs::read_to_string(file).unwrap();
    syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

#[test]
fn no_module_imports_a_layer_above_it() {
    for c in &CRATES {
        no_upward_imports(c);
    }
}

fn no_upward_imports(c: &Crate) {
    let layer_of = |m: &str| layer_of(c.layers, m);
    let mut bad = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in src_files(c.src) {
        if is_test_file(&file) {
            continue;
        }
        let module = module_path(c.src, &file);
        let Some(me) = module.first() else { continue };
        let my_layer = layer_of(me).unwrap_or_else(|| {
            panic!(
                "module {me} of {} is in no layer (and docs/ARCHITECTURE.md)",
                c.src
            )
        });
        let mut v = Uses {
            module: &module,
            found: BTreeSet::new(),
        };
        v.visit_file(&parse(&file));
        for (used, line) in v.found {
            if &used == me {
                continue;
            }
            let Some(l) = layer_of(&used) else {
                continue; // an item of lib.rs, not a module
            };
            edges.entry(me.clone()).or_default().insert(used.clone());
            if l > my_layer {
                bad.push(format!(
                    "{}:{line}: {me} (layer {my_layer}) uses {used} (layer {l})",
                    file.display()
                ));
            }
        }
    }
    // Within a layer, modules may use each other only one way.
    for (a, uses) in &edges {
        for b in uses {
            if edges.get(b).is_some_and(|u| u.contains(a)) && a < b {
                bad.push(format!("{a} and {b} use each other (a cycle in one layer)"));
            }
        }
    }
    assert!(bad.is_empty(), "upward imports:\n{}", bad.join("\n"));
}

#[test]
fn every_layer_module_exists_and_lib_rs_lists_them() {
    for c in &CRATES {
        let lib = std::fs::read_to_string(root().join(c.src).join("lib.rs")).unwrap();
        for m in c.layers.iter().flat_map(|l| l.iter()) {
            assert!(
                lib.contains(&format!("mod {m};")),
                "{}/lib.rs does not declare module {m} of the layer list",
                c.src
            );
        }
    }
}

/// The engine is a crate of its own: it depends on no part of cpumapd and
/// on nothing but the crates made for its job, and the dataplane reaches
/// it through one door (`filter::ebpf`, plus the ABI numbers as
/// `bpf_abi`), so the interface stays the small one lib.rs documents.
#[test]
fn the_engine_stands_alone_and_the_dataplane_uses_it_through_one_door() {
    let manifest = std::fs::read_to_string(root().join("crates/ebpf/Cargo.toml")).unwrap();
    let deps: toml::Table = manifest.parse::<toml::Table>().unwrap()["dependencies"]
        .as_table()
        .unwrap()
        .clone();
    let names: BTreeSet<&str> = deps.keys().map(String::as_str).collect();
    let allowed = BTreeSet::from(["aya-obj", "nix", "object", "rbpf", "thiserror"]);
    assert!(
        names.is_subset(&allowed),
        "crates/ebpf depends on {names:?}; allowed: {allowed:?}"
    );
    for file in src_files("crates/ebpf/src") {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("cpumapd::"),
            "{} names the dataplane",
            file.display()
        );
    }
    let mut doors = Vec::new();
    for file in src_files("src") {
        let text = std::fs::read_to_string(&file).unwrap();
        if text.contains("cpumapd_ebpf") {
            doors.push(file.strip_prefix(root()).unwrap().display().to_string());
        }
    }
    assert_eq!(doors, ["src/filter/mod.rs", "src/lib.rs"]);
}

/// Non-test functions longer than [`MAX_FN_LINES`].
struct LongFns<'a> {
    file: &'a Path,
    found: Vec<String>,
}

impl LongFns<'_> {
    fn check(&mut self, name: &syn::Ident, attrs: &[syn::Attribute], span: proc_macro2::Span) {
        if is_cfg_test(attrs) || attrs.iter().any(|a| a.path().is_ident("test")) {
            return;
        }
        let lines = span.end().line - span.start().line + 1;
        if lines > MAX_FN_LINES {
            self.found.push(format!(
                "{}:{}: fn {name} is {lines} lines",
                self.file.display(),
                span.start().line
            ));
        }
    }
}

impl<'ast> Visit<'ast> for LongFns<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_cfg_test(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        use syn::spanned::Spanned;
        self.check(&f.sig.ident, &f.attrs, f.span());
        syn::visit::visit_item_fn(self, f);
    }
    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        use syn::spanned::Spanned;
        self.check(&f.sig.ident, &f.attrs, f.span());
        syn::visit::visit_impl_item_fn(self, f);
    }
    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        use syn::spanned::Spanned;
        self.check(&f.sig.ident, &f.attrs, f.span());
        syn::visit::visit_trait_item_fn(self, f);
    }
}

#[test]
fn no_function_is_longer_than_the_limit() {
    let mut long = Vec::new();
    for file in all_src_files() {
        if is_test_file(&file) {
            continue;
        }
        let mut v = LongFns {
            file: &file,
            found: Vec::new(),
        };
        v.visit_file(&parse(&file));
        long.extend(v.found);
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines (split them into named steps):\n{}",
        long.join("\n")
    );
}

fn architecture_md() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md"))
        .expect("docs/ARCHITECTURE.md")
}

#[test]
fn the_architecture_page_lists_the_layers_this_test_enforces() {
    for c in &CRATES {
        layer_table_matches(c);
    }
}

fn layer_table_matches(c: &Crate) {
    let doc = architecture_md();
    let mut rows = Vec::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | L3 | `port`, `exception`, `filter` | what |
        if cells.len() > 3 && cells[1].starts_with(c.row) && cells[1][1..].parse::<usize>().is_ok()
        {
            let mods: Vec<String> = cells[2]
                .split(',')
                .map(|m| m.trim().trim_matches('`').to_string())
                .collect();
            rows.push((cells[1].to_string(), mods));
        }
    }
    let want: Vec<(String, Vec<String>)> = c
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mods = l.iter().map(|m| m.to_string()).collect();
            (format!("{}{i}", c.row), mods)
        })
        .collect();
    assert_eq!(
        rows, want,
        "docs/ARCHITECTURE.md's layer table for {} and this test's differ",
        c.src
    );
}

#[test]
fn every_memory_ordering_label_is_in_the_index() {
    // `// R1: Release; pairs with ...`: a label is letters and digits
    // before a colon, then an ordering.
    let doc = architecture_md();
    let mut missing = Vec::new();
    let mut found = 0;
    for file in all_src_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let rel = file
            .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .display()
            .to_string();
        for line in text.lines() {
            let Some((_, c)) = line.split_once("// ") else {
                continue;
            };
            let Some((label, rest)) = c.split_once(": ") else {
                continue;
            };
            let is_label = (2..=4).contains(&label.len())
                && label
                    .chars()
                    .next()
                    .is_some_and(|ch| ch.is_ascii_uppercase())
                && label[1..].chars().all(|ch| ch.is_ascii_digit())
                && label.len() > 1;
            let ordering = ["Release", "Acquire", "SeqCst", "AcqRel"]
                .iter()
                .any(|o| rest.starts_with(o));
            if !(is_label && ordering) {
                continue;
            }
            found += 1;
            let row = doc.lines().find(|l| l.starts_with(&format!("| `{rel}` |")));
            let listed = row.is_some_and(|r| {
                r.split('|').nth(2).is_some_and(|cell| {
                    cell.split_whitespace()
                        .any(|w| w.trim_end_matches(',') == label)
                })
            });
            if !listed {
                missing.push(format!("{rel}: {label}"));
            }
        }
    }
    assert!(found > 20, "the label scan finds the labels ({found})");
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "labels missing from docs/ARCHITECTURE.md's index: {missing:?}"
    );
}

#[test]
fn docs_links_resolve_and_the_test_table_lists_every_test_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    for (page, text) in common::doc_pages() {
        for (i, _) in text.match_indices("](") {
            let target = text[i + 2..].split([')', '#']).next().unwrap_or("");
            if target.is_empty() || target.contains("://") {
                continue;
            }
            if !page.parent().unwrap().join(target).exists() {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "links to nothing: {broken:?}");
    let table = std::fs::read_to_string(root.join("docs/TESTS.md")).unwrap();
    let mut missing = Vec::new();
    for e in std::fs::read_dir(root.join("tests")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".rs") && !table.contains(&format!("`tests/{name}`")) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/TESTS.md does not list {missing:?}"
    );
}
