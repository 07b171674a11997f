//! The DPDK backend end to end: EAL with net_null, DPDK's own net_pcap
//! against the native pcap port, dpdk-testpmd as a memif peer, the net_tap
//! exception path into a network namespace, and the errors.
//!
//! Built with `--features dpdk` (CI: `cargo test --features dpdk --test
//! dpdk`). Every run uses `--no-huge --no-pci` (never the host's NIC) and
//! its own `--file-prefix`. Tests that need root, hugepages or testpmd are
//! `#[ignore]`d naming it and run with `--include-ignored` (CI), where a
//! missing requirement fails them.

mod common;

#[cfg(not(feature = "dpdk"))]
#[test]
#[ignore = "the DPDK tests need DPDK 22.11 and --features dpdk: cargo test --features dpdk --test dpdk -- --include-ignored"]
fn dpdk_tests_need_the_dpdk_feature() {
    // CI runs this file again with --features dpdk; here it checks that
    // the build it will need is possible on this machine.
    let has_dpdk = std::process::Command::new("pkg-config")
        .args(["--exists", "libdpdk"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_dpdk,
        "DPDK (libdpdk-dev) is not installed: the --features dpdk run cannot build"
    );
}

#[cfg(feature = "dpdk")]
mod with_dpdk {
    use std::collections::BTreeMap;
    use std::net::UdpSocket;
    use std::path::Path;
    use std::process::{Child, Command, Output, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use super::common::{self, Netns, args, skip, udp4, write_pcap};

    /// One DPDK run at a time: each spins lcores on both CPUs.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn prefix() -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "cpumapd-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// EAL args for a test run: no hugepages, no PCI, a private prefix.
    /// lcore 0 (main) and 1 (RX) on CPU 0, targets 2 and 3 on CPU 1.
    fn eal(extra: &str) -> String {
        format!(
            "--lcores 0@0,1@0,2@1,3@1 --no-huge -m 512 --no-shconf --no-pci --file-prefix {} --log-level 4 {extra}",
            prefix()
        )
    }

    fn cpumapd(cmdline: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cpumapd"))
            .args(args(cmdline))
            .output()
            .expect("run cpumapd")
    }

    /// Runs `cmd` (cpumapd, or a wrapper that runs it) with `cmdline` to
    /// the end and returns the JSON summary; the exit status must be 0
    /// (which includes the binary's own identity check).
    fn summary_via(mut cmd: Command, cmdline: &str) -> Value {
        let o = cmd
            .args(args(&format!(
                "{cmdline} --metrics off --control off --interval 0 --summary-json -"
            )))
            .output()
            .expect("run cpumapd");
        assert!(
            o.status.success(),
            "{cmdline}: exit {:?}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("summary JSON on stdout")
    }

    fn summary(cmdline: &str) -> Value {
        summary_via(Command::new(env!("CARGO_BIN_EXE_cpumapd")), cmdline)
    }

    /// As [`summary`], run inside network namespace `ns`.
    fn summary_in(ns: &str, cmdline: &str) -> Value {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_cpumapd")]);
        summary_via(c, cmdline)
    }

    fn n(v: &Value, k: &str) -> u64 {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {v}"))
    }

    /// docs/ARCHITECTURE.md's accounting identities, by the summary's own check.
    fn assert_identity(s: &Value) {
        cpumapd::telemetry::Summary::check_json(s, true).unwrap_or_else(|e| panic!("{e}: {s}"));
    }

    fn scrape(addr: &str) -> String {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(addr).expect("metrics endpoint");
        write!(c, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        body
    }

    /// The value of the first sample line starting with `prefix`.
    fn sample(body: &str, prefix: &str) -> Option<f64> {
        body.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn null_vdev_pipeline_balances_and_the_mempool_is_full_at_exit() {
        let _g = serial();
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let child = Command::new(env!("CARGO_BIN_EXE_cpumapd"))
            .args(args(&format!(
                "{} --vdev=net_null0 -- --duration 3 --mode no-touch --remote-action drop --metrics {addr} --control off --interval 0 --summary-json -",
                eal("")
            )))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        // The device's own counters (rte_eth_stats) and link, beside ours.
        let body = scrape(&addr);
        let dev_rx = sample(
            &body,
            "cpumapd_device_packets_total{port=\"0\",device=\"net_null0\",direction=\"rx\"}",
        );
        assert!(dev_rx.is_some_and(|v| v > 0.0), "device rx in:\n{body}");
        assert_eq!(
            sample(
                &body,
                "cpumapd_device_link_up{port=\"0\",device=\"net_null0\"}"
            ),
            Some(1.0)
        );
        assert!(body.contains("backend=\"dpdk\""), "build info says dpdk");
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let s: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(n(&s, "rx") > 100_000, "net_null delivers: {s}");
        assert_eq!(n(&s, "redirect"), n(&s, "rx"), "no-touch redirects all");
        assert_identity(&s);
        assert!(n(&s, "pool_capacity") > 0, "the mempool is listed");
        assert_eq!(s["targets"].as_array().unwrap().len(), 2);
    }

    /// The EAL pins lcores; cpumapd must still know which share a CPU, so
    /// that the RX lcore yields to a target on its own CPU once the
    /// target's ring is half full (as natively). Before, a DPDK plan had no
    /// CPUs: nothing yielded and a burst tail-dropped at the ring.
    #[test]
    fn rx_lcore_yields_to_a_target_the_eal_put_on_its_cpu() {
        let _g = serial();
        let s = summary(&format!(
            "--lcores 0@1,1@1,2@1 --no-huge -m 512 --no-shconf --no-pci --file-prefix {} --log-level 4 --vdev=net_null0 -- --cpu 2 --duration 1 --mode no-touch --remote-action drop",
            prefix()
        ));
        assert_identity(&s);
        let rx = &s["rx_lcores"][0];
        assert!(n(rx, "yields") > 0, "the RX lcore never yielded: {s}");
        // The other order: apart, nothing to yield to.
        let s = summary(&format!(
            "--lcores 0@0,1@0,2@1 --no-huge -m 512 --no-shconf --no-pci --file-prefix {} --log-level 4 --vdev=net_null0 -- --cpu 2 --duration 1 --mode no-touch --remote-action drop",
            prefix()
        ));
        assert_eq!(n(&s["rx_lcores"][0], "yields"), 0, "{s}");
    }

    #[test]
    fn two_rx_queues_on_two_rx_lcores_l3fwd_style() {
        let _g = serial();
        // (port,queue,lcore) like l3fwd's --config: queue 0 on lcore 1,
        // queue 1 on lcore 3; targets 2 and 4.
        let s = summary(&format!(
            "--lcores 0@0,1@0,2@1,3@0,4@1 --no-huge -m 512 --no-shconf --no-pci --file-prefix {} --log-level 4 --vdev=net_null0 -- --rx (0,0,1),(0,1,3) --cpu 2,4 --duration 2 --mode round-robin --remote-action drop",
            prefix()
        ));
        assert_identity(&s);
        let ports = s["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 2, "{s}");
        for (q, lcore) in [(0, 1), (1, 3)] {
            let p = ports
                .iter()
                .find(|p| p["queue"].as_u64() == Some(q))
                .unwrap_or_else(|| panic!("queue {q} in {s}"));
            assert!(n(p, "ipackets") > 0, "queue {q} received");
            assert!(p["lcore"].to_string().contains(&lcore.to_string()), "{p}");
        }
        let rx = s["rx_lcores"].as_array().unwrap();
        assert_eq!(rx.len(), 2);
        assert!(rx.iter().all(|r| n(r, "rx") > 0), "both RX lcores polled");
    }

    /// Free 2 MB hugepages after trying to reserve 512 (as root).
    fn hugepages_free() -> u64 {
        let _ = std::fs::write("/proc/sys/vm/nr_hugepages", "512");
        std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("HugePages_Free:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    #[ignore = "needs root and 512 free 2 MB hugepages: cargo test --features dpdk --test dpdk -- --include-ignored"]
    fn null_vdev_pipeline_on_hugepages_in_memory() {
        let _g = serial();
        // The production memory model: hugepages, --in-memory (no files).
        // Reserving them needs root and a kernel with free contiguous
        // memory; where it cannot, this says so (CI runs as root).
        if hugepages_free() < 256 {
            skip("cannot reserve 2 MB hugepages (echo 512 > /proc/sys/vm/nr_hugepages as root)");
            return;
        }
        let s = summary(
            "--lcores 0@0,1@0,2@1 --in-memory --no-pci -m 400 --log-level 4 --vdev=net_null0 -- --duration 2 --mode no-touch --remote-action drop",
        );
        assert!(n(&s, "rx") > 100_000, "{s}");
        assert_identity(&s);
    }

    /// Frames for the parity test: a mix the modes tell apart plus every
    /// record of ../shared/pcaps that fits one mbuf (malformed ones too).
    fn parity_frames() -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        for i in 0..600u16 {
            let mut f = udp4(
                [10, 0, (i % 7) as u8, 1],
                [10, 1, 0, 2],
                1000 + i,
                [9, 53, 80, 4242][i as usize % 4],
            );
            if i % 5 == 0 {
                f[23] = 6; // TCP in the IPv4 protocol field
            }
            if i % 11 == 0 {
                f[23] = 1; // ICMP
            }
            v.push(f);
        }
        v.extend(
            common::all_shared_records()
                .into_iter()
                .filter(|r| (14..=1514).contains(&r.len())),
        );
        v
    }

    fn per_target(s: &Value) -> BTreeMap<u64, u64> {
        s["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let id = t["target"].as_u64().unwrap();
                (id, n(t, "enqueued") + n(t, "enqueue_drops"))
            })
            .collect()
    }

    #[test]
    fn dpdk_net_pcap_gives_the_native_pcap_port_counts_in_every_mode() {
        let _g = serial();
        let dir = tempfile::tempdir().unwrap();
        let pcap = dir.path().join("mix.pcap");
        let frames = parity_frames();
        write_pcap(&pcap, &frames);
        for mode in [
            "no-touch",
            "touch",
            "round-robin",
            "l4-proto",
            "l4-filter",
            "l4-hash",
            "l4-sport",
            "l4-dport",
        ] {
            let app = format!("--mode {mode} --qsize 16384 --cpu 2,3 --rx (0,0,1)");
            let native = summary(&format!(
                "--lcores 1@0,2@1,3@1 --vdev net_pcap0,rx_pcap={} -- {app} --backend native --no-pin",
                pcap.display()
            ));
            let dpdk = summary(&format!(
                "{} --vdev net_pcap0,rx_pcap={} -- {app} --duration 1.5",
                eal(""),
                pcap.display()
            ));
            assert_identity(&dpdk);
            assert_identity(&native);
            assert_eq!(
                n(&native, "rx"),
                frames.len() as u64,
                "{mode}: native read all"
            );
            for k in ["rx", "pass", "drop", "redirect", "aborted"] {
                assert_eq!(n(&dpdk, k), n(&native, k), "{mode}: {k}");
            }
            assert_eq!(per_target(&dpdk), per_target(&native), "{mode}: per target");
        }
    }

    fn have(cmd: &str) -> bool {
        Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// testpmd's accumulated "TX-packets" from its exit statistics.
    fn testpmd_tx_packets(out: &str) -> Option<u64> {
        testpmd_stat(out, "Accumulated forward statistics", "TX-packets:")
    }

    /// Starts an interactive dpdk-testpmd with `cmdline` and waits for the
    /// socket its vdev makes at `sock`. Interactive, so `stop` ends
    /// forwarding and prints the counts while its port stays open, and
    /// `quit` closes it ([`testpmd_stop`]).
    fn testpmd_serving(cmdline: &str, sock: &Path) -> Child {
        let child = Command::new("dpdk-testpmd")
            .args(args(cmdline))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dpdk-testpmd");
        let t0 = Instant::now();
        while !sock.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "testpmd made no socket at {}",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// `stop`, a pause of `linger` (its port still open), `quit`; returns
    /// what testpmd printed.
    fn testpmd_stop(mut testpmd: Child, linger: Duration) -> String {
        use std::io::Write;
        let stdin = testpmd.stdin.as_mut().unwrap();
        stdin.write_all(b"stop\n").unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(linger);
        stdin.write_all(b"quit\n").unwrap();
        let tp = testpmd.wait_with_output().unwrap();
        String::from_utf8_lossy(&tp.stdout).into_owned()
    }

    #[test]
    #[ignore = "needs dpdk-testpmd (apt-get install dpdk): cargo test --features dpdk --test dpdk -- --include-ignored"]
    fn testpmd_txonly_over_memif_matches_cpumapd_rx_exactly() {
        let _g = serial();
        if !have("dpdk-testpmd") {
            skip("needs dpdk-testpmd (apt-get install dpdk)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("memif.sock");
        // testpmd is the memif server and the traffic generator; it runs on
        // CPU 0, cpumapd's RX lcore and targets on CPU 1.
        let testpmd = testpmd_serving(
            &format!(
                "--lcores 0@0,1@0 --no-huge -m 256 --no-shconf --no-pci --file-prefix {} --log-level 4 --vdev=net_memif0,role=server,socket={},socket-abstract=no -- -i --forward-mode=txonly --txonly-multi-flow --auto-start --nb-cores=1 --total-num-mbufs=4096",
                prefix(),
                sock.display()
            ),
            &sock,
        );
        let cpumapd = Command::new(env!("CARGO_BIN_EXE_cpumapd"))
            .args(args(&format!(
                "--lcores 0@1,1@1,2@1,3@1 --no-huge -m 512 --no-shconf --no-pci --file-prefix {} --log-level 4 --vdev=net_memif0,role=client,socket={},socket-abstract=no -- --mode round-robin --cpu 2,3 --qsize 16384 --metrics off --control off --interval 0 --summary-json -",
                prefix(),
                sock.display()
            )))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cpumapd");
        std::thread::sleep(Duration::from_secs(4));
        // Stop the sender but keep its port open while cpumapd drains the
        // memif ring (closing it would discard frames still in the ring).
        let tp_out = testpmd_stop(testpmd, Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(300));
        let c = stop_and_wait(cpumapd);
        assert!(
            c.status.success(),
            "cpumapd: {:?}\n{}",
            c.status,
            String::from_utf8_lossy(&c.stderr)
        );
        let s: Value = serde_json::from_slice(&c.stdout).expect("summary");
        let sent = testpmd_tx_packets(&tp_out)
            .unwrap_or_else(|| panic!("no TX-packets in testpmd's output:\n{tp_out}"));
        assert!(sent > 10_000, "testpmd sent {sent}");
        assert_eq!(n(&s, "rx"), sent, "every frame testpmd sent was received");
        assert_eq!(n(&s, "redirect"), sent, "round-robin redirects all");
        let t = per_target(&s);
        assert_eq!(t.len(), 2);
        assert!(t.values().all(|&v| v > 0), "both targets got frames: {t:?}");
        assert_eq!(t.values().sum::<u64>(), sent);
        assert_identity(&s);
    }

    /// testpmd's accumulated "RX-packets" from its exit statistics.
    fn testpmd_rx_packets(out: &str) -> Option<u64> {
        testpmd_stat(out, "Accumulated forward statistics", "RX-packets:")
    }

    /// The number after `key` in the first block of testpmd's output that
    /// follows `heading`.
    fn testpmd_stat(out: &str, heading: &str, key: &str) -> Option<u64> {
        let block = out.split(heading).nth(1)?;
        let i = block.find(key)?;
        block[i + key.len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// The serial lock, when testpmd and the hugepages a vhost-user backend
    /// needs are there (else a skip: a failure in CI).
    fn vhost_user_ready() -> Option<std::sync::MutexGuard<'static, ()>> {
        let g = serial();
        if !have("dpdk-testpmd") {
            skip("needs dpdk-testpmd (apt-get install dpdk)");
            return None;
        }
        if hugepages_free() < 256 {
            skip("vhost-user needs memory the backend can map: cannot reserve 2 MB hugepages");
            return None;
        }
        Some(g)
    }

    #[test]
    #[ignore = "needs dpdk-testpmd, root and 512 free 2 MB hugepages: cargo test --features dpdk --test dpdk -- --include-ignored"]
    fn virtio_user_into_a_vhost_user_backend_counts_exactly_on_both_sides() {
        let Some(_g) = vhost_user_ready() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("vhost.sock");
        // testpmd is the vhost-user backend (server), counting what it
        // receives.
        let testpmd = testpmd_serving(
            &format!(
                "--lcores 0@0,1@0 --in-memory --single-file-segments -m 128 --no-pci --file-prefix {} --log-level 4 --vdev=net_vhost0,iface={},queues=2 -- -i --forward-mode=rxonly --auto-start --nb-cores=1 --rxq=2 --txq=2",
                prefix(),
                sock.display()
            ),
            &sock,
        );
        let s = summary(&format!(
            "--lcores 0@1,1@1,2@1,3@1 --in-memory --single-file-segments -m 256 --no-pci --file-prefix {} --log-level 4 --vdev=net_null0 -- --mode round-robin --cpu 1,2 --duration 2 --exception virtio-user:{}",
            prefix(),
            sock.display()
        ));
        let tp_out = testpmd_stop(testpmd, Duration::from_millis(500));
        let got = testpmd_rx_packets(&tp_out)
            .unwrap_or_else(|| panic!("no RX-packets in testpmd's output:\n{tp_out}"));
        assert_identity(&s);
        assert!(n(&s, "delivered") > 10_000, "{s}");
        assert_eq!(
            got,
            n(&s, "delivered"),
            "the vhost-user backend received exactly what cpumapd delivered; {s}"
        );
    }

    /// testpmd's port 0 "RX-bytes" from `show port stats all`.
    fn testpmd_rx_bytes(out: &str) -> Option<u64> {
        testpmd_stat(out, "NIC statistics for port 0", "RX-bytes:")
    }

    /// Two TCP flows' segments interleaved in runs of 5 (1502-byte frames,
    /// checksums valid, as a NIC without offloads receives them).
    fn tcp_flows(segments: u32) -> Vec<Vec<u8>> {
        let seg = |sport: u16, k: u32| {
            let mut ip = etherparse::Ipv4Header::new(
                0,
                64,
                etherparse::IpNumber::TCP,
                [10, 9, 0, 1],
                [10, 9, 0, 2],
            )
            .unwrap();
            ip.identification = k as u16;
            ip.dont_fragment = true;
            let mut v = Vec::new();
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
                .tcp(sport, 5201, 1 + k * 1448, 512)
                .ack(1)
                .write(&mut v, &[(k % 251) as u8; 1448])
                .unwrap();
            v
        };
        (0..segments)
            .map(|k| seg(if (k / 5) % 2 == 0 { 40000 } else { 40001 }, k))
            .collect()
    }

    #[test]
    #[ignore = "needs dpdk-testpmd, root and 512 free 2 MB hugepages: cargo test --features dpdk --test dpdk -- --include-ignored"]
    fn virtio_user_gro_sends_tso_super_frames_the_backend_takes_whole() {
        let Some(_g) = vhost_user_ready() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let frames = tcp_flows(4000);
        let pcap = dir.path().join("tcp.pcap");
        write_pcap(&pcap, &frames);
        for gro in ["on", "off"] {
            let sock = dir.path().join(format!("vhost-{gro}.sock"));
            // The backend offers TSO (tso=1): VIRTIO_NET_F_HOST_TSO4/6.
            let testpmd = testpmd_serving(
                &format!(
                    "--lcores 0@0,1@0 --in-memory --single-file-segments -m 256 --no-pci --file-prefix {} --log-level 4 --vdev=net_vhost0,iface={},queues=1,tso=1 -- -i --forward-mode=rxonly --auto-start --nb-cores=1 --total-num-mbufs=32768",
                    prefix(),
                    sock.display()
                ),
                &sock,
            );
            // Verbose: lines per packet received, its length and flags;
            // vhost marks a GSO packet RTE_MBUF_F_RX_LRO (compliant offload
            // flags). Read as it comes so testpmd never blocks on the pipe.
            let mut testpmd = testpmd;
            let stdout = testpmd.stdout.take().unwrap();
            let reader = std::thread::spawn(move || {
                let mut out = String::new();
                let _ = std::io::Read::read_to_string(&mut { stdout }, &mut out);
                out
            });
            {
                use std::io::Write;
                let tp = testpmd.stdin.as_mut().unwrap();
                tp.write_all(b"set verbose 1\n").unwrap();
            }
            let s = summary(&format!(
                "--lcores 0@1,1@1,2@1 --in-memory --single-file-segments -m 256 --no-pci --file-prefix {} --log-level 4 --vdev=net_pcap0,rx_pcap={} -- --mode no-touch --cpu 2 --qsize 16384 --duration 2 --exception virtio-user:{},gro={gro}",
                prefix(),
                pcap.display(),
                sock.display()
            ));
            let tp_out = {
                use std::io::Write;
                let mut tp = testpmd;
                std::thread::sleep(Duration::from_millis(300));
                tp.stdin
                    .as_mut()
                    .unwrap()
                    .write_all(b"show port stats all\n")
                    .unwrap();
                testpmd_stop(tp, Duration::from_millis(300));
                reader.join().unwrap()
            };
            let gso_packets = tp_out.matches(" RTE_MBUF_F_RX_LRO ").count() as u64;
            assert_identity(&s);
            let t = &s["targets"][0];
            let delivered = n(&s, "delivered");
            // A backend that falls behind fills the virtio ring: those
            // frames are counted as busy, never lost unseen.
            assert_eq!(
                delivered + n(&t["drop_reasons"], "exception_busy"),
                frames.len() as u64,
                "{s}"
            );
            // The backend (testpmd printing every packet on the other CPU)
            // falls behind: its ring fills and frames are busy.
            assert!(delivered >= 500, "{s}");
            let (segs, supers) = (n(t, "gro_segments"), n(t, "gro_frames"));
            let got = testpmd_rx_packets(&tp_out)
                .unwrap_or_else(|| panic!("no RX-packets in testpmd's output:\n{tp_out}"));
            let bytes = testpmd_rx_bytes(&tp_out)
                .unwrap_or_else(|| panic!("no RX-bytes in testpmd's output:\n{tp_out}"));
            eprintln!(
                "gro={gro}: {delivered} delivered, {segs} merged into {supers}; the backend got {got} packets ({gso_packets} GSO), {bytes} bytes"
            );
            // Each super-frame reached the backend as one GSO packet with
            // the flow's segment size.
            assert_eq!(gso_packets, supers, "{s}");
            if gro == "off" {
                assert_eq!((segs, supers), (0, 0), "{s}");
            } else {
                // Most segments travel merged (runs of 5 per flow).
                assert!(segs * 10 > delivered * 7 && supers * 2 <= segs, "{s}");
            }
            // What the backend received: one packet per super-frame, and
            // every byte (all frames are 1502 bytes), less the 54 header
            // bytes each merged segment after a group's first shared.
            assert_eq!(got, delivered - segs + supers, "{s}");
            assert_eq!(bytes, delivered * 1502 - (segs - supers) * 54, "{s}");
        }
    }

    #[test]
    fn virtio_user_into_vhost_user_needs_shareable_memory() {
        let _g = serial();
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("vhost.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let null = eal("--vdev=net_null0");
        fails_with(
            &format!("{null} -- --exception virtio-user:{}", sock.display()),
            "cannot be shared with the vhost-user backend",
        );
        fails_with(
            &format!(
                "{null} -- --exception virtio-user:{}",
                dir.path().join("none").display()
            ),
            "start the vhost-user backend",
        );
    }

    #[test]
    fn sigterm_during_eal_init_is_a_clean_stop() {
        let _g = serial();
        // rte_eal_init with 512 MB of 4 KB pages takes a while here; the
        // signal lands inside it. cpumapd's handler is installed before
        // EAL init, so the run starts, stops at once and summarises,
        // instead of dying of the signal with nothing said.
        let child = Command::new(env!("CARGO_BIN_EXE_cpumapd"))
            .args(args(&format!(
                "--lcores 0@0,1@0,2@1 --no-huge -m 512 --no-shconf --no-pci --file-prefix {} --log-level 4 --vdev=net_null0 -- --metrics off --control off --interval 0",
                prefix()
            )))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30));
        common::sigterm(&child);
        let o = child.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{:?}\n{out}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains("summary:"), "{out}");
    }

    /// SIGTERMs `child` and collects its output, signalling again every 2 s
    /// (on a loaded 2-CPU CI host a run was seen to outlive its first
    /// SIGTERM for minutes); after 60 s it is killed and the test fails
    /// saying so, instead of hanging CI.
    fn stop_and_wait(child: Child) -> Output {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || tx.send(child.wait_with_output()));
        let t0 = Instant::now();
        loop {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            match rx.recv_timeout(Duration::from_secs(2)) {
                Ok(out) => {
                    waiter.join().unwrap().ok();
                    return out.unwrap();
                }
                Err(_) if t0.elapsed() < Duration::from_secs(60) => {
                    eprintln!(
                        "cpumapd still running {:?} after SIGTERM: again",
                        t0.elapsed()
                    );
                }
                Err(_) => {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    panic!("cpumapd did not stop within 60 s of SIGTERM (killed)");
                }
            }
        }
    }

    fn run(cmd: &str, a: &[&str]) -> Output {
        let o = Command::new(cmd).args(a).output().unwrap();
        assert!(
            o.status.success(),
            "{cmd} {a:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// A network namespace ([`Netns`]) holding a persistent multi-queue
    /// TAP `tap` with address `cidr`, up. None (after saying why: a
    /// failure under --include-ignored) without root or /dev/net/tun.
    fn netns_with_tap(prefix: &str, tap: &str, cidr: &str) -> Option<Netns> {
        if !nix::unistd::geteuid().is_root() || !Path::new("/dev/net/tun").exists() {
            skip("needs root and /dev/net/tun for net_tap in a network namespace");
            return None;
        }
        let ns = Netns::new(prefix);
        ns.exec(&[
            "ip",
            "tuntap",
            "add",
            "mode",
            "tap",
            "multi_queue",
            "name",
            tap,
        ]);
        ns.exec(&["ip", "addr", "add", cidr, "dev", tap]);
        ns.exec(&["ip", "link", "set", tap, "up"]);
        Some(ns)
    }

    /// A PMD with RX interrupts (net_tap here; NICs under vfio-pci too):
    /// the idle RX lcore arms them and blocks on the queue's descriptor, so
    /// a lone frame wakes it at once instead of waiting out a nap. Wake-ups
    /// are counted only when poll(2) on a descriptor returned, which a
    /// napping lcore never does: the check sees the mode, not a timing.
    #[test]
    #[ignore = "needs root and /dev/net/tun: cargo test --features dpdk --test dpdk -- --include-ignored"]
    fn net_tap_port_rx_interrupts_wake_the_idle_rx_lcore() {
        let _g = serial();
        let Some(ns) = netns_with_tap("cpmi", "cpmdintr0", "10.78.0.1/24") else {
            return;
        };
        let tap = "cpmdintr0";
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_cpumapd")])
            .args(args(&format!(
                "{} --vdev net_tap0,iface={tap} -- --mode l4-hash --remote-action drop --duration 4 --metrics off --control off --interval 0 --summary-json -",
                eal("")
            )))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        // No ARP: the kernel sends each datagram at once. (Added once
        // net_tap has set the TAP's MAC, which flushes its neighbours.)
        ns.exec(&[
            "ip",
            "neigh",
            "replace",
            "10.78.0.2",
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            tap,
        ]);
        let nsname = ns.to_string();
        std::thread::spawn(move || {
            let f = std::fs::File::open(format!("/var/run/netns/{nsname}")).unwrap();
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let s = UdpSocket::bind("10.78.0.1:0").unwrap();
            for _ in 0..20 {
                s.send_to(b"lone", "10.78.0.2:9999").unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .join()
        .unwrap();
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(
            err.contains("(net_tap0): RX interrupts on 1 of 1 queue(s)"),
            "the start line says which wait each port gets: {err}"
        );
        let s: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_identity(&s);
        let rx = &s["rx_lcores"][0];
        assert!(n(&s, "rx") >= 20, "every datagram arrived: {s}");
        assert!(
            n(rx, "wakeups") >= 10,
            "the idle RX lcore blocked on the interrupt and woke for the datagrams: {s}"
        );
    }

    #[test]
    #[ignore = "needs root and /dev/net/tun: cargo test --features dpdk --test dpdk -- --include-ignored"]
    fn net_tap_exception_hands_frames_to_a_kernel_socket_in_a_netns() {
        let _g = serial();
        // A persistent multi-queue TAP with an address, which net_tap
        // attaches to: the kernel is ready before the first frame.
        let Some(ns) = netns_with_tap("cpmd", "cpmdtap0", "10.77.0.1/24") else {
            return;
        };
        let tap = "cpmdtap0";
        // The kernel checks the IPv4 header checksum (UDP's 0 means none).
        let frames: Vec<Vec<u8>> = (0..200u16)
            .map(|i| {
                let mut f = udp4([10, 77, 0, 2], [10, 77, 0, 1], 2000 + i, 5555);
                let sum: u32 = f[14..34]
                    .chunks(2)
                    .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
                    .sum();
                let sum = (sum & 0xffff) + (sum >> 16);
                f[24..26].copy_from_slice(&(!((sum & 0xffff) + (sum >> 16)) as u16).to_be_bytes());
                f
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let pcap = dir.path().join("udp.pcap");
        write_pcap(&pcap, &frames);
        // The UDP socket lives in the namespace; bind it from a thread that
        // entered it.
        let nsname = ns.to_string();
        let sock = std::thread::spawn(move || {
            let f = std::fs::File::open(format!("/var/run/netns/{nsname}")).unwrap();
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let s = UdpSocket::bind("10.77.0.1:5555").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            s
        })
        .join()
        .unwrap();
        let rx_before = stat(&ns, tap, "rx_packets");
        let s = summary_in(
            &ns,
            &format!(
                "{} --vdev net_pcap0,rx_pcap={} -- --mode l4-hash --exception tap:{tap} --duration 2",
                eal(""),
                pcap.display()
            ),
        );
        assert_identity(&s);
        assert_eq!(n(&s, "redirect"), 200);
        assert_eq!(n(&s, "delivered"), 200, "net_tap took every frame: {s}");
        let mut got = 0;
        let mut buf = [0u8; 2048];
        while sock.recv(&mut buf).is_ok() {
            got += 1;
        }
        assert_eq!(
            got,
            200,
            "every datagram reached the socket in the namespace; kernel counters:\n{}",
            String::from_utf8_lossy(&run("ip", &["netns", "exec", &ns, "nstat", "-as"]).stdout)
        );
        assert!(stat(&ns, tap, "rx_packets") - rx_before >= 200);
    }

    /// dpdk-config/dev-dpdk.toml runs as shipped (the EAL gets the file's
    /// arguments plus a private prefix), and so does tap-exception.toml,
    /// as root, in a throwaway namespace.
    #[test]
    #[ignore = "needs root and /dev/net/tun: cargo test --features dpdk --test dpdk -- --include-ignored"]
    fn the_shipped_dpdk_profiles_run() {
        let _g = serial();
        let root = env!("CARGO_MANIFEST_DIR");
        let s = summary(&format!(
            "--file-prefix {} -- --config {root}/dpdk-config/dev-dpdk.toml --duration 1",
            prefix()
        ));
        assert_identity(&s);
        assert!(n(&s, "redirect") > 100_000, "{s}");
        if !nix::unistd::geteuid().is_root() || !Path::new("/dev/net/tun").exists() {
            skip("needs root and /dev/net/tun for tap-exception.toml");
            return;
        }
        let ns = Netns::new("cpmdp");
        let s = summary_in(
            &ns,
            &format!(
                "--file-prefix {} -- --config {root}/dpdk-config/tap-exception.toml --duration 1",
                prefix()
            ),
        );
        assert_identity(&s);
        assert!(n(&s, "delivered") > 1000, "net_tap took frames: {s}");
    }

    fn stat(ns: &str, dev: &str, name: &str) -> u64 {
        let o = run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "cat",
                &format!("/sys/class/net/{dev}/statistics/{name}"),
            ],
        );
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    }

    fn fails_with(cmdline: &str, needle: &str) {
        let o = cpumapd(&format!(
            "{cmdline} --metrics off --control off --interval 0"
        ));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{cmdline}: should fail");
        assert!(
            err.contains(needle),
            "{cmdline}: expected '{needle}' in:\n{err}"
        );
        assert!(!err.contains("panicked"), "{cmdline}: panicked:\n{err}");
    }

    #[test]
    fn bad_eal_args_ports_queues_and_lcores_get_clear_errors() {
        let _g = serial();
        let null = eal("--vdev=net_null0");
        fails_with(
            &format!("{} --no-such-eal-option --", eal("")),
            "rte_eal_init failed",
        );
        fails_with(&format!("{null} -- --rx (5,0,1)"), "only 1 port(s)");
        fails_with(&format!("{null} -- --rx (0,0,1),(0,0,2)"), "assigned twice");
        fails_with(
            &format!("{null} -- --rx (0,0,7)"),
            "not in the EAL lcore list",
        );
        fails_with(&format!("{null} -- --cpu 9"), "not in the EAL lcore list");
        fails_with(&format!("{null} -- --rx (0,0,0)"), "EAL main lcore");
        fails_with(&format!("{null} -- --exception kni"), "KNI was removed");
        fails_with(
            &format!("{} --vdev net_gen0 --", eal("")),
            "net_gen is cpumapd's own generator",
        );
        fails_with(
            &format!("{} --no-huge --no-pci --", "--lcores 0@0"),
            "only the main lcore",
        );
        if !Path::new("/dev/vhost-net").exists() {
            fails_with(
                &format!("{null} -- --exception virtio-user:/dev/vhost-net"),
                "no vhost-net",
            );
        }
    }
}
