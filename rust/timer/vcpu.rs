// SPDX-License-Identifier: GPL-2.0

//! The per-vCPU RISC-V guest timer, as a state machine over a [`Platform`].
//!
//! Two modes, fixed when the vCPU is created:
//!
//! - [`Mode::Sstc`]: the guest programs `vstimecmp` itself and the hart
//!   raises VSTIP.  The host keeps the deadline across load/put and arms a
//!   host timer only to wake the vCPU when it blocks in WFI.
//! - [`Mode::Sbi`]: the guest asks for its deadline with SBI TIME
//!   `set_timer`; a host timer raises VSTIP when the deadline is reached.
//!
//! Timer advance ([`super::advance`]): for a vCPU blocked in WFI, the host
//! timer fires early by the vCPU's estimate of the wakeup path; the delivery
//! is then noted for the next guest entry ([`VcpuTimer::pre_enter`]), which
//! waits out the rest of the deadline and, in SBI mode, raises VSTIP.  A
//! vCPU that is not blocked (running in the guest, or runnable) must not
//! wait for its deadline: that would be time taken from the guest.  Its SBI
//! host timer fires early only by a second estimate, of the path from the
//! host timer to the next guest entry of a vCPU that runs in the guest (the
//! exit it forces, and the entry back), tuned to end a margin after the
//! deadline ([`Advance::tune_behind`]): the exit the interrupt costs the
//! guest anyway comes that much sooner, and the guest does not wait.  So an
//! SBI timer armed while the vCPU runs moves to the wakeup's lead when the
//! vCPU blocks ([`VcpuTimer::put`]) and back if the vCPU enters the guest
//! before it fired.  Every delivery that the host makes is measured at
//! guest entry ([`Stats`]).
//!
//! With Sstc the hart raises the interrupt itself, so a vCPU woken early
//! need not wait: on the CPU it blocked on, if it was not moved there, and
//! where the platform allows it ([`Platform::wfi_untrap_ok`]), it enters
//! at once with WFI not trapping, and the guest's WFI waits for the
//! deadline in the hart.  The next exit makes WFI trap again, unless the
//! deadline is just ahead then ([`VcpuTimer::sync`]).
//!
//! Concurrency: every method but [`VcpuTimer::expired`] runs on the vCPU's
//! own thread (ioctl, run loop, preempt notifiers); `expired` runs in the
//! host timer's callback, on any CPU.  The fields the callback reads are
//! atomics; the vCPU thread cancels the host timer (which waits for a
//! running callback) before it changes them, and starts it after, so the
//! timer's own lock orders the two sides.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::advance::{self, Advance, MARGIN_SHARE, NOT_TUNABLE};
use super::clock::{Clock, Sample};
use super::host_timer::{ktime, HostClock, HostTimer};
use super::stats::{Kick, Stats};
use super::VcpuLogic;

/// A deadline that never comes: SBI `set_timer(-1)`, the reset value.
pub const NEVER: u64 = u64::MAX;

/// `state` register values (`KVM_RISCV_TIMER_STATE_*`).
pub const STATE_OFF: u64 = 0;
/// The timer is armed.
pub const STATE_ON: u64 = 1;

/// How the guest programs its timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `vstimecmp` in hardware (Sstc).
    Sstc,
    /// SBI TIME `set_timer`, emulated with a host timer.
    Sbi,
}

pub use super::Expiry;

/// A ONE_REG timer register (`KVM_REG_RISCV_TIMER_REG(...)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    /// Counter frequency in Hz; read-only in effect.
    Frequency,
    /// The guest's counter.
    Time,
    /// The deadline, in guest counter cycles.
    Compare,
    /// [`STATE_ON`] or [`STATE_OFF`].
    State,
}

impl Reg {
    /// The register with ONE_REG number `num`, in `struct kvm_riscv_timer`
    /// order.
    pub fn from_num(num: u64) -> Option<Self> {
        match num {
            0 => Some(Self::Frequency),
            1 => Some(Self::Time),
            2 => Some(Self::Compare),
            3 => Some(Self::State),
            _ => None,
        }
    }
}

/// Why a ONE_REG access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegError {
    /// A value the register cannot take (`-EINVAL`).
    Invalid,
}

