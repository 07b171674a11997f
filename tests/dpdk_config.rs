//! Every example config in dpdk-config/ parses and validates.

use cpumapd::config::Plan;

#[test]
fn every_example_config_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dpdk-config");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let args = vec![
                "--".to_string(),
                "--config".to_string(),
                p.display().to_string(),
            ];
            let plan = Plan::from_args(&args).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(!plan.targets.is_empty(), "{}", p.display());
            n += 1;
        }
    }
    assert!(n >= 3, "found {n} configs");
}
