//! Remote redirect (xdp-bench's `redirect-cpu -r redirect -D IF`): a cpumap
//! entry's program sends frames out of another interface from the target
//! lcore. Three namespaces: S sends raw frames into veth vs -> va; cpumapd
//! in A polls va and its target redirects every frame out of b0; the peer
//! b1 in B counts what arrives. IPv6 is off everywhere, so nothing but the
//! test's frames crosses the links.
//!
//! Needs root (namespaces, veth, packet sockets): `#[ignore]`d with that
//! reason in a plain `cargo test`; CI runs them, where a skip fails.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Netns, run_ok as run, skip, veth};
use serde_json::Value;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// S --vs/va--> A --b0/b1--> B; removed on drop.
struct Topo {
    s: Netns,
    a: Netns,
    b: Netns,
    dir: tempfile::TempDir,
}

impl Topo {
    fn new() -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            skip("needs root for network namespaces, veth and packet sockets");
            return None;
        }
        let t = Topo {
            s: Netns::without_ipv6("cmRs"),
            a: Netns::without_ipv6("cmRa"),
            b: Netns::without_ipv6("cmRb"),
            dir: tempfile::tempdir().unwrap(),
        };
        veth(&t.s, "vs", &t.a, "va");
        veth(&t.a, "b0", &t.b, "b1");
        Some(t)
    }

    /// A counter of an interface in a namespace, from sysfs.
    fn stat(&self, ns: &str, dev: &str, name: &str) -> u64 {
        let o = Command::new("ip")
            .args(["netns", "exec", ns, "cat"])
            .arg(format!("/sys/class/net/{dev}/statistics/{name}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    }

    /// Runs cpumapd in A on va with `app` args appended; sends `frames`
    /// raw frames from S once it is up; returns its summary and stderr.
    fn run_with(&self, app: &[&str], frames: usize) -> (Value, String) {
        let (s, e, _) = self.run_dumping(app, frames, &[]);
        (s, e)
    }

    /// [`Topo::run_with`], and the eBPF maps `maps` (`ctl prog map dump`)
    /// read before it stops.
    fn run_dumping(
        &self,
        app: &[&str],
        frames: usize,
        maps: &[&str],
    ) -> (Value, String, Vec<Value>) {
        let summary = self.dir.path().join("summary.json");
        let sock = self.dir.path().join("ctl.sock");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.a, env!("CARGO_BIN_EXE_cpumapd")])
            .args(["--lcores", "0@0,1@1", "--vdev", "net_af_packet0,iface=va"])
            .args([
                "--",
                "--mode",
                "no-touch",
                "--cpu",
                "1",
                "--exception",
                "drop",
            ])
            .args(["--metrics", "off", "--state-dir", "off", "--interval", "0"])
            .arg("--control")
            .arg(&sock)
            .arg("--summary-json")
            .arg(&summary)
            .args(app)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().unwrap();
        common::wait_for_control(&sock);
        send_raw(&self.s, "vs", frames);
        // Until the target has handled every frame that arrived (or 10 s).
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let out = Command::new(env!("CARGO_BIN_EXE_cpumapd"))
                .arg("ctl")
                .arg("--control")
                .arg(&sock)
                .arg("summary")
                .output()
                .unwrap();
            if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout)
                && v["target_processed"].as_u64() >= Some(frames as u64)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let dumps = maps
            .iter()
            .map(|m| {
                serde_json::from_str(&common::ctl_ok(&sock, &["prog", "map", "dump", m])).unwrap()
            })
            .collect();
        common::sigterm(&child);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            out.status.success(),
            "cpumapd exit {:?}: {stderr}",
            out.status
        );
        common::assert_no_pool_leak(&out.stderr);
        let v = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
        (v, stderr, dumps)
    }
}

/// Sends `n` distinct 64-byte IPv4/UDP frames out of `dev` in `ns` through
/// a packet socket, a few at a time (paced, so the RX ring never fills).
fn send_raw(ns: &str, dev: &str, n: usize) {
    let path = format!("/var/run/netns/{ns}");
    let dev = std::ffi::CString::new(dev).unwrap();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        // SAFETY: plain socket(2), checked; owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is new and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: dev is a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(dev.as_ptr()) };
        // SAFETY: sockaddr_ll is plain data.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_ifindex = ifindex as i32;
        for i in 0..n {
            let mut frame =
                common::udp4([10, 9, 0, 2], [10, 9, 0, 1], 4000 + (i % 64) as u16, 7000);
            frame.resize(64, 0);
            frame[60..64].copy_from_slice(&(i as u32).to_be_bytes());
            // SAFETY: frame and sa are valid for the call.
            let r = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&sa as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(r, 64, "send: {}", std::io::Error::last_os_error());
            if i % 64 == 63 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    })
    .join()
    .unwrap();
}

