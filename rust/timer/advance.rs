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
//! A new vCPU starts from the estimate the last destroyed one reached; from
//! nothing (0), its first measurement is the estimate.
//!
//! A host timer that fired early by less than the estimate (a deadline
//! nearer than the estimate when it was armed) measures the path just as
//! well: it took `used + l - w`, compared with the estimate.
//!
//! An entry that needs no wait-out (RISC-V's direct WFI: the hart raises
//! the interrupt itself) must come early enough for the rest of the entry
//! and the guest's way back to its WFI, which the host does not see: it
//! tunes towards the path plus a margin ([`Advance::tune_ahead`]).
//!
//! A running vCPU, which the host timer takes out of the guest, must not
//! wait at all: a wait-out would be time taken from a guest that could have
//! run.  Its estimate (a second one, of that shorter path) tunes towards
//! the path less a margin ([`Advance::tune_behind`]), so that it comes that
//! much after the deadline and the path's jitter stays within it.
//!
//! Both moves are bounded by the maximum and skip outliers (a measurement
//! beyond the maximum: the vCPU was preempted, or its deadline moved), so
//! the estimate converges to the path's length and never exceeds the bound.
//! The wait makes it never early.
//!
//! Both architectures use it the same way ([`Advance::lead`] when a blocked
//! vCPU's host timer starts, [`distance`] and [`wait_ticks`] when the vCPU
//! is back, [`Advance::tune`] with what they found); where the vCPU waits
//! and where it is measured differ (`vcpu.rs`, `el1.rs`).

use core::sync::atomic::{AtomicU64, Ordering};

use super::clock::Clock;

/// The advance of a host timer started without one (at its deadline, for a
/// deadline already passed, or with advance off): its delivery says nothing
/// about the path's length.
pub const NOT_TUNABLE: u64 = u64::MAX;

/// The share of the error corrected per delivery.
pub const STEP: u64 = 2;

/// The margin of an entry without a wait-out ([`Advance::tune_ahead`]):
/// a quarter of the path's length.
pub const MARGIN_SHARE: u64 = 4;

/// The margin of a running vCPU's delivery ([`Advance::tune_behind`]): an
/// eighth of the path's length.
pub const BEHIND_SHARE: u64 = 8;

/// How slowly a running vCPU's estimate grows ([`Advance::tune_behind`]):
/// by this share of a late entry's excess.  A late outlier (the host's own
/// tick just before the host timer) would otherwise have the next entries
/// wait; a wait shrinks the estimate by [`STEP`] as usual.
pub const BEHIND_GROWTH: u64 = 8;

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

    /// The advance for the host timer of a blocked vCPU whose deadline is
    /// `ahead_ns` away: the estimate, or what is left if the deadline is
    /// nearer (the timer then fires at once, and its delivery measures the
    /// path just as well); [`NOT_TUNABLE`] with advance off or a deadline
    /// already passed.
    pub fn lead(&self, ahead_ns: u64) -> u64 {
        if self.enabled() && ahead_ns > 0 {
            self.ns().min(ahead_ns)
        } else {
            NOT_TUNABLE
        }
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
        self.toward(used_ns.saturating_add(late_ns).saturating_sub(waited_ns));
    }

    /// Feedback from an entry that needs no wait-out (a direct timer, whose
    /// hardware raises the interrupt at the deadline): the host timer fired
    /// `used_ns` before the deadline and the vCPU was ready to enter
    /// `ahead_ns` before it.  What follows, the rest of the entry and the
    /// guest's way back to its WFI, must end before the deadline too, and
    /// is not measured: the estimate moves towards the path plus a
    /// [`MARGIN_SHARE`] of it, so that such entries come that much ahead.
    /// Only the vCPU thread calls this.
    pub fn tune_ahead(&self, used_ns: u64, ahead_ns: u64) {
        if !self.enabled() || ahead_ns > self.max_ns {
            return;
        }
        let path = used_ns.saturating_sub(ahead_ns);
        self.toward(path.saturating_add(path / MARGIN_SHARE));
    }

    /// Feedback from a delivery to a running vCPU, which its host timer took
    /// out of the guest: fired `used_ns` before the deadline, it reached
    /// guest entry `late_ns` after it, or had to wait `waited_ns` for it.
    /// That wait is taken from the guest, so the estimate moves towards the
    /// path less a [`BEHIND_SHARE`] of it: such entries come that much
    /// after the deadline, and the wait stays 0 while the path varies
    /// within the margin.  Up only by [`BEHIND_GROWTH`] of the difference.
    /// Only the vCPU thread calls this.
    pub fn tune_behind(&self, used_ns: u64, late_ns: u64, waited_ns: u64) {
        if !self.enabled() || late_ns > self.max_ns || waited_ns > self.max_ns {
            return;
        }
        let path = used_ns.saturating_add(late_ns).saturating_sub(waited_ns);
        self.toward_by(path - path / BEHIND_SHARE, BEHIND_GROWTH);
    }

    /// Move the estimate `1 / STEP` of the way towards `path`, within the
    /// bound; an estimate of 0 (nothing learnt: a new vCPU without a seed)
    /// takes the first measurement whole.
    fn toward(&self, path: u64) {
        self.toward_by(path, STEP);
    }

    /// [`Self::toward`], up by `1 / up` of the difference.
    fn toward_by(&self, path: u64, up: u64) {
        let cur = self.ns();
        let next = if cur == 0 {
            path
        } else if path > cur {
            cur.saturating_add((path - cur).div_ceil(up))
        } else {
            cur - (cur - path) / STEP
        };
        // INVARIANT: clamped to the bound.
        self.ns.store(next.min(self.max_ns), Ordering::Relaxed);
    }
}

