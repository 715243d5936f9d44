// SPDX-License-Identifier: GPL-2.0

//! The host clock and the vCPU's one host timer, as both timer logics use
//! them: [`HostClock`] is what the host gives (each logic's `Platform`
//! extends it), [`HostTimer`] is how a logic starts and stops the timer, so
//! that both architectures count the same things and draw the same line at
//! the end of host time.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::stats::Stats;
use super::Expiry;

/// The end of host time: `KTIME_MAX`, the largest `ktime_t` (which is
/// signed), in ns.
pub const KTIME_MAX: u64 = i64::MAX as u64;

/// The host's clock and the vCPU's host timer, as the kernel glue gives
/// them (an hrtimer on `CLOCK_MONOTONIC`, hard, absolute, pinned), and the
/// host tests simulate them.
pub trait HostClock {
    /// Host monotonic time in ns, the clock of the host timer.
    fn host_ns(&self) -> u64;
    /// The CPU this runs on.
    fn cpu(&self) -> u32;
    /// Start the vCPU's host timer at absolute `expires_ns`, on this CPU.
    fn timer_start(&self, expires_ns: u64);
    /// Stop the host timer; waits for a callback running elsewhere.
    /// Whether it was started.
    fn timer_cancel(&self) -> bool;
}

/// `ns` as an expiry the host timer can take; `None` past [`KTIME_MAX`]:
/// such a deadline never comes, and no host timer is started for it.
pub fn ktime(ns: u64) -> Option<u64> {
    if ns <= KTIME_MAX {
        Some(ns)
    } else {
        None
    }
}

/// What a callback returns for its next expiry `at`: [`Expiry::Again`],
/// or [`Expiry::Done`] past [`KTIME_MAX`] (never), as [`HostTimer::start`]
/// has it.
pub fn again(at: u64) -> Expiry {
    ktime(at).map_or(Expiry::Done, Expiry::Again)
}

/// No CPU: the host timer has never been started.
const NO_CPU: u32 = u32::MAX;

/// The bookkeeping of a vCPU's host timer: where it was last started.
///
/// # Invariants
///
/// - `cpu` is [`NO_CPU`] until the first [`HostTimer::start`] that started
///   the timer, then the CPU of the latest one.
/// - `moved` is whether the latest start was on another CPU than the one
///   before it (a migration); false before a second start.
#[derive(Debug)]
pub struct HostTimer {
    cpu: AtomicU32,
    moved: AtomicBool,
}

impl Default for HostTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl HostTimer {
    /// A host timer never started.
    pub fn new() -> Self {
        // INVARIANT: never started.
        Self {
            cpu: AtomicU32::new(NO_CPU),
            moved: AtomicBool::new(false),
        }
    }

    /// The CPU the timer was last started on; `None` if never.
    pub fn cpu(&self) -> Option<u32> {
        match self.cpu.load(Ordering::Relaxed) {
            NO_CPU => None,
            cpu => Some(cpu),
        }
    }

    /// Whether the timer was last started on the CPU `h` runs on.
    pub fn started_here<H: HostClock>(&self, h: &H) -> bool {
        self.cpu() == Some(h.cpu())
    }

    /// Whether the timer's last two starts were both on the CPU `h` runs
    /// on (or its only one): the vCPU has stayed here, not being moved.
    pub fn settled_here<H: HostClock>(&self, h: &H) -> bool {
        self.started_here(h) && !self.moved.load(Ordering::Relaxed)
    }

    /// Start the host timer at absolute `at` (ns), on this CPU, and count
    /// it in `stats`: a start, and a migration if the timer last started
    /// on another CPU.  Past [`KTIME_MAX`] the deadline never comes: no
    /// start, nothing counted, and `false`.
    ///
    /// The caller follows the rule "cancel, change, start": the timer is
    /// not queued and its callback does not run; or it is queued on this
    /// CPU, whose interrupts are off, and the start replaces its expiry.
    pub fn start<H: HostClock>(&self, h: &H, stats: &Stats, at: u64) -> bool {
        let Some(at) = ktime(at) else {
            return false;
        };
        let cpu = h.cpu();
        // INVARIANT: the CPU of this start.
        let last = self.cpu.swap(cpu, Ordering::Relaxed);
        let moved = last != NO_CPU && last != cpu;
        self.moved.store(moved, Ordering::Relaxed);
        if moved {
            stats.migration();
        }
        stats.start();
        h.timer_start(at);
        true
    }

    /// Stop the host timer, waiting for a callback running elsewhere, and
    /// count it in `stats` if it was started.  Whether it was.
    pub fn cancel<H: HostClock>(&self, h: &H, stats: &Stats) -> bool {
        let was = h.timer_cancel();
        if was {
            stats.cancel();
        }
        was
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    struct H {
        cpu: Cell<u32>,
        started: Cell<Option<u64>>,
    }

    impl HostClock for H {
        fn host_ns(&self) -> u64 {
            0
        }
        fn cpu(&self) -> u32 {
            self.cpu.get()
        }
        fn timer_start(&self, ns: u64) {
            self.started.set(Some(ns));
        }
        fn timer_cancel(&self) -> bool {
            self.started.take().is_some()
        }
    }

    /// A host on `cpu`, a timer never started, and its counters.
    fn setup(cpu: u32) -> (H, HostTimer, Stats) {
        let h = H {
            cpu: Cell::new(cpu),
            started: Cell::new(None),
        };
        (h, HostTimer::new(), Stats::new())
    }

    #[test]
    fn counts_a_migration_only_after_a_start_elsewhere() {
        let (h, t, s) = setup(3);
        assert!(t.start(&h, &s, 10));
        assert!(t.started_here(&h) && t.settled_here(&h));
        assert!(t.start(&h, &s, 20));
        h.cpu.set(1);
        assert!(!t.started_here(&h) && !t.settled_here(&h));
        assert!(t.cancel(&h, &s));
        assert!(!t.cancel(&h, &s));
        assert!(t.start(&h, &s, 30));
        // Here now, but moved to get here: not settled until the next
        // start here.
        assert!(t.started_here(&h) && !t.settled_here(&h));
        assert!(t.start(&h, &s, 40));
        assert!(t.settled_here(&h));
        let snap = s.snapshot();
        assert_eq!((snap.starts, snap.cancels, snap.migrations), (4, 1, 1));
    }

    #[test]
    fn past_ktime_max_is_never() {
        let (h, t, s) = setup(0);
        assert!(!t.start(&h, &s, KTIME_MAX + 1));
        assert_eq!((h.started.get(), t.cpu()), (None, None));
        assert!(t.start(&h, &s, KTIME_MAX));
        assert_eq!(h.started.get(), Some(KTIME_MAX));
        assert_eq!(again(KTIME_MAX + 1), Expiry::Done);
        assert_eq!(again(KTIME_MAX), Expiry::Again(KTIME_MAX));
        assert_eq!(s.snapshot().starts, 1);
    }
}