/// Captures frames arriving on `dev` in namespace `ns` (up to `max`, for at
/// most `secs` seconds) on a thread; join it for their bytes.
fn capture(ns: &str, dev: &str, max: usize, secs: u64) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    // Bound before this returns: nothing sent after it is missed.
    let fd = common::packet_socket_in(ns, dev);
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    common::set_sock_opt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv);
    std::thread::spawn(move || {
        let (mut out, t0) = (Vec::new(), Instant::now());
        let mut buf = [0u8; 2048];
        while out.len() < max && t0.elapsed() < Duration::from_secs(secs) {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                out.push(buf[..n as usize].to_vec());
            }
        }
        out
    })
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

fn reason(v: &Value, r: &str) -> u64 {
    v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["drop_reasons"][r].as_u64().unwrap())
        .sum()
}

/// docs/ARCHITECTURE.md's accounting identities, by the summary's own check.
fn assert_identity(s: &Value) {
    cpumapd::telemetry::Summary::check_json(s, true).unwrap_or_else(|e| panic!("{e}: {s}"));
}

const FRAMES: usize = 5_000;

#[test]
#[ignore = "needs root (namespaces, veth, packet sockets): cargo test -- --include-ignored"]
fn remote_action_redirect_sends_every_frame_out_of_the_interface() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(t) = Topo::new() else { return };
    let before = t.stat(&t.b, "b1", "rx_packets");
    let (s, _) = t.run_with(&["--remote-action", "redirect:b0"], FRAMES);
    assert_identity(&s);
    let arrived = t.stat(&t.b, "b1", "rx_packets") - before;
    assert_eq!(n(&s, "rx") + n(&s, "imissed"), FRAMES as u64, "{s}");
    assert!(
        n(&s, "rx") >= FRAMES as u64 * 99 / 100,
        "the port took them: {s}"
    );
    assert_eq!(n(&s, "remote_redirect"), arrived, "sent = arrived: {s}");
    assert_eq!(
        arrived,
        n(&s, "target_processed"),
        "every frame went out: {s}"
    );
    assert_eq!(
        s["targets"][0]["remote_redirect"].as_u64(),
        Some(arrived),
        "per target"
    );
}

#[test]
#[ignore = "needs root (namespaces, veth, packet sockets): cargo test -- --include-ignored"]
fn a_redirect_to_a_down_interface_is_counted_as_redirect_failed() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(t) = Topo::new() else { return };
    run("ip", &["-n", &t.a, "link", "set", "b0", "down"]);
    let (s, _) = t.run_with(&["--remote-action", "redirect:b0"], 500);
    assert_identity(&s);
    assert_eq!(n(&s, "remote_redirect"), 0, "{s}");
    assert_eq!(
        reason(&s, "redirect_failed"),
        n(&s, "target_processed"),
        "{s}"
    );
    assert!(n(&s, "target_processed") > 0);
}

