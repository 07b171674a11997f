//! `bpf_trace_printk`: where the kernel writes a line to the trace pipe,
//! cpumapd writes it to stderr (`cpumapd: bpf_trace_printk: lcoreN: ...`),
//! at most [`LINES_PER_SEC`] lines per lcore per second; the lines left out
//! are counted and said with the next one. The return value is the kernel's
//! (the formatted length, or -EINVAL for a format it refuses) whether the
//! line was written or not.
//!
//! Formats as the kernel's `bpf_bprintf_prepare` accepts them: at most three
//! conversions among `%d %i %u %x %X` (with `l` or `ll`), `%c`, `%px` (and
//! `%p`, which the kernel hashes: here the value, as `%px`), `%%`, with flags
//! `0 - + space` and a width, in a format of printable characters and white
//! space that ends with a NUL within its size. `%s` and the `%pI4`-like
//! forms, which read memory, are refused (-EINVAL): cpumapd reads no memory
//! a program did not prove it may.
//!
//! Context: the lcore running the program. No allocation; a clock read and
//! one `write(2)` per line written.

use std::cell::Cell;

use crate::abi::errno::EINVAL;

/// Lines each lcore writes per second at most.
pub const LINES_PER_SEC: u32 = 10;

/// Largest format (bytes, NUL included) the verifier accepts.
pub const FMT_MAX: usize = 256;

/// A line being built, on the stack.
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    fn push(&mut self, b: &[u8]) {
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }

    /// `v` in `base` (10 or 16), `neg` in front, padded to `width`.
    fn number(&mut self, neg: bool, mut v: u64, base: u64, upper: bool, spec: &Spec) {
        let mut digits = [0u8; 24];
        let mut n = 0;
        loop {
            let d = (v % base) as u8;
            digits[n] = match d {
                0..=9 => b'0' + d,
                _ if upper => b'A' + d - 10,
                _ => b'a' + d - 10,
            };
            n += 1;
            v /= base;
            if v == 0 {
                break;
            }
        }
        let sign: &[u8] = match (neg, spec.plus, spec.space) {
            (true, _, _) => b"-",
            (false, true, _) => b"+",
            (false, false, true) => b" ",
            _ => b"",
        };
        let pad = spec.width.saturating_sub(n + sign.len());
        if !spec.left && !spec.zero {
            self.fill(b' ', pad);
        }
        self.push(sign);
        if !spec.left && spec.zero {
            self.fill(b'0', pad);
        }
        digits[..n].reverse();
        self.push(&digits[..n]);
        if spec.left {
            self.fill(b' ', pad);
        }
    }

    fn fill(&mut self, c: u8, n: usize) {
        for _ in 0..n {
            self.push(&[c]);
        }
    }
}

/// One conversion's flags and width.
#[derive(Default)]
struct Spec {
    zero: bool,
    left: bool,
    plus: bool,
    space: bool,
    width: usize,
}