/// Where counter value `now` is from `deadline`, in ns (rounded up):
/// `(late, 0)` at or past it, `(0, ahead)` before it.
pub fn distance(clock: Clock, now: u64, deadline: u64) -> (u64, u64) {
    if now >= deadline {
        (clock.cycles_to_ns_ceil(now - deadline), 0)
    } else {
        (0, clock.cycles_to_ns_ceil(deadline - now))
    }
}

/// Busy-wait until the host counter, read by `counter`, has moved `ticks`
/// on from `start` (an earlier reading of it), with `relax` between reads:
/// the wait-out of an early delivery.  Whatever the caller did since
/// `start` is part of the wait.  Counted on the host's counter, not the
/// guest's, so that a change of the VM's counter offset meanwhile cannot
/// stretch it.  The ticks it took since `start` (at least `ticks`).
pub fn wait_ticks(start: u64, ticks: u64, counter: impl Fn() -> u64, relax: impl Fn()) -> u64 {
    let mut spun = 0;
    while spun < ticks {
        relax();
        spun = counter().wrapping_sub(start);
    }
    spun
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

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
    fn from_nothing_the_first_measurement_is_the_estimate() {
        let a = Advance::new(0, 50_000);
        // Fired at the deadline (an advance of 0), entered 30 us late.
        a.tune(0, 30_000, 0);
        assert_eq!(a.ns(), 30_000);
        // Then half way, as always.
        a.tune(30_000, 10_000, 0);
        assert_eq!(a.ns(), 35_000);
        // Within the bound.
        let b = Advance::new(0, 20_000);
        b.tune(0, 20_000, 0);
        b.tune(20_000, 15_000, 0);
        assert_eq!(b.ns(), 20_000);
    }

    #[test]
    fn bounded_and_ignores_outliers() {
        // Both estimates: a blocked vCPU's (`tune`), a running one's
        // (`tune_behind`).
        let tunes: [fn(&Advance, u64, u64, u64); 2] = [Advance::tune, Advance::tune_behind];
        for tune in tunes {
            let a = Advance::new(1_000_000, 50_000);
            assert_eq!(a.ns(), 50_000);
            tune(&a, 50_000, 40_000, 0);
            assert_eq!(a.ns(), 50_000);
            tune(&a, 50_000, 60_000, 0);
            tune(&a, 50_000, 0, 60_000);
            assert_eq!(a.ns(), 50_000);
            let off = Advance::off();
            tune(&off, 0, 10, 0);
            assert_eq!(off.ns(), 0);
            assert!(!off.enabled());
        }
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

    #[test]
    fn lead_is_what_is_left_and_none_when_off_or_passed() {
        let a = Advance::new(20_000, 50_000);
        assert_eq!(a.lead(100_000), 20_000);
        assert_eq!(a.lead(5_000), 5_000);
        assert_eq!(a.lead(0), NOT_TUNABLE);
        assert_eq!(Advance::off().lead(100_000), NOT_TUNABLE);
        // On, from nothing: 0 is an advance too (it measures the path).
        assert_eq!(Advance::new(0, 50_000).lead(100_000), 0);
    }

    #[test]
    fn an_entry_without_wait_out_converges_a_margin_ahead() {
        // The path takes 40 us; entries that need no wait-out aim for the
        // path plus a quarter, 50 us, from either side.
        for start in [0, 20_000, 90_000] {
            let a = Advance::new(start, 100_000);
            let path = 40_000u64;
            for _ in 0..64 {
                let adv = a.ns();
                if adv >= path {
                    a.tune_ahead(adv, adv - path);
                } else {
                    // Late: measured as such.
                    a.tune(adv, path - adv, 0);
                }
            }
            assert!(a.ns().abs_diff(50_000) <= STEP, "{} from {start}", a.ns());
        }
        // Never past the bound, and an entry farther ahead than the bound
        // is not an advance (the counter offset moved back).
        let a = Advance::new(45_000, 50_000);
        a.tune_ahead(45_000, 0);
        assert_eq!(a.ns(), 50_000);
        a.tune_ahead(50_000, 60_000);
        assert_eq!(a.ns(), 50_000);
        let off = Advance::off();
        off.tune_ahead(0, 0);
        assert_eq!(off.ns(), 0);
    }

    #[test]
    fn a_running_delivery_converges_a_margin_behind() {
        // The path takes 24 us; a running vCPU's entries aim an eighth of
        // it after the deadline, at an estimate of 21 us, from either side
        // and from nothing, and never wait once there.
        for start in [0, 10_000, 40_000] {
            let a = Advance::new(start, 50_000);
            let path = 24_000u64;
            let mut waited = 0;
            for _ in 0..64 {
                let adv = a.ns();
                if adv > path {
                    a.tune_behind(adv, 0, adv - path);
                } else {
                    a.tune_behind(adv, path - adv, 0);
                }
                waited = adv.saturating_sub(path);
            }
            assert!(a.ns().abs_diff(21_000) <= STEP, "{} from {start}", a.ns());
            assert_eq!(waited, 0, "from {start}");
        }
        // A late outlier (40 us more) moves it up by an eighth only, and
        // the waits after it shrink it by half each.
        let a = Advance::new(0, 100_000);
        a.tune_behind(0, 24_000, 0);
        assert_eq!(a.ns(), 21_000);
        a.tune_behind(21_000, 43_000, 0);
        assert_eq!(a.ns(), 21_000 + (56_000 - 21_000) / 8);
        a.tune_behind(25_375, 0, 1_375);
        assert_eq!(a.ns(), 25_375 - (25_375 - 21_000) / 2);
    }

    #[test]
    fn distance_and_wait() {
        let clock = Clock::new(10_000_000).unwrap();
        assert_eq!(distance(clock, 105, 100), (500, 0));
        assert_eq!(distance(clock, 100, 100), (0, 0));
        assert_eq!(distance(clock, 97, 100), (0, 300));
        let now = Cell::new(40u64);
        let spun = wait_ticks(now.get(), 7, || now.get(), || now.set(now.get() + 3));
        assert_eq!((spun, now.get()), (9, 49));
        assert_eq!(wait_ticks(now.get(), 0, || now.get(), || unreachable!()), 0);
        // From an earlier reading: what came since counts.
        let spun = wait_ticks(45, 7, || now.get(), || now.set(now.get() + 3));
        assert_eq!((spun, now.get()), (7, 52));
    }
}