/// What the timer needs from the host, besides its clock and host timer
/// ([`HostClock`]): the kernel glue implements it with CSRs and KVM calls;
/// the host tests with a simulation.
pub trait Platform: HostClock {
    /// The host's counter (the `time` CSR).
    fn host_cycles(&self) -> u64;
    /// The VM's offset from host to guest counter (`htimedelta`).
    fn time_delta(&self) -> u64;
    /// Set the VM's counter offset.
    fn set_time_delta(&self, delta: u64);
    /// The guest's counter: the host's plus the offset.  Read on every
    /// delivery; a platform may read both at once.
    fn guest_cycles(&self) -> u64 {
        self.host_cycles().wrapping_add(self.time_delta())
    }

    /// Make the VS-level timer interrupt pending and kick the vCPU.
    fn irq_raise(&self) -> Kick;
    /// Make it pending just before guest entry (interrupts off, this vCPU
    /// loaded here): straight into the hart's `hvip`, no kick.
    fn irq_raise_now(&self);
    /// Clear the VS-level timer interrupt.
    fn irq_clear(&self);
    /// Whether the VS timer interrupt is pending and enabled by the guest.
    fn irq_pending(&self) -> bool;
    /// Whether the guest enables its timer interrupt (`vsie.STIE`).
    fn irq_enabled(&self) -> bool;

    /// Write the loaded vCPU's `htimedelta` and, with Sstc, `vstimecmp`.
    fn load_csrs(&self, time_delta: u64, compare: Option<u64>);
    /// Read the loaded vCPU's `vstimecmp` (Sstc).
    fn read_compare(&self) -> u64;
    /// Run `f` with preemption disabled (no load/put in between).
    fn atomic<R>(&self, f: impl FnOnce() -> R) -> R;

    /// Wake or kick the vCPU.
    fn kick(&self) -> Kick;
    /// Whether the vCPU blocks in WFI: true from just before the scheduler
    /// puts it until it is woken.  The host timer callback reads it
    /// racily, as a hint.
    fn is_blocking(&self) -> bool;
    /// Whether the vCPU is loaded on this CPU and its thread runs here
    /// (`kvm_get_running_vcpu()`): in the host timer's callback, that the
    /// callback interrupted it, in the guest or on its way in or out, and
    /// it enters the guest next.
    fn running_here(&self) -> bool;
    /// Pause in a busy-wait loop (`cpu_relax`).
    fn relax(&self);

    /// Whether a vCPU woken before its deadline may enter the guest with
    /// WFI not trapping: until its next exit its WFIs keep the host CPU,
    /// so only if nothing else wants it.  Just before guest entry.
    fn wfi_untrap_ok(&self) -> bool;
    /// Make the guest's WFI trap to the host (the default) or not, from
    /// the next guest entry on.  On the vCPU's thread, before entry or
    /// after an exit, interrupts off.
    fn set_wfi_trap(&self, trap: bool);
}

/// The timer state of one vCPU.
///
/// # Invariants
///
/// - The host timer is started only while `armed` is true, and never for
///   [`NEVER`] or an expiry past [`KTIME_MAX`](super::host_timer::KTIME_MAX)
///   ([`HostTimer::start`]).
/// - In [`Mode::Sbi`], `armed` means a deadline is programmed and its
///   interrupt not yet raised.  In [`Mode::Sstc`], it means the wake timer of
///   a blocked vCPU is armed.
/// - `entry` is [`NEVER`] or the deadline a delivery waits on the next
///   guest entry for; SBI: its interrupt is raised (`fired`) or, when the
///   host timer fired early, still `armed`.
/// - `adv_used` is the advance the armed host timer was started with, or
///   [`NOT_TUNABLE`]; `adv_running` tells which estimate it is of:
///   `running`'s (SBI, the vCPU not blocking when it started) or
///   `advance`'s (the vCPU blocking).
/// - `untrapped_at` is [`NEVER`] unless the guest's WFI does not trap: then
///   it is the host counter at the entry that stopped the trap (or at the
///   last exit that kept it off), and the first `sync` after it either
///   restores the trap or keeps it off for a deadline just ahead, counted
///   from there.  Only in [`Mode::Sstc`].
#[derive(Debug)]
pub struct VcpuTimer {
    mode: Mode,
    clock: Clock,
    deadline: AtomicU64,
    armed: AtomicBool,
    /// The deadline whose interrupt was last raised (SBI), [`NEVER`] if none.
    fired: AtomicU64,
    host: HostTimer,
    entry: AtomicU64,
    adv_used: AtomicU64,
    adv_running: AtomicBool,
    untrapped_at: AtomicU64,
    /// The wakeup path of a blocked vCPU.
    advance: Advance,
    /// The delivery path of a running one (SBI).
    running: Advance,
    stats: Stats,
}

