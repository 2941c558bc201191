//! A cheap monotonic clock for the hot path: the CPU's time-stamp counter.
//!
//! Reading the TSC costs a few nanoseconds where `clock_gettime` costs
//! twenty; reactors read it every loop iteration for timers and busy-time
//! accounting, and benchmarks stamp I/Os with it. It is calibrated once
//! against the OS clock. Machines without an invariant TSC (or non-x86) fall
//! back to the OS monotonic clock in nanoseconds.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn base() -> &'static Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now)
}

fn tsc_usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        cfg!(target_arch = "x86_64")
            && std::fs::read_to_string("/proc/cpuinfo")
                .map(|s| s.contains(" constant_tsc") && s.contains(" nonstop_tsc"))
                .unwrap_or(false)
    })
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no preconditions on x86_64 and touches no memory.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn rdtsc() -> u64 {
    0
}

/// Current time in ticks (see [`ticks_per_sec`]).
#[inline]
pub fn ticks() -> u64 {
    if tsc_usable() {
        rdtsc()
    } else {
        base().elapsed().as_nanos() as u64
    }
}

/// Ticks per second, measured once (about 20 ms) on first use.
pub fn ticks_per_sec() -> u64 {
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(|| {
        if !tsc_usable() {
            return 1_000_000_000;
        }
        let t0 = Instant::now();
        let c0 = rdtsc();
        std::thread::sleep(Duration::from_millis(20));
        let c1 = rdtsc();
        let dt = t0.elapsed();
        ((c1 - c0) as f64 / dt.as_secs_f64()) as u64
    })
}

/// Converts ticks to nanoseconds.
#[inline]
pub fn ticks_to_ns(t: u64) -> u64 {
    (t as u128 * 1_000_000_000 / ticks_per_sec() as u128) as u64
}

/// Converts a duration to ticks.
pub fn duration_to_ticks(d: Duration) -> u64 {
    (d.as_nanos() * ticks_per_sec() as u128 / 1_000_000_000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_track_wall_time() {
        let hz = ticks_per_sec();
        let t0 = ticks();
        std::thread::sleep(Duration::from_millis(30));
        let ns = ticks_to_ns(ticks() - t0);
        assert!(hz > 0);
        assert!(
            (25_000_000..2_000_000_000).contains(&ns),
            "30 ms measured as {ns} ns"
        );
    }
}