/// Formats `fmt` (up to its NUL) with `args` into `out`; Err for a format
/// the kernel refuses or cpumapd does not read.
fn format(fmt: &[u8], args: [u64; 3], out: &mut Line) -> Result<(), ()> {
    let end = fmt.iter().position(|&b| b == 0).ok_or(())?;
    let fmt = &fmt[..end];
    let mut next = 0;
    let mut i = 0;
    while i < fmt.len() {
        let c = fmt[i];
        i += 1;
        if !(c.is_ascii_graphic() || c.is_ascii_whitespace() || c == b' ' || c == 0x0b) {
            return Err(());
        }
        if c != b'%' {
            out.push(&[c]);
            continue;
        }
        if fmt.get(i) == Some(&b'%') {
            out.push(b"%");
            i += 1;
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = fmt.get(i) {
            match f {
                b'0' => spec.zero = true,
                b'-' => spec.left = true,
                b'+' => spec.plus = true,
                b' ' => spec.space = true,
                _ => break,
            }
            i += 1;
        }
        while let Some(d) = fmt.get(i).filter(|d| d.is_ascii_digit()) {
            spec.width = (spec.width * 10 + (d - b'0') as usize).min(64);
            i += 1;
        }
        let mut long = 0;
        while fmt.get(i) == Some(&b'l') && long < 2 {
            long += 1;
            i += 1;
        }
        let conv = *fmt.get(i).ok_or(())?;
        i += 1;
        if next == args.len() {
            return Err(());
        }
        let raw = args[next];
        next += 1;
        let v = if long > 0 { raw } else { raw as u32 as u64 };
        match conv {
            b'd' | b'i' => {
                let s = if long > 0 {
                    raw as i64
                } else {
                    raw as u32 as i32 as i64
                };
                out.number(s < 0, s.unsigned_abs(), 10, false, &spec);
            }
            b'u' => out.number(false, v, 10, false, &spec),
            b'x' | b'X' => out.number(false, v, 16, conv == b'X', &spec),
            b'c' if long == 0 => out.push(&[raw as u8]),
            b'p' if long == 0 => {
                // %p and %px: the value; %pK, %pI4 and the rest read memory
                // or hide it.
                match fmt.get(i) {
                    Some(b'x') => i += 1,
                    Some(c) if c.is_ascii_alphanumeric() => return Err(()),
                    _ => {}
                }
                // The kernel's pointer form: 0x and 16 hex digits.
                out.push(b"0x");
                let wide = Spec {
                    zero: true,
                    width: 16,
                    ..Spec::default()
                };
                out.number(false, raw, 16, false, &wide);
            }
            _ => return Err(()),
        }
    }
    Ok(())
}

thread_local! {
    /// (start of the current second, lines written in it, lines left out).
    static RATE: Cell<(u64, u32, u64)> = const { Cell::new((0, 0, 0)) };
}

/// `bpf_trace_printk(fmt, fmt_size, a, b, c)` on lcore `cpu`: the
/// formatted length, or -EINVAL. `now_ns` reads the clock (only when a line
/// is made).
pub fn trace_printk(fmt: &[u8], args: [u64; 3], cpu: u32, now_ns: fn() -> u64) -> i64 {
    let mut text = Line {
        buf: [0; 512],
        len: 0,
    };
    if format(fmt, args, &mut text).is_err() {
        return -EINVAL;
    }
    let ret = text.len as i64;
    let now = now_ns();
    let (mut start, mut written, mut left_out) = RATE.get();
    if now.saturating_sub(start) >= 1_000_000_000 {
        (start, written) = (now, 0);
    }
    if written >= LINES_PER_SEC {
        RATE.set((start, written, left_out + 1));
        return ret;
    }
    let mut line = Line {
        buf: [0; 512],
        len: 0,
    };
    line.push(b"cpumapd: bpf_trace_printk: lcore");
    line.number(false, cpu as u64, 10, false, &Spec::default());
    line.push(b": ");
    let mut body = &text.buf[..text.len];
    while let [rest @ .., b'\n'] = body {
        body = rest;
    }
    line.push(body);
    if left_out > 0 {
        line.push(b" (");
        line.number(false, left_out, 10, false, &Spec::default());
        line.push(b" earlier lines left out)");
        left_out = 0;
    }
    line.push(b"\n");
    // One write: lines of different lcores do not interleave. A failed
    // write (stderr closed) loses the line, as a full trace buffer would.
    let _ = nix::unistd::write(std::io::stderr(), &line.buf[..line.len]);
    RATE.set((start, written + 1, left_out));
    ret
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(f: &str, args: [u64; 3]) -> Result<String, ()> {
        let mut z = f.as_bytes().to_vec();
        z.push(0);
        let mut l = Line {
            buf: [0; 512],
            len: 0,
        };
        format(&z, args, &mut l)?;
        Ok(String::from_utf8_lossy(&l.buf[..l.len]).into_owned())
    }

    #[test]
    fn formats_as_the_kernel_does_and_refuses_what_it_refuses() {
        let neg = (-5i32) as u32 as u64;
        assert_eq!(
            fmt("len %d q %u p 0x%x", [64, 3, 0x800]).unwrap(),
            "len 64 q 3 p 0x800"
        );
        assert_eq!(fmt("%d %ld", [neg, u64::MAX, 0]).unwrap(), "-5 -1");
        assert_eq!(fmt("%u", [neg, 0, 0]).unwrap(), "4294967291");
        assert_eq!(
            fmt("%llx|%X", [u64::MAX, 0xab, 0]).unwrap(),
            "ffffffffffffffff|AB"
        );
        assert_eq!(
            fmt("[%5d][%-4u][%04x]", [42, 7, 0xa]).unwrap(),
            "[   42][7   ][000a]"
        );
        assert_eq!(
            fmt("%c%c 100%%", [b'o' as u64, b'k' as u64, 0]).unwrap(),
            "ok 100%"
        );
        assert_eq!(
            fmt("%px %p", [0x1234, 0xff, 0]).unwrap(),
            "0x0000000000001234 0x00000000000000ff"
        );
        assert!(fmt("bell \x07", [0; 3]).is_err(), "not printable");
        assert!(fmt("%d %d %d %d", [1, 2, 3]).is_err(), "four conversions");
        assert!(fmt("%s", [0, 0, 0]).is_err(), "reads memory");
        assert!(fmt("%pI4", [0, 0, 0]).is_err(), "reads memory");
        assert!(fmt("%q", [0, 0, 0]).is_err());
        assert!(fmt("ends in %", [0, 0, 0]).is_err());
        let mut l = Line {
            buf: [0; 512],
            len: 0,
        };
        assert!(format(b"no NUL", [0; 3], &mut l).is_err());
    }

    #[test]
    fn lines_past_the_rate_are_left_out_and_the_length_is_returned_anyway() {
        fn clock() -> u64 {
            5_000_000_000
        }
        for _ in 0..LINES_PER_SEC {
            assert_eq!(trace_printk(b"x %d\0", [1, 0, 0], 0, clock), 3);
        }
        assert_eq!(trace_printk(b"x %d\0", [22, 0, 0], 0, clock), 4);
        assert_eq!(RATE.get(), (5_000_000_000, LINES_PER_SEC, 1));
        assert_eq!(trace_printk(b"%s\0", [0; 3], 0, clock), -EINVAL);
    }
}
