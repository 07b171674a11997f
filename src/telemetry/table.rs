//! The live table, xdp-bench style: one line per RX lcore and two per target.

use std::fmt::Write as _;

use super::Summary;

impl Summary {
    /// The live table, xdp-bench style: rates over `dt` seconds since `prev`.
    pub fn table(&self, prev: &Summary, dt: f64) -> String {
        let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / dt.max(1e-9);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<22} {:>12} {:>12} {:>12} {:>10}",
            format!("cpumapd {} -> {}", self.mode, self.exception),
            "pkt/s",
            "drop/s",
            "extra",
            "bulk-avg"
        );
        let _ = writeln!(
            s,
            "{:<22} {:>12.0} {:>12.0} {:>12}",
            "receive total",
            rate(self.rx, prev.rx),
            rate(self.drop + self.aborted, prev.drop + prev.aborted),
            format!("pass {:.0}", rate(self.pass, prev.pass))
        );
        for (r, p) in self.rx_lcores.iter().zip(prev.rx_lcores.iter()) {
            let _ = writeln!(
                s,
                "{:<22} {:>12.0} {:>12.0} {:>12}",
                format!("  {}", r.lcore),
                rate(r.rx, p.rx),
                rate(r.drop + r.aborted, p.drop + p.aborted),
                format!("redir {:.0}", rate(r.redirect, p.redirect))
            );
        }
        for (t, p) in self.targets.iter().zip(prev.targets.iter()) {
            let flushes = t.flushes.saturating_sub(p.flushes);
            let bulk = if flushes > 0 {
                ((t.enqueued + t.enqueue_drops) - (p.enqueued + p.enqueue_drops)) as f64
                    / flushes as f64
            } else {
                0.0
            };
            let _ = writeln!(
                s,
                "{:<22} {:>12.0} {:>12.0} {:>12} {:>10.2}",
                format!("enqueue -> {}", t.target),
                rate(t.enqueued, p.enqueued),
                rate(t.enqueue_drops, p.enqueue_drops),
                format!("ring {}/{}", t.ring_len, t.qsize),
                bulk
            );
            let _ = writeln!(
                s,
                "{:<22} {:>12.0} {:>12.0} {:>12}",
                format!("kthread {}", t.target),
                rate(t.processed, p.processed),
                rate(t.drops, p.drops),
                format!(
                    "sched {:.0} wake {:.0}",
                    rate(t.sched, p.sched),
                    rate(t.wakeups, p.wakeups)
                )
            );
        }
        s
    }
}
