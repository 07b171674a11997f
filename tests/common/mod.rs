//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cpumapd::config::Plan;
use cpumapd::lcore;
use cpumapd::telemetry::Summary;
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};

/// What an `#[ignore]`d test needs is missing. Such a test runs only when
/// asked for (`cargo test -- --include-ignored`, as CI does), so a missing
/// requirement is a failure, never a silent pass.
pub fn skip(why: &str) {
    panic!("{why}: this test runs with --include-ignored, which needs it");
}

/// The README and every page of docs/, sorted, with their text: what the
/// docs checks read.
pub fn doc_pages() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
    out.sort();
    out.into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// bpf/ with its objects built (`make -C bpf`: clang and libbpf-dev), or
/// None after saying why (a failure in CI).
pub fn bpf_objects() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf");
    let ok = std::process::Command::new("make")
        .args(["-s", "-C"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip("make -C bpf failed (needs clang and libbpf-dev)");
        return None;
    }
    Some(dir)
}

/// ../shared/pcaps, next to the project checkout.
pub fn shared_pcaps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pcaps")
}

/// Writes `frames` as an Ethernet pcap.
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        snaplen: 65535,
        ..Default::default()
    };
    let mut w =
        PcapWriter::with_header(BufWriter::new(File::create(path).unwrap()), header).unwrap();
    for f in frames {
        w.write_packet(&PcapPacket::new(Duration::ZERO, f.len() as u32, f))
            .unwrap();
    }
}

/// Every record of every capture in ../shared/pcaps, in file-name order
/// (read raw: several records are longer than their file's snap length).
pub fn all_shared_records() -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(shared_pcaps())
        .expect("../shared/pcaps")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let mut r = PcapReader::new(File::open(&f).unwrap()).unwrap();
        while let Some(p) = r.next_raw_packet() {
            out.push(p.unwrap().data.into_owned());
        }
    }
    out
}

/// Reads back every frame of a pcap.
pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let mut r = PcapReader::new(File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_raw_packet() {
        out.push(p.unwrap().data.into_owned());
    }
    out
}

pub fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// Runs a plan whose sources are finite until they end, and returns the
/// summary after a clean shutdown.
pub fn run_to_end(cmdline: &str) -> Summary {
    let plan = Plan::from_args(&args(cmdline)).unwrap_or_else(|e| panic!("{cmdline}: {e}"));
    let running = lcore::start(&plan).expect("start");
    let t0 = Instant::now();
    while !running.rx_finished() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "finite source did not finish"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    cpumapd::telemetry::Summary::at_shutdown(running).expect("shutdown")
}

/// Asks a child (cpumapd, a generator) to stop cleanly: SIGTERM.
pub fn sigterm(child: &std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
}