/// The advance a host timer was started with, and for which vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lead {
    /// None: at the deadline, or not measured.
    None,
    /// For a blocked vCPU ([`VcpuTimer::advance`]).
    Blocked(u64),
    /// For a running one (`running`).
    Running(u64),
}

impl Lead {
    /// The advance in ns, 0 if none.
    fn ns(self) -> u64 {
        match self {
            Self::None => 0,
            Self::Blocked(ns) | Self::Running(ns) => ns,
        }
    }
}

impl VcpuTimer {
    /// A vCPU timer in `mode`, counting at `clock`, with no deadline.  A
    /// running vCPU's estimate starts from nothing, within the same bound
    /// as `advance`.
    pub fn new(mode: Mode, clock: Clock, advance: Advance) -> Self {
        let running = Advance::new(0, advance.max_ns());
        Self {
            mode,
            clock,
            deadline: AtomicU64::new(NEVER),
            armed: AtomicBool::new(false),
            fired: AtomicU64::new(NEVER),
            host: HostTimer::new(),
            entry: AtomicU64::new(NEVER),
            adv_used: AtomicU64::new(NOT_TUNABLE),
            adv_running: AtomicBool::new(false),
            untrapped_at: AtomicU64::new(NEVER),
            advance,
            running,
            stats: Stats::new(),
        }
    }

    /// The statistics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The timer advance estimate (a blocked vCPU's wakeup).
    pub fn advance(&self) -> &Advance {
        &self.advance
    }

