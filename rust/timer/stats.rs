// SPDX-License-Identifier: GPL-2.0

//! Per-vCPU timer statistics: relaxed atomic counters, no locks, cheap
//! enough to stay on.  Each counter has one writer at a time in practice
//! (the vCPU thread, or the vCPU's host timer callback); `fetch_add` keeps
//! them exact when the two overlap.

use core::sync::atomic::{AtomicU64, Ordering};

/// Buckets of the lateness histogram: bucket 0 counts deliveries on the
/// deadline's tick, bucket `i` (1..=14) those `2^(i-1)..2^i` ticks late, the
/// last one everything later.
pub const LATE_BUCKETS: usize = 16;

/// The histogram bucket of a delivery `ticks` counter ticks late: the bit
/// length of `ticks`, at most `LATE_BUCKETS - 1`.  On the delivery path of
/// every interrupt.
pub fn late_bucket(ticks: u64) -> usize {
    if cfg!(target_arch = "riscv64") {
        bit_len_search(ticks)
    } else {
        bit_len_clz(ticks)
    }
}

/// [`late_bucket`] with `leading_zeros()`: one instruction where the CPU
/// counts leading zeros (arm64, x86).
fn bit_len_clz(ticks: u64) -> usize {
    let bit_len = (u64::BITS - ticks.leading_zeros()) as usize;
    bit_len.min(LATE_BUCKETS - 1)
}

/// [`late_bucket`] by a binary search of about twenty instructions: base
/// RV64 (no Zbb) has no such instruction, and computes `leading_zeros()`
/// in software with some forty.
fn bit_len_search(ticks: u64) -> usize {
    const LAST: usize = LATE_BUCKETS - 1;
    if ticks >> (LAST - 1) != 0 {
        return LAST;
    }
    // Below 2^14 now: four halvings find the bit length.
    let (mut t, mut n) = (ticks, 0);
    for shift in [8, 4, 2, 1] {
        if t >> shift != 0 {
            t >>= shift;
            n += shift;
        }
    }
    n + t as usize
}

/// How a kick reached the vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kick {
    /// It was blocked (WFI) and is woken.
    Woken,
    /// It runs in the guest on another CPU: an IPI makes it exit.
    Ipi,
    /// Neither: it will see the interrupt at its next guest entry.
    Quiet,
}

/// The counters of one vCPU.
#[derive(Debug, Default)]
pub struct Stats {
    irqs: AtomicU64,
    early: AtomicU64,
    wakeups: AtomicU64,
    ipis: AtomicU64,
    starts: AtomicU64,
    cancels: AtomicU64,
    migrations: AtomicU64,
    spin_ns: AtomicU64,
    untrapped: AtomicU64,
    untrapped_ns: AtomicU64,
    late: [AtomicU64; LATE_BUCKETS],
}

/// A copy of [`Stats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Timer interrupts the backend delivered (SBI mode: VSTIP raised; Sstc:
    /// a blocked vCPU woken for its deadline).  Sstc interrupts that the
    /// hart raises while the guest runs never reach the host.
    pub irqs: u64,
    /// Deliveries before the deadline (a bug: must stay 0).
    pub early: u64,
    /// Kicks that woke a blocked vCPU.
    pub wakeups: u64,
    /// Kicks that needed an IPI.
    pub ipis: u64,
    /// Host timer starts.
    pub starts: u64,
    /// Host timer cancels of a started timer.
    pub cancels: u64,
    /// Host timers moved to the vCPU's new CPU.
    pub migrations: u64,
    /// Host CPU time spent waiting for deadlines before guest entry, with
    /// interrupts off (the price of the timer advance), in ns.
    pub spin_ns: u64,
    /// Guest entries with WFI not trapping, for a vCPU woken before its
    /// deadline: the hart raises the interrupt at the deadline, no wait.
    pub untrapped: u64,
    /// Time from those entries to the vCPU's next exit, in ns: while the
    /// guest waits in an untrapped WFI, the host CPU is its.
    pub untrapped_ns: u64,
    /// Lateness of each delivery, in counter ticks ([`late_bucket`]):
    /// RISC-V at guest entry, arm64 as the line rises.
    pub late: [u64; LATE_BUCKETS],
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    /// All zero.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn irq(&self, early: bool) {
        bump(&self.irqs);
        if early {
            bump(&self.early);
        }
    }

    pub(crate) fn kick(&self, how: Kick) {
        match how {
            Kick::Woken => bump(&self.wakeups),
            Kick::Ipi => bump(&self.ipis),
            Kick::Quiet => {}
        }
    }

    pub(crate) fn start(&self) {
        bump(&self.starts);
    }

    pub(crate) fn cancel(&self) {
        bump(&self.cancels);
    }

    pub(crate) fn migration(&self) {
        bump(&self.migrations);
    }

    pub(crate) fn spin(&self, ns: u64) {
        self.spin_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub(crate) fn untrapped(&self) {
        bump(&self.untrapped);
    }

    pub(crate) fn untrapped_for(&self, ns: u64) {
        self.untrapped_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub(crate) fn late(&self, ticks: u64) {
        bump(&self.late[late_bucket(ticks)]);
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            irqs: get(&self.irqs),
            early: get(&self.early),
            wakeups: get(&self.wakeups),
            ipis: get(&self.ipis),
            starts: get(&self.starts),
            cancels: get(&self.cancels),
            migrations: get(&self.migrations),
            spin_ns: get(&self.spin_ns),
            untrapped: get(&self.untrapped),
            untrapped_ns: get(&self.untrapped_ns),
            late: core::array::from_fn(|i| get(&self.late[i])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_log2_and_capped() {
        assert_eq!(late_bucket(0), 0);
        assert_eq!(late_bucket(1), 1);
        assert_eq!(late_bucket(2), 2);
        assert_eq!(late_bucket(3), 2);
        assert_eq!(late_bucket(4), 3);
        assert_eq!(late_bucket((1 << 14) - 1), 14);
        assert_eq!(late_bucket(1 << 14), 15);
        for t in (0..1u64 << 16).chain((14..64).flat_map(|b| [1 << b, (1 << b) - 1])) {
            assert_eq!(bit_len_search(t), bit_len_clz(t), "{t}");
        }
        assert_eq!(late_bucket(u64::MAX), 15);
    }

    #[test]
    fn snapshot_counts_each_event() {
        let s = Stats::new();
        s.irq(false);
        s.irq(true);
        s.late(5);
        s.kick(Kick::Ipi);
        s.kick(Kick::Woken);
        s.kick(Kick::Quiet);
        s.spin(700);
        s.spin(300);
        s.untrapped();
        s.untrapped_for(40);
        let snap = s.snapshot();
        assert_eq!(
            (snap.irqs, snap.early, snap.ipis, snap.wakeups),
            (2, 1, 1, 1)
        );
        assert_eq!(snap.late[3], 1);
        assert_eq!(snap.spin_ns, 1000);
        assert_eq!((snap.untrapped, snap.untrapped_ns), (1, 40));
    }
}