/// Waits (up to 20 s) until cpumapd's control socket at `sock` accepts a
/// connection: the run is up.
pub fn wait_for_control(sock: &Path) {
    let t0 = Instant::now();
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "cpumapd did not come up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command that must succeed (building namespaces and links).
pub fn run_ok(cmd: &str, a: &[&str]) {
    let o = std::process::Command::new(cmd).args(a).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} {a:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A network namespace of the test's own, deleted on drop: the one
/// namespace fixture of the tests. Its name is `prefix`, the process id and
/// a sequence number, so tests running at once never share one. It derefs
/// to its name (`&ns` where an `&str` goes).
pub struct Netns(String);

static NETNS_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Netns {
    /// A new namespace with its loopback up.
    pub fn new(prefix: &str) -> Netns {
        let k = NETNS_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ns = Netns(format!("{prefix}{}{k}", std::process::id() % 100_000));
        run_ok("ip", &["netns", "add", &ns.0]);
        run_ok("ip", &["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }

    /// The same with IPv6 off (for the links made there after), so nothing
    /// but a test's own frames crosses them.
    pub fn without_ipv6(prefix: &str) -> Netns {
        let ns = Netns::new(prefix);
        ns.exec(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        ns
    }

    /// Runs `a` inside (`ip netns exec`); it must succeed.
    pub fn exec(&self, a: &[&str]) -> std::process::Output {
        let mut v = vec!["netns", "exec", self.0.as_str()];
        v.extend_from_slice(a);
        let o = std::process::Command::new("ip").args(&v).output().unwrap();
        assert!(
            o.status.success(),
            "ip {v:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// `ip -n NS a...`; it must succeed.
    pub fn ip(&self, a: &[&str]) {
        let mut v = vec!["-n", self.0.as_str()];
        v.extend_from_slice(a);
        run_ok("ip", &v);
    }

    /// Runs `f` on a thread inside (see [`in_netns`]).
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(&self.0, f)
    }
}

impl std::ops::Deref for Netns {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .output();
    }
}

/// A veth pair from `a`'s `if_a` to `b`'s `if_b` (the same namespace or
/// two), both ends up.
pub fn veth(a: &Netns, if_a: &str, b: &Netns, if_b: &str) {
    run_ok(
        "ip",
        &[
            "link", "add", if_a, "netns", a, "type", "veth", "peer", "name", if_b, "netns", b,
        ],
    );
    a.ip(&["link", "set", if_a, "up"]);
    b.ip(&["link", "set", if_b, "up"]);
}

/// Runs `f` on a thread that has entered namespace `ns` (setns affects only
/// the calling thread; sockets keep the namespace they were made in).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Fails if a pool or mempool said at its drop that buffers were still out
/// (the summary's pool_in_use is read after the last frame came home, so a
/// buffer held past its pool's drop shows only here).
pub fn assert_no_pool_leak(stderr: &[u8]) {
    let e = String::from_utf8_lossy(stderr);
    assert!(
        !e.contains("still in use"),
        "a pool was dropped with buffers out:\n{e}"
    );
}

/// SIGTERMs a cpumapd child, checks it exited 0, and reads the JSON
/// summary it wrote to `summary`.
pub fn stop_with_summary(child: std::process::Child, summary: &Path) -> serde_json::Value {
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "cpumapd exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_pool_leak(&out.stderr);
    serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap()
}

/// Waits until the sources ended and every target drained what was
/// enqueued (the pipeline at rest, still running).
pub fn wait_drained(running: &lcore::Running) {
    let t0 = Instant::now();
    loop {
        let s = cpumapd::telemetry::Summary::now(running.stats());
        if running.rx_finished() && s.target_processed == s.enqueued {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "drain");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An Ethernet + IPv4 + UDP frame.
pub fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut f = vec![0x02; 12];
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 8, 0, 0]);
    f
}

/// `cpumapd ctl --control SOCK ARGS...`.
pub fn ctl(sock: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cpumapd"))
        .arg("ctl")
        .arg("--control")
        .arg(sock)
        .args(args)
        .output()
        .unwrap()
}

/// [`ctl`] that must succeed; its stdout.
pub fn ctl_ok(sock: &Path, args: &[&str]) -> String {
    let out = ctl(sock, args);
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// setsockopt(2) of option `name` at `level` with value `v` (the option's
/// length is `T`'s size): the call's return value.
pub fn set_sock_opt<T>(fd: std::os::fd::RawFd, level: i32, name: i32, v: &T) -> i32 {
    // SAFETY: `v` is a live T; the kernel reads size_of::<T>() bytes of it.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (v as *const T).cast(),
            size_of::<T>() as u32,
        )
    }
}

/// A packet socket (ETH_P_ALL) bound to `dev` in network namespace `ns`:
/// what it sends leaves by `dev`, what arrives there it reads. Opened on a
/// thread that enters the namespace; the descriptor works from any thread.
pub fn packet_socket_in(ns: &str, dev: &str) -> std::os::fd::OwnedFd {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let path = format!("/var/run/netns/{ns}");
    let dev = std::ffi::CString::new(dev).unwrap();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2), checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, all as i32) };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor, owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = all;
        // SAFETY: dev is a NUL-terminated name.
        sll.sll_ifindex = unsafe { libc::if_nametoindex(dev.as_ptr()) } as i32;
        // SAFETY: sll is a valid sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        fd
    })
    .join()
    .unwrap()
}

/// The ifindex of `dev` in network namespace `ns` (`ip -j link show`).
pub fn ifindex_in(ns: &str, dev: &str) -> u64 {
    let o = std::process::Command::new("ip")
        .args(["-n", ns, "-j", "link", "show", dev])
        .output()
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()[0]["ifindex"]
        .as_u64()
        .unwrap_or_else(|| panic!("no {dev} in {ns}"))
}

/// Load options for bpf/lb.c with its PROG_ARRAYs filled as its loader
/// would (jmp_table 0 = lb_tcp, 1 = lb_udp; chain_table 0 = lb_chain).
pub fn lb_load_options() -> cpumapd::filter::ebpf::globals::LoadOptions {
    use cpumapd::filter::ebpf::globals::{LoadOptions, ProgArraySet};
    LoadOptions {
        nr_cpus: 2,
        prog_arrays: [
            "jmp_table:0=lb_tcp",
            "jmp_table:1=lb_udp",
            "chain_table:0=lb_chain",
        ]
        .iter()
        .map(|s| ProgArraySet::parse(s).unwrap())
        .collect(),
        ..Default::default()
    }
}