    /// The estimate of a running vCPU's delivery path (SBI).
    pub fn running_advance(&self) -> &Advance {
        &self.running
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The programmed deadline ([`NEVER`] if none).
    pub fn deadline(&self) -> u64 {
        self.deadline.load(Ordering::Acquire)
    }

    /// Whether the host timer is armed.
    pub fn armed(&self) -> bool {
        self.armed.load(Ordering::Acquire)
    }

    fn guest_cycles<P: Platform>(&self, p: &P) -> u64 {
        p.guest_cycles()
    }

    /// The host counter and clock, read as one instant.
    fn sample<P: Platform>(&self, p: &P) -> Sample {
        self.clock.sample(|| p.host_cycles(), || p.host_ns())
    }

    /// The absolute host time at which `deadline` is reached, by the
    /// reading `s` of the host counter and clock; `None` if it never is
    /// (or only past the end of host time).  Never early (see
    /// [`Clock::expiry`]).
    fn expiry_ns<P: Platform>(&self, p: &P, s: Sample, deadline: u64) -> Option<u64> {
        if deadline == NEVER {
            return None;
        }
        let now = s.cycles.wrapping_add(p.time_delta());
        ktime(self.clock.expiry(s, now, deadline))
    }

    /// Arm for `deadline`: the host timer starts, early by the advance
    /// estimate if the vCPU is blocking (else, in SBI mode, by the running
    /// estimate), unless the deadline lies past the end of host time, where
    /// it stays armed but idle.
    ///
    /// With preemption disabled: `set_timer` runs in the guest exit's
    /// handler, preemptible.  Preempted between `armed` and the start, the
    /// vCPU's next load (on another CPU) would start the timer there, which
    /// may fire and raise the interrupt before this start, back on the
    /// thread, starts it once more: a second raise for one deadline.
    fn arm<P: Platform>(&self, p: &P, deadline: u64) {
        if deadline == NEVER {
            return;
        }
        p.atomic(|| self.arm_here(p, deadline));
    }

    /// [`Self::arm`], preemption disabled.
    fn arm_here<P: Platform>(&self, p: &P, deadline: u64) {
        self.armed.store(true, Ordering::Release);
        let s = self.sample(p);
        let Some(ns) = self.expiry_ns(p, s, deadline) else {
            // Never: no host timer (one still queued by a rearm stops).
            self.cancel(p);
            self.adv_used.store(NOT_TUNABLE, Ordering::Relaxed);
            return;
        };
        // Not before now: a deadline nearer than the estimate gets what is
        // left to it, and the callback delivers at once (the timer fires
        // once).  Its delivery still measures the path (`Advance::tune`).
        // A deadline already passed measures nothing.  A running vCPU's
        // timer is early only by the whole estimate: one nearer would have
        // it wait before entry for what is left, time the guest could run.
        let ahead = ns.saturating_sub(s.ns);
        let running = !p.is_blocking();
        let used = if !running {
            self.advance.lead(ahead)
        } else if self.mode == Mode::Sbi && self.running.ns() < ahead {
            self.running.lead(ahead)
        } else {
            NOT_TUNABLE
        };
        self.adv_used.store(used, Ordering::Relaxed);
        self.adv_running.store(running, Ordering::Relaxed);
        self.host.start(p, &self.stats, ns - self.advance_in_use());
    }

    /// Disarm, then stop the host timer: a load in between (`set_timer`
    /// is preemptible, and the vCPU may move) must not find it armed, or
    /// it would start the old deadline again on the new CPU.
    fn disarm<P: Platform>(&self, p: &P) {
        self.armed.store(false, Ordering::Release);
        self.cancel(p);
    }

    /// Stop the host timer; one stopped before it fired delivers nothing
    /// to measure.
    fn cancel<P: Platform>(&self, p: &P) {
        if self.host.cancel(p, &self.stats) {
            self.adv_used.store(NOT_TUNABLE, Ordering::Relaxed);
        }
    }

    /// SBI mode: an armed deadline whose host timer has not delivered yet
    /// starts again, early or not by whether the vCPU blocks now ([`arm`]).
    /// Only on the CPU the timer was started on, with interrupts off (put
    /// from the scheduler, `pre_enter`): its callback cannot be running,
    /// so the start replaces the queued expiry in one operation (and one
    /// programming of the CPU's timer), and a cancel, when nothing starts
    /// again, does not wait.
    ///
    /// [`arm`]: Self::arm
    fn rearm<P: Platform>(&self, p: &P) {
        let deadline = self.deadline();
        if self.armed() && self.entry.load(Ordering::Acquire) != deadline {
            self.arm(p, deadline);
        } else {
            self.cancel(p);
        }
    }

    /// SBI, for a ONE_REG write: stop the host timer, waiting for a
    /// callback that runs now, and tell whether the deadline is still
    /// armed (the caller programs it again).  Read before the cancel,
    /// `armed` could still be true for a deadline whose interrupt the
    /// callback is raising: programmed again, it would be raised twice.
    fn stop_armed<P: Platform>(&self, p: &P) -> bool {
        self.cancel(p);
        self.armed()
    }

    /// The advance the running host timer was started with (0 if none).
    fn advance_in_use(&self) -> u64 {
        self.lead().ns()
    }

    /// The advance the host timer was started with, and for which vCPU.
    fn lead(&self) -> Lead {
        match self.adv_used.load(Ordering::Relaxed) {
            NOT_TUNABLE => Lead::None,
            ns if self.adv_running.load(Ordering::Relaxed) => Lead::Running(ns),
            ns => Lead::Blocked(ns),
        }
    }

    /// Whether the host timer was started early for a blocking vCPU.
    fn early_for_blocked(&self) -> bool {
        matches!(self.lead(), Lead::Blocked(ns) if ns != 0)
    }

    /// Tune the estimate of the delivery now at guest entry, which reached
    /// it `late_ns` after its deadline or waited `waited_ns` for it.  Not
    /// if it had no advance, or if the vCPU is not on the CPU its host
    /// timer was started on.  The estimate is the path of a wakeup on the
    /// timer's CPU; one on another (the scheduler moved the thread while it
    /// slept) goes through an IPI to the new CPU, and tuned by those too
    /// the estimate would sit between the two paths, so that every wakeup
    /// on the timer's CPU waited the difference with interrupts off.
    fn tune<P: Platform>(&self, p: &P, late_ns: u64, waited_ns: u64) {
        match self.take_tunable(p) {
            Lead::None => {}
            Lead::Blocked(used) => self.advance.tune(used, late_ns, waited_ns),
            Lead::Running(used) => self.running.tune_behind(used, late_ns, waited_ns),
        }
    }

    /// Take the advance of the delivery now at guest entry, for tuning
    /// ([`Self::tune`]).
    fn take_tunable<P: Platform>(&self, p: &P) -> Lead {
        let lead = self.lead();
        self.adv_used.store(NOT_TUNABLE, Ordering::Relaxed);
        if self.host.started_here(p) {
            lead
        } else {
            Lead::None
        }
    }

    /// The host timer's callback, before `deadline` by more than `lead` (a
    /// clock adjustment, or the counter offset moved back since it
    /// started), or for a vCPU that is not as it was when the timer started
    /// (`for_it` false): when it must expire again, `None` to deliver now.
    fn early_again<P: Platform>(
        &self,
        p: &P,
        deadline: u64,
        lead: Lead,
        for_it: bool,
    ) -> Option<Expiry> {
        let s = self.sample(p);
        let Some(ns) = self.expiry_ns(p, s, deadline) else {
            return Some(Expiry::Done);
        };
        let at = ns.saturating_sub(lead.ns());
        if s.ns < at {
            return Some(Expiry::Again(at));
        }
        if !for_it && s.ns < ns {
            // Early for a vCPU that blocked, but it no longer does (it was
            // woken otherwise and has not entered the guest yet), or for
            // one running in the guest, but it does not (it was preempted,
            // or is in its VMM): at the deadline itself, so that it does
            // not wait for it.
            self.adv_used.store(NOT_TUNABLE, Ordering::Relaxed);
            return Some(Expiry::Again(ns));
        }
        let rest = deadline.saturating_sub(self.guest_cycles(p));
        if self.clock.cycles_to_ns_ceil(rest) > self.advance.max_ns() {
            // A counter coarser than the advance: no early delivery could
            // be waited out at entry.
            return Some(Expiry::Again(ns));
        }
        None
    }

    /// SBI TIME `set_timer(deadline)` from the guest.
    pub fn set_timer<P: Platform>(&self, p: &P, deadline: u64) {
        match self.mode {
            Mode::Sstc => {
                // Deadline and CSR together, so that a preemption between
                // them cannot restore the old deadline on the next load.
                p.atomic(|| {
                    self.deadline.store(deadline, Ordering::Release);
                    p.load_csrs(p.time_delta(), Some(deadline));
                });
            }
            Mode::Sbi => self.program(p, deadline),
        }
    }

    /// SBI mode: replace the guest's deadline.
    fn program<P: Platform>(&self, p: &P, deadline: u64) {
        self.disarm(p);
        p.irq_clear();
        self.fired.store(NEVER, Ordering::Release);
        self.entry.store(NEVER, Ordering::Release);
        self.deadline.store(deadline, Ordering::Release);
        if deadline == NEVER {
            return;
        }
        if self.guest_cycles(p) >= deadline {
            // Already due: pending before the vCPU next enters the guest.
            self.raise(p, deadline);
            return;
        }
        self.arm(p, deadline);
    }

    /// Raise the interrupt for `deadline` (SBI mode), and measure it at
    /// the next guest entry.
    fn raise<P: Platform>(&self, p: &P, deadline: u64) {
        self.fired.store(deadline, Ordering::Release);
        self.entry.store(deadline, Ordering::Release);
        self.stats.irq(self.guest_cycles(p) < deadline);
        self.stats.kick(p.irq_raise());
    }

    /// Just before guest entry, interrupts disabled, the vCPU loaded here.
    /// A delivery that fired early waits out the rest of its deadline (SBI:
    /// then raises it); every delivery is measured and tunes the advance.
    ///
    /// Runs before every guest entry: the common case, nothing delivered
    /// or armed early, returns at once; the rest is `deliver`.
    #[inline]
    pub fn pre_enter<P: Platform>(&self, p: &P) {
        if self.entry.load(Ordering::Relaxed) == NEVER {
            if self.mode == Mode::Sbi && self.early_for_blocked() && self.armed() {
                // Armed early when the vCPU blocked, which something else
                // woke: running, it takes the running lead (or none).
                self.rearm(p);
            }
            return;
        }
        self.deliver(p);
    }

    /// [`Self::pre_enter`] with a delivery noted for this entry.  Not
    /// inlined, so that the common case does not pay for its frame.
    #[inline(never)]
    fn deliver<P: Platform>(&self, p: &P) {
        let deadline = self.entry.swap(NEVER, Ordering::AcqRel);
        if deadline == NEVER || deadline != self.deadline() {
            return;
        }
        let now = self.guest_cycles(p);
        let raised = self.mode == Mode::Sstc || self.fired.load(Ordering::Acquire) == deadline;
        if now >= deadline && raised {
            // Due, and raised (with Sstc the hart raises it): nothing to
            // wait for or raise.  A host timer at the deadline (advance
            // off, a deadline nearer than the estimate, a running vCPU's
            // first), or one late past it, on the path the guest waits on:
            // one counter read, and ns only to tune.
            self.stats.late(now - deadline);
            if self.lead() != Lead::None {
                self.tune(p, self.clock.cycles_to_ns_ceil(now - deadline), 0);
            }
            return;
        }
        let (late_ns, waited_ns) = advance::distance(self.clock, now, deadline);
        if waited_ns > self.advance.max_ns() {
            // Not an advance (the counter offset moved back since): arm
            // again for the deadline's new time.
            if self.mode == Mode::Sbi && self.armed() {
                p.timer_cancel();
                self.arm(p, deadline);
            }
            return;
        }
        if waited_ns > 0
            && self.mode == Mode::Sstc
            && self.host.settled_here(p)
            && p.wfi_untrap_ok()
        {
            // The hart raises the interrupt at the deadline: enter now, and
            // let the guest, back from the WFI that blocked it, wait in
            // its next one.  Untrapped until the next exit (`sync`).  Only
            // on the CPU the vCPU blocked on, as it did the time before
            // (its wake timer's last two starts): a vCPU that the scheduler
            // moves is being balanced, and holding its CPU would cost the
            // next move an IPI (the stopper's).  Early costs no wait here,
            // but an entry just before the deadline would find the guest
            // still on its way back to WFI when the interrupt comes: tuned
            // to come a margin ahead (`Advance::tune_ahead`).
            p.set_wfi_trap(false);
            self.untrapped_at.store(p.host_cycles(), Ordering::Relaxed);
            self.stats.untrapped();
            if let Lead::Blocked(used) = self.take_tunable(p) {
                self.advance.tune_ahead(used, waited_ns);
            }
            return;
        }
        // The tuning first: before a wait, the wait absorbs its cost.
        let start = (waited_ns > 0).then(|| p.host_cycles());
        self.tune(p, late_ns, waited_ns);
        if let Some(start) = start {
            let spun = advance::wait_ticks(start, deadline - now, || p.host_cycles(), || p.relax());
            self.stats.spin(self.clock.cycles_to_ns_ceil(spun));
        }
        // One counter read for both figures, on the path the guest waits on.
        let at = self.guest_cycles(p);
        if self.mode == Mode::Sbi && self.fired.load(Ordering::Acquire) != deadline {
            self.armed.store(false, Ordering::Release);
            self.fired.store(deadline, Ordering::Release);
            self.stats.irq(at < deadline);
            p.irq_raise_now();
        }
        self.stats.late(at.saturating_sub(deadline));
    }

    /// After every guest exit, interrupts disabled: with Sstc, save the
    /// guest's deadline and make WFI trap again if an entry stopped it.
    pub fn sync<P: Platform>(&self, p: &P) {
        if self.mode != Mode::Sstc {
            return;
        }
        let deadline = p.read_compare();
        self.deadline.store(deadline, Ordering::Release);
        let at = self.untrapped_at.load(Ordering::Relaxed);
        if at == NEVER {
            return;
        }
        let now = p.host_cycles();
        let held = self.clock.cycles_to_ns_ceil(now.wrapping_sub(at));
        self.stats.untrapped_for(held);
        if self.deadline_near(p, now, deadline) && p.wfi_untrap_ok() {
            // An exit (the host's tick, say) just before the deadline: a
            // trapped WFI would block now and be woken too late.  Still
            // untrapped, counted from here.
            self.untrapped_at.store(now, Ordering::Relaxed);
            return;
        }
        self.untrapped_at.store(NEVER, Ordering::Relaxed);
        p.set_wfi_trap(true);
    }

    /// Whether `deadline` is ahead of host counter `now`, and nearer than
    /// twice the advance estimate: a vCPU that went on to block (the rest
    /// of the exit, the guest's WFI, its exit) would likely be woken late.
    /// Farther, [`VcpuLogic::keep_running`] still keeps it from blocking
    /// once the deadline is within the wake timer's reach.
    fn deadline_near<P: Platform>(&self, p: &P, now: u64, deadline: u64) -> bool {
        self.ahead_within(
            now.wrapping_add(p.time_delta()),
            deadline,
            2 * self.advance.ns(),
        )
    }

    /// Whether `deadline` is ahead of guest counter `guest` by no more than
    /// `bound_ns`.
    fn ahead_within(&self, guest: u64, deadline: u64, bound_ns: u64) -> bool {
        deadline != NEVER
            && deadline > guest
            && self.clock.cycles_to_ns_ceil(deadline - guest) <= bound_ns
    }

    /// vCPU destruction.
    pub fn deinit<P: Platform>(&self, p: &P) {
        self.disarm(p);
    }

    /// ONE_REG read.
    pub fn get_reg<P: Platform>(&self, p: &P, reg: Reg) -> u64 {
        match reg {
            Reg::Frequency => self.clock.hz(),
            Reg::Time => self.guest_cycles(p),
            Reg::Compare => self.deadline(),
            Reg::State => {
                let on = match self.mode {
                    Mode::Sstc => self.deadline() != NEVER,
                    Mode::Sbi => self.armed(),
                };
                if on {
                    STATE_ON
                } else {
                    STATE_OFF
                }
            }
        }
    }

    /// ONE_REG write.  The vCPU is not loaded (its mutex is held by the
    /// ioctl), so with Sstc the next load writes the CSRs.
    pub fn set_reg<P: Platform>(&self, p: &P, reg: Reg, val: u64) -> Result<(), RegError> {
        match reg {
            Reg::Frequency if val == self.clock.hz() => Ok(()),
            Reg::Frequency => Err(RegError::Invalid),
            Reg::Time => {
                p.set_time_delta(val.wrapping_sub(p.host_cycles()));
                if self.mode == Mode::Sbi && self.stop_armed(p) {
                    // The same deadline is now at another host time.
                    self.program(p, self.deadline());
                }
                Ok(())
            }
            Reg::Compare => {
                if self.mode == Mode::Sbi && self.stop_armed(p) {
                    self.program(p, val);
                } else {
                    self.deadline.store(val, Ordering::Release);
                }
                Ok(())
            }
            Reg::State => match val {
                // Arm the saved deadline (the in-tree timer armed "1").
                // Already armed, or its interrupt already raised (a VMM
                // wrote a past compare to an armed timer): nothing to do,
                // so the interrupt comes once.
                STATE_ON => {
                    if self.mode == Mode::Sbi && !self.armed() {
                        // The host timer is stopped, but its callback may
                        // still be raising the deadline: wait for it.
                        self.cancel(p);
                        let deadline = self.deadline();
                        if self.fired.load(Ordering::Acquire) != deadline {
                            self.program(p, deadline);
                        }
                    }
                    Ok(())
                }
                // Nothing armed is fine: the state is already off.  With
                // Sstc the timer is on while a compare value is set.
                STATE_OFF => {
                    self.disarm(p);
                    self.entry.store(NEVER, Ordering::Release);
                    if self.mode == Mode::Sstc {
                        self.deadline.store(NEVER, Ordering::Release);
                    }
                    Ok(())
                }
                _ => Err(RegError::Invalid),
            },
        }
    }
}

impl<P: Platform> VcpuLogic<P> for VcpuTimer {
    /// The host timer's callback.
    fn expired(&self, p: &P) -> Expiry {
        let deadline = self.deadline.load(Ordering::Acquire);
        if deadline == NEVER {
            self.armed.store(false, Ordering::Release);
            return Expiry::Done;
        }
        let lead = self.lead();
        // A running vCPU's lead is for a vCPU this callback took out of the
        // guest, on its way to its next entry (not one blocking, nor one
        // preempted or in its VMM).
        let in_guest_here =
            matches!(lead, Lead::Running(_)) && p.running_here() && !p.is_blocking();
        let now = self.guest_cycles(p);
        let due = now >= deadline;
        if !due {
            // Early.  By the advance: deliver now, the vCPU waits out the
            // rest at guest entry.  By more (a clock adjustment, or the
            // counter offset moved back): still armed, at the deadline's
            // new host time less the advance, if it has one.
            let for_it = match lead {
                Lead::None => true,
                Lead::Blocked(_) => p.is_blocking(),
                Lead::Running(_) => in_guest_here || p.is_blocking(),
            };
            let rest_ns = self.clock.cycles_to_ns_ceil(deadline - now);
            if !for_it || rest_ns > lead.ns() {
                // Not the common case, early by at most the advance for the
                // vCPU it was for (which needs no clock read): see when.
                if let Some(again) = self.early_again(p, deadline, lead, for_it) {
                    return again;
                }
            }
        }
        if matches!(lead, Lead::Running(_)) && !in_guest_here {
            // Delivered to a vCPU out of the guest: not the path the
            // running estimate is of.
            self.adv_used.store(NOT_TUNABLE, Ordering::Relaxed);
        }
        match self.mode {
            Mode::Sbi if due => {
                self.armed.store(false, Ordering::Release);
                self.raise(p, deadline);
            }
            Mode::Sbi if in_guest_here => {
                // Still armed (its interrupt is not raised yet), but the
                // host timer is done: pre_enter raises it.  No kick: this
                // interrupted the vCPU's own thread, which is not blocking
                // and reaches its next guest entry, and pre_enter, after.
                self.entry.store(deadline, Ordering::Release);
            }
            Mode::Sbi => {
                // Still armed, as above; the vCPU may block, or run
                // elsewhere.
                self.entry.store(deadline, Ordering::Release);
                self.stats.kick(p.kick());
            }
            Mode::Sstc => {
                self.armed.store(false, Ordering::Release);
                self.entry.store(deadline, Ordering::Release);
                self.stats.irq(false);
                self.stats.kick(p.kick());
            }
        }
        Expiry::Done
    }

