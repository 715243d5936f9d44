// SPDX-License-Identifier: GPL-2.0

//! Adaptive timer advance, after x86's `lapic_timer_advance`: the host
//! timer fires early by an estimate of how long the delivery path takes
//! (callback, wakeup, scheduling, guest entry), and the vCPU waits out what
//! is left of it just before guest entry.  The estimate follows the
//! lateness measured at entry, per vCPU:
//!
//! - entered late by `l`: the path took longer; the estimate grows by
//!   `l / STEP`;
//! - had to wait `w`: the estimate was too long by `w`; it shrinks by
//!   `w / STEP`.
//!
//! A host timer that fired early by less than the estimate (a deadline
//! nearer than the estimate when it was armed) measures the path just as
//! well: it took `used + l - w`, compared with the estimate.
//!
//! Both moves are bounded by the maximum and skip outliers (a measurement
//! beyond the maximum: the vCPU was preempted, or its deadline moved), so
//! the estimate converges to the path's length and never exceeds the bound.
//! The wait makes it never early.

use core::sync::atomic::{AtomicU64, Ordering};

/// The share of the error corrected per delivery.
pub const STEP: u64 = 2;

/// The per-vCPU advance estimate.
///
/// # Invariants
///
/// `ns <= max_ns`; `max_ns == 0` means advance is off.
#[derive(Debug)]
pub struct Advance {
    ns: AtomicU64,
    max_ns: u64,
}

impl Advance {
    /// An estimate starting at `initial_ns` (clamped to `max_ns`); a
    /// `max_ns` of 0 turns advance off.
    pub fn new(initial_ns: u64, max_ns: u64) -> Self {
        // INVARIANT: clamped.
        Self {
            ns: AtomicU64::new(initial_ns.min(max_ns)),
            max_ns,
        }
    }

    /// Advance off.
    pub fn off() -> Self {
        Self::new(0, 0)
    }

    /// Whether advance is on.
    pub fn enabled(&self) -> bool {
        self.max_ns != 0
    }

    /// The current estimate in ns.
    pub fn ns(&self) -> u64 {
        self.ns.load(Ordering::Relaxed)
    }

    /// The bound.
    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    /// Feedback from one delivery whose host timer fired `used_ns` before
    /// its deadline: it reached guest entry `late_ns` after the deadline,
    /// or had to wait `waited_ns` for it (one of them is 0).  The path from
    /// the host timer to guest entry took `used_ns + late_ns - waited_ns`;
    /// the estimate moves towards that by `1 / STEP` of the difference.
    /// Only the vCPU thread calls this.
    pub fn tune(&self, used_ns: u64, late_ns: u64, waited_ns: u64) {
        if !self.enabled() || late_ns > self.max_ns || waited_ns > self.max_ns {
            return;
        }
        let path = used_ns.saturating_add(late_ns).saturating_sub(waited_ns);
        let cur = self.ns();
        let next = if path > cur {
            cur.saturating_add((path - cur).div_ceil(STEP))
        } else {
            cur - (cur - path) / STEP
        };
        // INVARIANT: clamped to the bound.
        self.ns.store(next.min(self.max_ns), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_to_the_path_length_from_both_sides() {
        for start in [0, 40_000] {
            let a = Advance::new(start, 50_000);
            let path = 17_000u64;
            for _ in 0..64 {
                let adv = a.ns();
                if path > adv {
                    a.tune(adv, path - adv, 0);
                } else {
                    a.tune(adv, 0, adv - path);
                }
            }
            assert!(a.ns().abs_diff(path) <= STEP, "{} from {start}", a.ns());
        }
    }

    #[test]
    fn bounded_and_ignores_outliers() {
        let a = Advance::new(1_000_000, 50_000);
        assert_eq!(a.ns(), 50_000);
        a.tune(50_000, 40_000, 0);
        assert_eq!(a.ns(), 50_000);
        a.tune(50_000, 60_000, 0);
        a.tune(50_000, 0, 60_000);
        assert_eq!(a.ns(), 50_000);
        let off = Advance::off();
        off.tune(0, 10, 0);
        assert_eq!(off.ns(), 0);
        assert!(!off.enabled());
    }

    #[test]
    fn a_shortened_advance_measures_the_path_too() {
        // Fired 5 us before the deadline (nearer than the 20 us estimate),
        // waited 2 us at entry: the path took 3 us.
        let a = Advance::new(20_000, 50_000);
        a.tune(5_000, 0, 2_000);
        assert_eq!(a.ns(), 20_000 - 17_000 / STEP);
        // Fired 5 us early, entered 30 us late: the path took 35 us.
        let b = Advance::new(20_000, 50_000);
        b.tune(5_000, 30_000, 0);
        assert_eq!(b.ns(), 20_000 + 15_000 / STEP);
    }
}
