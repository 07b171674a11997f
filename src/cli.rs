//! `cpumapd --help` (and `cpumapd -- --help`): the one command-line
//! reference, generated from the tables the parsers use: clap's options
//! for the application arguments, the EAL option lists, each native
//! driver's keys, each exception path's keys, the modes and `ctl`'s
//! commands. tests/cli.rs checks that every one of them is here and in
//! docs/CLI.md.

use std::fmt::Write;

use clap::CommandFactory;

use crate::config::{AppArgs, eal};
use crate::control::ctl::CtlArgs;
use crate::exception::{FAULT_KEYS, VIRTIO_KEYS, tap::TAP_KEYS};
use crate::filter::Mode;
use crate::kv;
use crate::port::{Driver, fault};

/// The full help text.
pub fn help() -> String {
    let mut out = String::from(
        "cpumapd: the BPF cpumap as a poll-mode dataplane

Usage: cpumapd                                   run the demo (generator -> l4-hash -> targets -> drop)
       cpumapd [EAL options] -- [options]         a run (the EAL options as DPDK's, below)
       cpumapd --check-config FILE [EAL options] [-- options]   validate a profile, print its plan
       cpumapd ctl [--control PATH] COMMAND       change and inspect a running cpumapd
",
    );
    eal_section(&mut out);
    ports_section(&mut out);
    out.push_str(
        "\nOptions (after --; a profile's [app] table takes the same names without dashes):\n",
    );
    out.push_str(&options());
    exception_section(&mut out);
    let modes: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
    let _ = writeln!(
        out,
        "\nModes (--mode): {} (default {})",
        modes.join(", "),
        Mode::default().name()
    );
    out.push_str("\nControl (cpumapd ctl [--control PATH] ...):\n");
    ctl_commands(&CtlArgs::command(), "", &mut out);
    out.push_str(
        "\nProfiles (--config FILE, TOML): [eal] l | lcores = \"..\", vdev = [..], args = [..];\n\
         [app] every option above by its long name without dashes (prog-set = [\"nr_cpus=4\"]);\n\
         the command line wins option by option (a list whole). dpdk-config/ has examples.\n",
    );
    out
}

fn eal_section(out: &mut String) {
    out.push_str(
        "\nEAL options (before --), parsed natively so one command line runs either build:\n\
         \x20 -l LIST | --lcores MAP    lcores and their CPUs (--lcores 0@0,1@1,2@(2,3))\n\
         \x20 --vdev DRIVER[,key=value...]   a port (native drivers below)\n",
    );
    let _ = writeln!(
        out,
        "  accepted, no effect natively: {}",
        eal::NATIVE_NO_OP.join(" ")
    );
    let _ = writeln!(
        out,
        "  the DPDK build passes every DPDK 22.11 EAL option to rte_eal_init:\n    {}\n    {}",
        eal::WITH_VALUE.join(" "),
        eal::FLAGS.join(" ")
    );
}

fn ports_section(out: &mut String) {
    out.push_str("\nPorts (--vdev, native build; numbered in --vdev order):\n");
    for d in Driver::ALL {
        let _ = writeln!(out, "  {}<N>: {}", d.name(), d.about());
        out.push_str(&kv::render(d.keys(), 6));
    }
    out.push_str("  any native port: injected receive faults, each counted\n");
    out.push_str(&kv::render(fault::FAULT_KEYS, 6));
}

/// clap's list of the application options.
fn options() -> String {
    let help = AppArgs::command()
        .help_template("{options}")
        .render_help()
        .to_string();
    help.lines()
        .filter(|l| !l.trim_start().starts_with("-h, --help"))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn exception_section(out: &mut String) {
    out.push_str(
        "\nException paths (--exception; default drop):\n\
         \x20 drop                         count and free\n\
         \x20 pcap:FILE                    FILE-lcoreN.pcap per delivering lcore\n\
         \x20 tap:IFNAME[,key=value...]    a multi-queue TAP, one queue per delivering lcore (CAP_NET_ADMIN)\n",
    );
    out.push_str(&kv::render(TAP_KEYS, 6));
    out.push_str(
        "  virtio-user:PATH[,key=value...]   DPDK build: vhost-kernel (/dev/vhost-net) or a vhost-user socket\n",
    );
    out.push_str(&kv::render(VIRTIO_KEYS, 6));
    out.push_str(
        "  fault:key=value,...          the null stack with injected refusals (tests, drills)\n",
    );
    out.push_str(&kv::render(FAULT_KEYS, 6));
    out.push_str("  kni is refused: DPDK removed KNI (use tap: or virtio-user:)\n");
}

/// `ctl`'s commands as `map dump|lookup|...` lines, from its clap tree.
fn ctl_commands(cmd: &clap::Command, prefix: &str, out: &mut String) {
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let path = format!("{prefix}{}", sub.get_name());
        if sub.has_subcommands() {
            ctl_commands(sub, &format!("{path} "), out);
            continue;
        }
        let line = format!("{path}{}", ctl_args(sub));
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        if line.len() > 44 {
            let _ = writeln!(out, "  {line}\n  {:<44} {about}", "");
        } else {
            let _ = writeln!(out, "  {line:<44} {about}");
        }
    }
}

/// A ctl command's arguments as a usage line: `KEY QSIZE [--exist]
/// [--prog PROG]`, from its clap definition.
fn ctl_args(cmd: &clap::Command) -> String {
    let mut s = String::new();
    for a in cmd.get_arguments().filter(|a| a.get_id() != "help") {
        let value = a
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_else(|| a.get_id().as_str().to_uppercase());
        if a.is_positional() {
            let _ = write!(s, " {value}");
        } else if let Some(long) = a.get_long() {
            if a.get_action().takes_values() {
                let _ = write!(s, " [--{long} {value}]");
            } else {
                let _ = write!(s, " [--{long}]");
            }
        }
    }
    s
}