    /// Whether the timer should wake the (blocked) vCPU.
    fn pending(&self, p: &P) -> bool {
        let deadline = self.deadline();
        // Delivered by the host timer, for guest entry.
        let delivered = deadline != NEVER && self.entry.load(Ordering::Acquire) == deadline;
        match self.mode {
            Mode::Sstc => {
                // A masked timer does not end WFI (it would spin).
                p.irq_enabled()
                    && deadline != NEVER
                    && (delivered || self.guest_cycles(p) >= deadline)
            }
            Mode::Sbi => p.irq_pending() || (delivered && p.irq_enabled()),
        }
    }

    /// Sstc: a vCPU about to block in WFI whose deadline is nearer than
    /// its wake timer's lead, and a [`MARGIN_SHARE`] of it for the way to
    /// the scheduler, would be woken at once and enter late (the host's
    /// tick took it out of an untrapped WFI farther from its deadline than
    /// [`Self::sync`] keeps it untrapped for, and KVM's halt polling, which
    /// asks this at each turn, ran past the lead before the block).  Where
    /// direct WFI would enter it early anyway (allowed, on the CPU it
    /// blocked on the last two times), it does not block: the delivery is
    /// noted for the next entry, which enters with WFI untrapped
    /// ([`Self::deliver`]), and the hart raises the interrupt.  The CPU is
    /// held as by a wakeup that came early, for no longer than the
    /// advance's bound.  On the vCPU's thread, loaded: its wake timer is
    /// not armed, and no callback writes `entry`.
    fn keep_running(&self, p: &P) -> bool {
        let deadline = self.deadline();
        let lead = self.advance.ns();
        if self.mode != Mode::Sstc
            || deadline == NEVER
            || lead == 0
            || !p.irq_enabled()
            || !p.wfi_untrap_ok()
            || !self.host.settled_here(p)
            || self.entry.load(Ordering::Acquire) == deadline
        {
            return false;
        }
        let near = lead
            .saturating_add(lead / MARGIN_SHARE)
            .min(self.advance.max_ns());
        if !self.ahead_within(self.guest_cycles(p), deadline, near) {
            return false;
        }
        self.entry.store(deadline, Ordering::Release);
        self.stats.irq(false);
        true
    }

