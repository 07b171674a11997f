//! The clocks and the random numbers the helpers read: layer 0 of the
//! engine, used by the interpreter and the JIT.

use nix::time::{ClockId, clock_gettime};

/// Nanoseconds on `clock` (0 if it cannot be read).
fn now(clock: ClockId) -> u64 {
    clock_gettime(clock)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// `bpf_ktime_get_boot_ns`: CLOCK_BOOTTIME.
pub(crate) fn boot_ns() -> u64 {
    now(ClockId::CLOCK_BOOTTIME)
}

/// `bpf_get_prandom_u32`: a per-thread xorshift64* stream (the kernel's
/// is a per-CPU PRNG too, not for cryptography), seeded from the clock and
/// the thread the first time. No allocation; a clock read for the seed.
pub(crate) fn prandom_u32() -> u32 {
    thread_local! {
        static STATE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    STATE.with(|s| {
        let mut x = s.get();
        if x == 0 {
            // The cell's address differs per thread.
            let here = s as *const std::cell::Cell<u64> as u64;
            x = (ktime_ns() ^ here.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    })
}

/// `bpf_ktime_get_ns`: CLOCK_MONOTONIC.
pub(crate) fn ktime_ns() -> u64 {
    now(ClockId::CLOCK_MONOTONIC)
}
