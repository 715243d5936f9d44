// SPDX-License-Identifier: GPL-2.0

//! Conversions between guest counter cycles and nanoseconds.
//!
//! Exact (floor, or ceiling where a deadline must not come early) and
//! overflow-free over the whole `u64` range: a result that does not fit
//! saturates at `u64::MAX`, which callers treat as "never".

/// Nanoseconds in a second.
pub const NSEC_PER_SEC: u64 = 1_000_000_000;

/// The highest counter frequency accepted (10 GHz).
///
/// Keeps `remainder * NSEC_PER_SEC` within `u64` (remainder < freq): see
/// `scale`.
pub const MAX_FREQ_HZ: u64 = 10 * NSEC_PER_SEC;

/// A counter frequency.
///
/// # Invariants
///
/// `0 < hz <= MAX_FREQ_HZ`; `tight` is [`SAMPLE_TIGHT_NS`] in cycles of
/// `hz`, rounded down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    hz: u64,
    tight: u64,
}

impl Clock {
    /// A clock of `hz` cycles per second; `None` if `hz` is 0 or above
    /// [`MAX_FREQ_HZ`].
    pub const fn new(hz: u64) -> Option<Self> {
        if hz == 0 || hz > MAX_FREQ_HZ {
            None
        } else {
            // INVARIANT: `hz` checked just above, `tight` from it.
            Some(Self {
                hz,
                tight: scale(SAMPLE_TIGHT_NS, hz, NSEC_PER_SEC, false),
            })
        }
    }

    /// The frequency in Hz.
    pub const fn hz(self) -> u64 {
        self.hz
    }

    /// `cycles` as nanoseconds, rounded down, saturating at `u64::MAX`.
    pub const fn cycles_to_ns(self, cycles: u64) -> u64 {
        scale(cycles, NSEC_PER_SEC, self.hz, false)
    }

    /// `cycles` as nanoseconds, rounded up, saturating at `u64::MAX`.
    ///
    /// For the time until a deadline: a host timer armed this far ahead
    /// never fires before the guest's counter reaches the deadline.
    pub const fn cycles_to_ns_ceil(self, cycles: u64) -> u64 {
        scale(cycles, NSEC_PER_SEC, self.hz, true)
    }

    /// `ns` as cycles, rounded down, saturating at `u64::MAX`.
    pub const fn ns_to_cycles(self, ns: u64) -> u64 {
        scale(ns, self.hz, NSEC_PER_SEC, false)
    }
}

/// The host counter and the host clock (ns), read together: see
/// [`Clock::sample`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The counter, read before `ns`.
    pub cycles: u64,
    /// The clock.
    pub ns: u64,
}

/// How many times [`Clock::sample`] reads at most.
const SAMPLE_TRIES: u32 = 4;

/// A reading whose two counter reads are at most this far apart (ns) is
/// taken as it is.  Far above the cost of three clock reads (about 50 ns on
/// hardware, a few us under TCG), far below any tolerance a guest has.
pub const SAMPLE_TIGHT_NS: u64 = 10_000;

impl Clock {
    /// Read the counter and the clock as one instant: counter, clock,
    /// counter again, until the two counter reads are at most
    /// [`SAMPLE_TIGHT_NS`] apart (at most [`SAMPLE_TRIES`] times; else the
    /// tightest reading).  Compared in cycles, converted once in
    /// [`Clock::new`]: the host timer's callback samples at every delivery
    /// of an emulated timer.
    ///
    /// A deadline converted with the counter read once and the clock read
    /// later is late by whatever passed in between: an interrupt, or the
    /// host CPU itself stalled (a nested host's vCPU, or QEMU running its
    /// other vCPUs) for as long as milliseconds.  The counter read before
    /// the clock keeps the conversion never early (see [`Clock::expiry`]),
    /// and the second read bounds how late it can be.
    pub fn sample(self, cycles: impl Fn() -> u64, ns: impl Fn() -> u64) -> Sample {
        let read = || {
            let before = cycles();
            let now = ns();
            let gap = cycles().wrapping_sub(before);
            (
                gap,
                Sample {
                    cycles: before,
                    ns: now,
                },
            )
        };
        let (mut gap, mut best) = read();
        for _ in 1..SAMPLE_TRIES {
            if gap <= self.tight {
                break;
            }
            let (g, s) = read();
            if g < gap {
                (gap, best) = (g, s);
            }
        }
        best
    }