    /// The vCPU is loaded on this CPU.
    fn load(&self, p: &P) {
        match self.mode {
            Mode::Sstc => {
                p.load_csrs(p.time_delta(), Some(self.deadline()));
                if self.armed() {
                    // Running again: the wake timer is not needed.
                    self.disarm(p);
                }
            }
            Mode::Sbi => {
                p.load_csrs(p.time_delta(), None);
                if self.armed() && !self.host.started_here(p) {
                    // Follow the vCPU: expire on the CPU it runs on, so the
                    // interrupt needs no IPI to reach it.  The callback may
                    // have run on the old CPU meanwhile: only a timer still
                    // armed after the cancel, and not already delivered
                    // for guest entry, is started again, or the interrupt
                    // would come twice.  The start counts the migration.
                    p.timer_cancel();
                    let deadline = self.deadline();
                    if self.armed() && self.entry.load(Ordering::Acquire) != deadline {
                        self.arm(p, deadline);
                    }
                }
            }
        }
    }

    /// The vCPU is put (sched-out, or the end of an ioctl).  When it is
    /// about to block in WFI, put runs from the scheduler with interrupts
    /// off.
    fn put(&self, p: &P) {
        if self.mode != Mode::Sstc {
            // Blocking: the host timer armed at the deadline while the vCPU
            // ran now fires early by the advance, to wake it in time.  Not
            // for a masked timer, which does not end WFI.
            if p.is_blocking()
                && self.advance.enabled()
                && self.armed()
                && !matches!(self.lead(), Lead::Blocked(_))
                && self.host.started_here(p)
                && p.irq_enabled()
            {
                self.rearm(p);
            }
            return;
        }
        // vstimecmp is saved by sync() after every exit.  Stop this hart's
        // copy: once it passed, a stale deadline would leave VSTIP pending
        // on a CPU that runs no guest, which then cannot idle in WFI.
        p.load_csrs(p.time_delta(), Some(NEVER));
        if p.is_blocking() && p.irq_enabled() {
            self.arm(p, self.deadline());
        }
    }

    /// vCPU reset (and creation): no deadline.  Runs with preemption
    /// disabled; the host timer is a hard one, so cancelling never sleeps.
    fn reset(&self, p: &P) {
        self.disarm(p);
        self.entry.store(NEVER, Ordering::Release);
        self.fired.store(NEVER, Ordering::Release);
        self.deadline.store(NEVER, Ordering::Release);
    }
}