#[test]
#[ignore = "needs root and xdp-tools 1.6.3's objects: XDPTOOLS=DIR (../shared/xdp-tools/build.sh DIR) cargo test -- --include-ignored"]
fn xdp_benchs_own_cpumap_redirect_runs_unchanged_with_its_devmap_filled() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(dir) = std::env::var_os("XDPTOOLS") else {
        skip("needs XDPTOOLS=DIR with xdp-tools 1.6.3 built (../shared/xdp-tools/build.sh DIR)");
        return;
    };
    let Some(t) = Topo::new() else { return };
    let obj = std::path::Path::new(&dir).join("bpf-upstream/xdp_redirect_cpumap.bpf.o");
    let remote = format!("{}:cpumap_redirect", obj.display());
    let rx = format!("{}:cpumap_no_touch", obj.display());
    let before = t.stat(&t.b, "b1", "rx_packets");
    for jit in [false, true] {
        let mut app = vec![
            "--prog",
            &rx,
            "--remote-action",
            &remote,
            "--devmap",
            // xdp-bench's loader puts its egress program in the entry and
            // the interface's MAC in .bss tx_mac_addr.
            "tx_port:0=b0,prog=redirect_egress_prog",
            "--prog-set",
            "tx_mac_addr=02:aa:bb:cc:dd:0e",
        ];
        if jit {
            app.push("--jit");
        }
        let cap = capture(&t.b, "b1", 20, 15);
        let (s, _) = t.run_with(&app, FRAMES);
        assert_identity(&s);
        // redirect_egress_prog wrote .bss tx_mac_addr as the source MAC.
        let frames = cap.join().unwrap();
        let ours: Vec<_> = frames
            .iter()
            .filter(|f| f.len() == 64 && f[12..14] == [8, 0])
            .collect();
        assert!(!ours.is_empty(), "captured {} frames", frames.len());
        let mac = [2, 0xaa, 0xbb, 0xcc, 0xdd, 0x0e];
        if let Some(f) = ours.iter().find(|f| f[6..12] != mac) {
            panic!("egress did not write tx_mac_addr as the source: {f:02x?}");
        }
        assert!(
            n(&s, "remote_redirect") >= FRAMES as u64 * 99 / 100,
            "jit {jit}: {s}"
        );
        assert_eq!(n(&s, "remote_redirect"), n(&s, "target_processed"), "{s}");
    }
    let arrived = t.stat(&t.b, "b1", "rx_packets") - before;
    assert!(arrived >= 2 * FRAMES as u64 * 99 / 100, "{arrived} arrived");
    // Without its devmap entry every redirect misses: XDP_ABORTED.
    let (s, _) = t.run_with(&["--prog", &rx, "--remote-action", &remote], 200);
    assert_identity(&s);
    assert_eq!(n(&s, "remote_redirect"), 0, "{s}");
    assert_eq!(
        reason(&s, "remote_aborted"),
        n(&s, "target_processed"),
        "{s}"
    );
}

#[test]
#[ignore = "needs root (namespaces, veth, packet sockets) and bpf/ built: cargo test -- --include-ignored"]
fn programs_see_the_interface_the_frame_came_in_on() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    let Some(t) = Topo::new() else { return };
    let va = common::ifindex_in(&t.a, "va");
    let (rx, remote) = (
        format!("{}/pin_rx.o", dir.display()),
        format!("{}/pin_remote.o", dir.display()),
    );
    let (s, _, dumps) = t.run_dumping(
        &["--prog", &rx, "--remote-action", &remote],
        200,
        &["pin_seen"],
    );
    assert_identity(&s);
    assert!(n(&s, "target_processed") > 0, "{s}");
    let seen: Vec<u64> = dumps[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["value"].as_u64().unwrap())
        .collect();
    // The RX program: va's ifindex, queue 0. The cpumap program: the same
    // ifindex, and queue 0 as the kernel's cpumap reports it.
    assert_eq!(
        seen,
        [va, 100, va, 100],
        "ingress_ifindex, rx_queue_index + 100"
    );
}

#[test]
#[ignore = "needs root (namespaces, veth, packet sockets) and bpf/ built: cargo test -- --include-ignored"]
fn a_devmap_entrys_egress_program_runs_on_what_goes_out() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(dir) = common::bpf_objects() else {
        return;
    };
    let Some(t) = Topo::new() else { return };
    let b0 = common::ifindex_in(&t.a, "b0");
    let remote = format!("{}/lb.o:lb_redirect", dir.display());
    let before = t.stat(&t.b, "b1", "rx_packets");
    let (s, _, dumps) = t.run_dumping(
        &[
            "--remote-action",
            &remote,
            "--devmap",
            "lb_tx:0=b0,prog=lb_egress",
        ],
        FRAMES,
        &["lb_stats"],
    );
    assert_identity(&s);
    let arrived = t.stat(&t.b, "b1", "rx_packets") - before;
    let st: Vec<u64> = dumps[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["value"].as_u64().unwrap())
        .collect();
    let processed = n(&s, "target_processed");
    assert!(processed >= FRAMES as u64 * 99 / 100, "{s}");
    assert_eq!(st[6], processed, "lb_egress ran on every frame: {st:?}");
    assert_eq!(st[7], b0, "with egress_ifindex = b0: {st:?}");
    // Source ports 4000 + i % 64: the odd half dropped by the egress program.
    let dropped = reason(&s, "egress_drop");
    assert!(
        dropped.abs_diff(processed / 2) <= 1,
        "{dropped} of {processed}: {s}"
    );
    assert_eq!(n(&s, "remote_redirect"), processed - dropped, "{s}");
    assert_eq!(arrived, processed - dropped, "what passed went out");
}