    /// The host time (ns) at which a counter that read `now` at `at`
    /// reaches `deadline`: `at.ns` if it already has, else never before
    /// (the distance is rounded up, and `at.cycles` was read before
    /// `at.ns`).  `now` is `at.cycles` in the caller's view (less its
    /// offset).  Saturates at `u64::MAX`.
    pub fn expiry(self, at: Sample, now: u64, deadline: u64) -> u64 {
        if deadline <= now {
            at.ns
        } else {
            at.ns.saturating_add(self.cycles_to_ns_ceil(deadline - now))
        }
    }
}

/// `value * mul / div`, exactly, saturating at `u64::MAX`.
///
/// One of `mul` and `div` is [`NSEC_PER_SEC`] and the other a frequency of
/// at most [`MAX_FREQ_HZ`], so `rem * mul < div * mul <= 10^19 < 2^64`: the
/// remainder product never overflows and no 128-bit division (which the
/// kernel does not provide) is needed.
const fn scale(value: u64, mul: u64, div: u64, ceil: bool) -> u64 {
    let whole = value / div;
    let rem = value % div;
    let Some(rem_prod) = rem.checked_mul(mul) else {
        // Unreachable by the bound above; saturate rather than panic.
        return u64::MAX;
    };
    let rem_part = rem_prod / div;
    let round_up = ceil && rem_prod % div != 0;
    match whole.checked_mul(mul) {
        Some(w) => match w.checked_add(rem_part) {
            Some(s) if round_up => s.saturating_add(1),
            Some(s) => s,
            None => u64::MAX,
        },
        None => u64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_frequencies() {
        assert_eq!(Clock::new(0), None);
        assert_eq!(Clock::new(MAX_FREQ_HZ + 1), None);
        assert_eq!(Clock::new(MAX_FREQ_HZ).map(Clock::hz), Some(MAX_FREQ_HZ));
    }

    #[test]
    fn riscv_timebase() {
        let c = Clock::new(10_000_000).unwrap();
        assert_eq!(c.cycles_to_ns(1), 100);
        assert_eq!(c.ns_to_cycles(199), 1);
        assert_eq!(c.cycles_to_ns(u64::MAX), u64::MAX);
        assert_eq!(c.ns_to_cycles(u64::MAX), u64::MAX / 100);
    }

    #[test]
    fn sample_skips_a_stall() {
        use core::cell::Cell;
        let c = Clock::new(1_000_000_000).unwrap();
        let counter = Cell::new(1000u64);
        let stall = Cell::new(5_000_000u64);
        // The first clock read comes after a 5 ms stall; later ones not.
        let s = c.sample(
            || counter.get(),
            || {
                counter.set(counter.get() + stall.replace(0));
                counter.get()
            },
        );
        assert_eq!(
            s,
            Sample {
                cycles: 5_001_000,
                ns: 5_001_000
            }
        );
        assert_eq!(c.expiry(s, s.cycles, s.cycles + 10), s.ns + 10);
        assert_eq!(c.expiry(s, s.cycles, s.cycles - 10), s.ns);
    }

    #[test]
    fn sample_is_tight_at_ten_us_in_cycles() {
        use core::cell::Cell;
        // 10 MHz: 10 us is 100 cycles.  A reading whose counter moved that
        // much is taken; one more cycle, and it reads again.
        let c = Clock::new(10_000_000).unwrap();
        for (gap, reads) in [(100u64, 1usize), (101, 4)] {
            let counter = Cell::new(0u64);
            let n = Cell::new(0usize);
            c.sample(
                || counter.get(),
                || {
                    n.set(n.get() + 1);
                    counter.set(counter.get() + gap);
                    0
                },
            );
            assert_eq!(n.get(), reads, "{gap} cycles apart");
        }
    }

    #[test]
    fn sample_keeps_the_tightest() {
        use core::cell::Cell;
        let c = Clock::new(1_000_000_000).unwrap();
        let counter = Cell::new(0u64);
        let stalls = [9_000_000u64, 3_000_000, 7_000_000, 4_000_000];
        let n = Cell::new(0usize);
        let s = c.sample(
            || counter.get(),
            || {
                let i = n.get();
                n.set(i + 1);
                counter.set(counter.get() + stalls[i]);
                counter.get()
            },
        );
        // Every reading stalled: the one with the shortest stall (3 ms).
        assert_eq!(n.get(), 4);
        assert_eq!(
            s,
            Sample {
                cycles: 9_000_000,
                ns: 12_000_000
            }
        );
    }

    #[test]
    fn ceil_never_early() {
        let c = Clock::new(62_500_000).unwrap(); // arm64 virt under QEMU
        for cycles in [1u64, 3, 62_499_999, 1 << 40] {
            let ns = c.cycles_to_ns_ceil(cycles);
            assert!(c.ns_to_cycles(ns) >= cycles, "{cycles} cycles -> {ns} ns");
        }
    }
}
