// SPDX-License-Identifier: GPL-2.0

//! The per-vCPU arm64 EL1 timers (virtual and physical), as a state machine
//! over a [`Platform`].
//!
//! Each timer is [`Placement::Direct`] (the guest programs the hardware
//! timer while the vCPU is loaded; the host's interrupt for it comes to
//! [`El1Timers::host_irq`]) or [`Placement::Emulated`] (every guest access
//! traps; a host timer raises the interrupt).  The virtual timer is always
//! direct; the physical timer is direct on VHE hosts and emulated on nVHE
//! hosts, where the host kernel owns the hardware physical timer.
//!
//! The guest's registers stay in the vCPU's system registers while it is
//! not loaded ([`Platform::ctl`], [`Platform::cval`]); a direct timer's live
//! copy is the hardware's from load to put.  Compare values are kept in the
//! guest's view of its counter: host counter minus the VM's offset for that
//! timer ([`Platform::offset`]).  A direct physical timer's compare value
//! in the hardware is not always the guest's: [`super::cntp`] says where
//! the guest's is, and what the hardware holds.
//!
//! One host timer per vCPU, started on the vCPU's CPU:
//! - while the vCPU is loaded it watches the emulated timers;
//! - when the vCPU is put to block (WFI, WFIT), it watches every timer that
//!   can fire, and the WFIT deadline, so the vCPU wakes at the earliest one.
//!
//! Its callback ([`El1Timers::expired`]) raises the timer's interrupt line
//! in the vGIC, which kicks or wakes the vCPU.  As on RISC-V, the vCPU
//! thread cancels the host timer (waiting for a running callback) before it
//! changes what the callback reads, and starts it after.
//!
//! Timer advance ([`super::advance`]), for a vCPU blocked in WFI only: the
//! host timer fires early by the vCPU's estimate of the wakeup path, and
//! its callback only wakes the vCPU, raising no line.  The vCPU's load
//! puts its timers back where they fire by themselves at the deadline (the
//! hardware, or for an emulated timer the host timer started at the
//! deadline itself).  Its `pending()` lets it leave WFI, and once out
//! ([`El1Timers::wfi_done`]) it is measured (how early or late it is back
//! tunes the estimate) and waits out the rest, with interrupts on, so that
//! the vCPU enters the guest with the interrupt pending, not before it and
//! its WFI done for nothing.  The wait raises nothing: no line is ever
//! raised before its deadline.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use super::advance::{self, Advance, NOT_TUNABLE};
use super::clock::{Clock, Sample};
use super::cntp::PhysCval;
use super::host_timer::{again, ktime, HostClock, HostTimer};
use super::stats::Stats;
use super::VcpuLogic;

/// `CNT*_CTL_EL0.ENABLE`.
pub const CTL_ENABLE: u64 = 1 << 0;
/// `CNT*_CTL_EL0.IMASK`.
pub const CTL_IMASK: u64 = 1 << 1;
/// `CNT*_CTL_EL0.ISTATUS` (read-only).
pub const CTL_ISTATUS: u64 = 1 << 2;
/// The bits a `CTL` register has; the others are RES0.
const CTL_BITS: u64 = CTL_ENABLE | CTL_IMASK | CTL_ISTATUS;

/// The host timer's scope bit for the WFIT deadline.
const SCOPE_WFIT: u8 = 1 << 2;

/// No deadline waits for the vCPU's next `pending()`.
const NO_ENTRY: u64 = u64::MAX;

/// One of the two EL1 timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The virtual timer (`CNTV_*`), counting the virtual counter.
    Virt,
    /// The physical timer (`CNTP_*`), counting the physical counter.
    Phys,
}

impl Which {
    /// Both timers.
    pub const ALL: [Which; 2] = [Which::Virt, Which::Phys];

    fn idx(self) -> usize {
        match self {
            Which::Virt => 0,
            Which::Phys => 1,
        }
    }

    fn bit(self) -> u8 {
        1 << self.idx()
    }
}

/// Where a timer runs while its vCPU is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// In the hardware timer, which the guest programs.
    Direct,
    /// Trapped accesses and a host timer.
    Emulated,
}

/// A timer register, as a trapped access or ONE_REG names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerReg {
    /// The counter the timer compares against.
    Cnt,
    /// The compare value.
    Cval,
    /// The 32-bit signed distance to the compare value.
    Tval,
    /// Control: enable, mask, status.
    Ctl,
}

/// Why a ONE_REG write or the first run was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A value the register cannot take (`-EINVAL`).
    Invalid,
    /// The timer interrupts are not valid PPIs of this VM (`-EINVAL`).
    BadIrqs,
    /// Mapping the timer interrupts failed: the kernel's error code.
    Map(i32),
}

/// Why a VM is left to KVM's built-in timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decline {
    /// Nested virtualization: only the EL1 timers are ours.
    Nested,
    /// No in-kernel vGIC.  KVM's timer keeps the host from a storm of the
    /// timer interrupt by the host's interrupt controller's active state
    /// where it has one, else by disabling the interrupt in its handler,
    /// which this backend's interrupt path does not reach.
    UserIrqchip,
}

/// Whether a VM is left to KVM's timer, by what its first vCPU run shows:
/// whether it has the in-kernel vGIC and nested virtualization.
pub fn decline(irqchip_in_kernel: bool, nested: bool) -> Option<Decline> {
    if nested {
        Some(Decline::Nested)
    } else if !irqchip_in_kernel {
        Some(Decline::UserIrqchip)
    } else {
        None
    }
}

pub use super::Expiry;

/// What the timers need from the host, besides its clock and host timer
/// ([`HostClock`]).
pub trait Platform: HostClock {
    /// The host's physical counter.
    fn counter(&self) -> u64;
    /// The VM's offset of `t`'s counter from the host counter.
    fn offset(&self, t: Which) -> u64;
    /// The guest's view of `t`'s counter: the host counter less the
    /// offset.  Read on every delivery; a platform may read both at once.
    fn guest_counter(&self, t: Which) -> u64 {
        self.counter().wrapping_sub(self.offset(t))
    }
    /// Set it (a ONE_REG write of the counter).
    fn set_offset(&self, t: Which, offset: u64);
    /// Whether userspace fixed the VM's offsets (`KVM_ARM_SET_COUNTER_OFFSET`):
    /// ONE_REG counter writes are then ignored.
    fn offset_fixed(&self) -> bool;

    /// The vCPU's saved `CTL` of `t`.
    fn ctl(&self, t: Which) -> u64;
    /// The vCPU's saved `CVAL` of `t`, guest view.
    fn cval(&self, t: Which) -> u64;
    /// Save `CTL` of `t`.
    fn set_ctl(&self, t: Which, ctl: u64);
    /// Save `CVAL` of `t`.
    fn set_cval(&self, t: Which, cval: u64);

    /// Whether the CPU has `CNTPOFF_EL2` (ECV) and KVM's VHE world switch
    /// uses it for the physical timer.
    fn cntpoff(&self) -> bool;
    /// Load direct timer `t` into the hardware: `offset` as its counter
    /// offset (`CNTVOFF`; `CNTPOFF` where the CPU has it), `cval` as the
    /// hardware `CVAL`, as is, then `ctl`.  Interrupts off, this vCPU on
    /// this CPU.
    fn hw_load(&self, t: Which, offset: u64, ctl: u64, cval: u64);
    /// Read direct timer `t`'s hardware `CTL` and `CVAL`, as they are, and
    /// stop it (counter offset back to 0); interrupts off, this vCPU loaded
    /// here.
    fn hw_save(&self, t: Which) -> (u64, u64);
    /// The live `CTL` of direct timer `t` (ISTATUS included).
    fn hw_ctl(&self, t: Which) -> u64;
    /// The live `CVAL` of direct timer `t`, as the hardware has it.
    fn hw_cval(&self, t: Which) -> u64;
    /// Set the counter and timer traps for the VM's offsets (VHE).
    fn set_traps(&self);

    /// Whether the VM has the in-kernel vGIC (else userspace gets the lines).
    fn irqchip_in_kernel(&self) -> bool;
    /// Drive `t`'s interrupt line in the vGIC; the vGIC kicks or wakes the
    /// vCPU.  No-op with a userspace irqchip.
    fn irq_line(&self, t: Which, level: bool);
    /// Whether the guest has `t`'s mapped interrupt active in the vGIC.
    fn irq_map_active(&self, t: Which) -> bool;
    /// Set the active state of the host's interrupt of direct timer `t`.
    fn host_irq_set_active(&self, t: Which, active: bool);
    /// Reset the vGIC state of `t`'s mapped interrupt.
    fn irq_map_reset(&self, t: Which);
    /// Claim the timers' PPIs (distinct, owned by us) and map the direct
    /// ones to the host's interrupts; first run, in-kernel vGIC only.
    fn irq_setup(&self, direct: &[Which]) -> Result<(), Error>;

    /// The WFIT deadline (virtual counter) if the vCPU waits in WFIT.
    fn wfit_deadline(&self) -> Option<u64>;
    /// Wake the blocked vCPU.
    fn wake(&self);
    /// Whether the vCPU is about to block.
    fn is_blocking(&self) -> bool;
    /// Run `f` with interrupts off (no load/put, no host interrupt).
    fn atomic<R>(&self, f: impl FnOnce() -> R) -> R;
    /// Pause in a busy-wait loop (`cpu_relax`).
    fn relax(&self);
}

/// Whether a timer with `ctl` can raise its interrupt at all.
pub fn can_fire(ctl: u64) -> bool {
    ctl & (CTL_ENABLE | CTL_IMASK) == CTL_ENABLE
}

/// `CTL` as the guest reads it: ISTATUS set once the counter reached the
/// compare value (also when disabled, as KVM has always reported it).
pub fn ctl_with_status(ctl: u64, cval: u64, now: u64) -> u64 {
    let ctl = ctl & !CTL_ISTATUS;
    if cval <= now {
        ctl | CTL_ISTATUS
    } else {
        ctl
    }
}

/// `TVAL` as the guest reads it: `CVAL - count`, low 32 bits.
pub fn tval(cval: u64, now: u64) -> u64 {
    cval.wrapping_sub(now) & u64::from(u32::MAX)
}

/// The `CVAL` a `TVAL` write sets: `count + sign_extend(tval[31:0])`.
pub fn cval_from_tval(tval: u64, now: u64) -> u64 {
    // Truncate to 32 bits, then sign-extend: the architecture's TVAL.
    let t = tval as u32 as i32;
    now.wrapping_add(t as i64 as u64)
}

/// The two EL1 timers of one vCPU.
///
/// # Invariants
///
/// - `loaded` is true only while `enabled`, between a load and the next put;
///   the direct timers' registers are then in the hardware.
/// - The host timer is started only while `scope` is not 0, on the CPU
///   the vCPU was on when it was started, and never past
///   [`KTIME_MAX`](super::host_timer::KTIME_MAX).
/// - `level[t]` is the line level last driven for `t`, but false for a
///   direct timer that could not fire when it was put: the vGIC lowers
///   such a mapped line itself, when the guest deactivates it.
/// - `adv_used` is the advance the host timer was started with to wake a
///   blocked vCPU ([`Advance::lead`]), until that wake is measured (the
///   next [`El1Timers::wfi_done`]), or [`NOT_TUNABLE`]: a host timer
///   cancelled before it fired, a vCPU back on another CPU, or put again
///   before the measure, has none.
/// - `entry` is [`NO_ENTRY`] or the deadline, on the host counter, of the
///   timer that a wake of a blocked vCPU by the advance was for, from the
///   wake to the next `wfi_done`.
/// - `wait` is set only while `entry` is not [`NO_ENTRY`] (but within
///   `woken_early()`, which sets it before it checks `entry`): the vCPU
///   left WFI for that deadline (`pending()`), and `wfi_done` waits for it.
#[derive(Debug)]
pub struct El1Timers {
    clock: Clock,
    place: [Placement; 2],
    enabled: AtomicBool,
    loaded: AtomicBool,
    level: [AtomicBool; 2],
    scope: AtomicU8,
    host: HostTimer,
    adv_used: AtomicU64,
    entry: AtomicU64,
    wait: AtomicBool,
    advance: Advance,
    stats: Stats,
}

/// A timer that can fire, as a scan of the host timer's scope found it.
#[derive(Clone, Copy, Debug)]
struct Due {
    /// The host time (ns) at which it fires; at or before the scan's
    /// reading if it is due.
    at: u64,
    /// Its deadline on the host counter (`CVAL` plus the VM's offset).
    target: u64,
    /// The guest's `CVAL`.
    cval: u64,
    /// The guest's counter at the scan's reading.
    now: u64,
}

/// What a scan of the host timer's scope found, by one reading of the
/// counter and the clock.
#[derive(Clone, Copy, Debug)]
struct Next {
    /// The clock reading (ns).
    now: u64,
    /// The earliest timer that can fire, due or not.
    timer: Option<Due>,
    /// The WFIT deadline's host time, if it lies ahead.
    wfit: Option<u64>,
}

impl Next {
    /// When to look again: the earliest timer early by `used` (an advance,
    /// or [`NOT_TUNABLE`]: none), or the WFIT deadline if sooner.
    fn wake_at(&self, used: u64) -> Option<u64> {
        let lead = if used == NOT_TUNABLE { 0 } else { used };
        let timer = self.timer.map(|d| d.at.saturating_sub(lead));
        match (timer, self.wfit) {
            (Some(a), Some(w)) => Some(a.min(w)),
            (a, w) => a.or(w),
        }
    }
}

impl El1Timers {
    /// The timers of a new vCPU; the physical one at `phys`; a blocked
    /// vCPU's wakeup early by `advance`.
    pub fn new(clock: Clock, phys: Placement, advance: Advance) -> Self {
        Self {
            clock,
            place: [Placement::Direct, phys],
            enabled: AtomicBool::new(false),
            loaded: AtomicBool::new(false),
            level: [AtomicBool::new(false), AtomicBool::new(false)],
            scope: AtomicU8::new(0),
            host: HostTimer::new(),
            adv_used: AtomicU64::new(NOT_TUNABLE),
            entry: AtomicU64::new(NO_ENTRY),
            wait: AtomicBool::new(false),
            advance,
            stats: Stats::new(),
        }
    }

    /// The statistics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The timer advance estimate.
    pub fn advance(&self) -> &Advance {
        &self.advance
    }

    /// Where timer `t` runs.
    pub fn placement(&self, t: Which) -> Placement {
        self.place[t.idx()]
    }

    /// Whether the first run set the timers up.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn direct(&self, t: Which) -> bool {
        self.placement(t) == Placement::Direct
    }

    fn live(&self, t: Which) -> bool {
        self.direct(t) && self.loaded.load(Ordering::Relaxed)
    }

    /// The guest's view of `t`'s counter now.
    pub fn now<P: Platform>(&self, p: &P, t: Which) -> u64 {
        p.guest_counter(t)
    }

    /// `t`'s registers (`CTL`, `CVAL`), wherever they are.
    fn regs<P: Platform>(&self, p: &P, t: Which) -> (u64, u64) {
        if self.live(t) {
            p.atomic(|| {
                let (ctl, cval) = self.hw_save(p, t);
                self.hw_load(p, t, ctl, cval);
                (ctl, cval)
            })
        } else {
            (p.ctl(t), p.cval(t))
        }
    }

    /// Load direct timer `t` with the guest's `ctl` and `cval`; interrupts
    /// off.  The virtual timer's offset applies in every context, so the
    /// hardware takes the guest's value; the physical timer's as
    /// [`PhysCval`] says.
    fn hw_load<P: Platform>(&self, p: &P, t: Which, ctl: u64, cval: u64) {
        let offset = p.offset(t);
        let hw = match t {
            Which::Virt => cval,
            Which::Phys => {
                let c = PhysCval {
                    cntpoff: p.cntpoff(),
                    offset,
                };
                if c.saved_is_guests() {
                    // KVM's world switch loads the hardware from it at
                    // guest entry (CNTPOFF); a trapped access reads it.
                    p.set_cval(t, cval);
                }
                c.hw_cval(cval, p.counter())
            }
        };
        p.hw_load(t, offset, ctl, hw);
    }

    /// Stop direct timer `t`: its `CTL` (from the hardware) and the guest's
    /// `CVAL`; interrupts off.
    fn hw_save<P: Platform>(&self, p: &P, t: Which) -> (u64, u64) {
        let (ctl, hw) = p.hw_save(t);
        (ctl, self.guest_cval(p, t, hw))
    }

    /// The guest's `CVAL` of loaded direct timer `t`, whose hardware holds
    /// `hw`: the virtual timer's offset applies in every context, the
    /// physical timer's as [`PhysCval`] says.
    fn guest_cval<P: Platform>(&self, p: &P, t: Which, hw: u64) -> u64 {
        match t {
            Which::Virt => hw,
            Which::Phys => PhysCval {
                cntpoff: p.cntpoff(),
                offset: p.offset(t),
            }
            .guest_cval(p.cval(t), hw),
        }
    }

    /// `t`'s `CTL` and the guest's `CVAL` as they are now, without touching
    /// the timer: from the hardware while it is loaded there, else saved.
    fn regs_now<P: Platform>(&self, p: &P, t: Which) -> (u64, u64) {
        p.atomic(|| {
            if self.live(t) {
                (p.hw_ctl(t), self.guest_cval(p, t, p.hw_cval(t)))
            } else {
                (p.ctl(t), p.cval(t))
            }
        })
    }

    /// Whether `t`'s interrupt condition holds now.
    pub fn should_fire<P: Platform>(&self, p: &P, t: Which) -> bool {
        if self.live(t) {
            let ctl = p.hw_ctl(t);
            return can_fire(ctl) && ctl & CTL_ISTATUS != 0;
        }
        let ctl = p.ctl(t);
        can_fire(ctl) && p.cval(t) <= self.now(p, t)
    }

    /// The host counter and clock, read as one instant.
    fn sample<P: Platform>(&self, p: &P) -> Sample {
        self.clock.sample(|| p.counter(), || p.host_ns())
    }

    /// When the saved `t` fires, by the reading `s` (at `s.ns` if it is
    /// due); `None` if it cannot fire.
    fn saved_due<P: Platform>(&self, p: &P, t: Which, s: Sample) -> Option<Due> {
        let (cval, now, target) = self.saved_at(p, t, s.cycles)?;
        Some(Due {
            at: self.clock.expiry(s, now, cval),
            target,
            cval,
            now,
        })
    }

    /// The saved `t`, if it can fire, with the host counter at `counter`:
    /// the guest's `CVAL`, the guest's counter, and the deadline on the host
    /// counter (`CVAL` plus the VM's offset).
    fn saved_at<P: Platform>(&self, p: &P, t: Which, counter: u64) -> Option<(u64, u64, u64)> {
        if !can_fire(p.ctl(t)) {
            return None;
        }
        let offset = p.offset(t);
        let cval = p.cval(t);
        Some((
            cval,
            counter.wrapping_sub(offset),
            cval.wrapping_add(offset),
        ))
    }

    /// Drive `t`'s line; counts rising edges.
    fn set_level<P: Platform>(&self, p: &P, t: Which, level: bool) {
        let was = self.level[t.idx()].swap(level, Ordering::Relaxed);
        if level && !was {
            self.delivered(p, t);
        }
        // Also when unchanged: the vGIC resamples a mapped level interrupt
        // on the guest's EOI, so its line may be lower than ours.
        p.irq_line(t, level);
    }

    /// Raise the line of `t`, found due with the guest's `cval` and
    /// counter `now`: as [`Self::set_level`], but a rising edge counts with
    /// these, not read again (the host timer's callback, on the path a
    /// running guest waits on).
    fn raise_scanned<P: Platform>(&self, p: &P, t: Which, cval: u64, now: u64) {
        if !self.level[t.idx()].swap(true, Ordering::Relaxed) {
            self.count_delivery(cval, now);
        }
        p.irq_line(t, true);
    }

    /// Count a delivery of `t` (a rising edge of its line), and how late it
    /// comes after the guest's `CVAL`, in counter ticks; one before it is
    /// counted early (a bug).
    fn delivered<P: Platform>(&self, p: &P, t: Which) {
        let (_, cval) = self.regs_now(p, t);
        self.count_delivery(cval, self.now(p, t));
    }

    /// Count a delivery for the guest's `cval`, its counter being `now`.
    fn count_delivery(&self, cval: u64, now: u64) {
        self.stats.irq(now < cval);
        self.stats.late(now.saturating_sub(cval));
    }

    /// The line level last driven for `t`.
    pub fn level(&self, t: Which) -> bool {
        self.level[t.idx()].load(Ordering::Relaxed)
    }

    /// Stop the host timer; one stopped before it fired woke no one, and
    /// measures nothing.
    fn cancel<P: Platform>(&self, p: &P) {
        if self.host.cancel(p, &self.stats) {
            self.adv_used.store(NOT_TUNABLE, Ordering::Relaxed);
        }
        self.scope.store(0, Ordering::Relaxed);
    }

    /// Start the host timer at host time `at` (ns) for `scope`; not past
    /// the end of host time, where nothing ever fires ([`HostTimer::start`]).
    /// Whether it started.
    fn start<P: Platform>(&self, p: &P, scope: u8, at: u64) -> bool {
        let Some(at) = ktime(at) else {
            return false;
        };
        self.scope.store(scope, Ordering::Relaxed);
        self.host.start(p, &self.stats, at)
    }

    /// What in `scope` fires, and when, by one reading of the counter and
    /// the clock; `fire` is called for each timer whose condition holds
    /// now, with what the scan found of it.
    fn scan<P: Platform>(&self, p: &P, scope: u8, mut fire: impl FnMut(Which, Due)) -> Next {
        let s = self.sample(p);
        let mut timer: Option<Due> = None;
        for t in Which::ALL {
            if scope & t.bit() == 0 {
                continue;
            }
            let Some(due) = self.saved_due(p, t, s) else {
                continue;
            };
            if due.at <= s.ns {
                fire(t, due);
            }
            if timer.is_none_or(|first| due.at < first.at) {
                timer = Some(due);
            }
        }
        let mut wfit = None;
        if scope & SCOPE_WFIT != 0 {
            if let Some(d) = p.wfit_deadline() {
                let now = s.cycles.wrapping_sub(p.offset(Which::Virt));
                let at = self.clock.expiry(s, now, d);
                if at > s.ns {
                    wfit = Some(at);
                }
            }
        }
        Next {
            now: s.ns,
            timer,
            wfit,
        }
    }

    /// An emulated timer after a change or at load: drive its line, and
    /// watch it with the host timer if it will fire later (at its deadline
    /// itself: the vCPU is loaded, so no advance).
    fn emulate<P: Platform>(&self, p: &P, t: Which) {
        let fire = self.should_fire(p, t);
        self.set_level(p, t, fire);
        if fire {
            return;
        }
        if let Some(due) = self.saved_due(p, t, self.sample(p)) {
            self.start(p, t.bit(), due.at);
        }
    }

    /// The vCPU's first run, in a VM that [`decline`] did not leave to
    /// KVM's timer.
    pub fn enable<P: Platform>(&self, p: &P) -> Result<(), Error> {
        if self.enabled() {
            return Ok(());
        }
        if p.irqchip_in_kernel() {
            let mut direct = [Which::Virt; 2];
            let mut n = 0;
            for t in Which::ALL {
                if self.direct(t) {
                    direct[n] = t;
                    n += 1;
                }
            }
            p.irq_setup(&direct[..n])?;
        }
        self.enabled.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The vCPU blocks: wake it at its earliest timer, early by the
    /// advance, or at its WFIT deadline.  A WFIT wait, whose end the guest
    /// chose, gets no advance, nor do the timers while it lasts.
    ///
    /// Only the host timer may raise a line here, never this function:
    /// put runs in the scheduler's switch away from the vCPU thread, where
    /// waking that thread (as a raised line does, through the vGIC's kick)
    /// would mark it running after it left the run queue, and it would
    /// never run again.  A timer already due gets a host timer at "now",
    /// whose callback runs once the switch is over.
    fn block<P: Platform>(&self, p: &P) {
        let scope = Which::Virt.bit() | Which::Phys.bit() | SCOPE_WFIT;
        let mut due = false;
        let next = self.scan(p, scope, |_, _| due = true);
        // A vCPU preempted in `pending()` once it said to leave WFI for a
        // wake by the advance (still blocking): it leaves, and `wfi_done`
        // waits for that deadline; its host timer only watches.  Any
        // other block forgets an older wake, never measured.
        let leaving = self.wait.load(Ordering::Relaxed);
        let used = match next.timer {
            Some(d) if !due && !leaving && p.wfit_deadline().is_none() => {
                self.advance.lead(d.at.saturating_sub(next.now))
            }
            _ => NOT_TUNABLE,
        };
        let at = if due {
            Some(next.now)
        } else {
            next.wake_at(used)
        };
        if !leaving {
            self.forget_wake();
        }
        // Before the start: the callback reads it.
        self.adv_used.store(used, Ordering::Relaxed);
        if !at.is_some_and(|at| self.start(p, scope, at)) {
            self.adv_used.store(NOT_TUNABLE, Ordering::Relaxed);
        }
    }

    /// The vCPU is back, loaded.  A wake by the advance is measured at the
    /// next [`Self::wfi_done`], but not one of a vCPU woken otherwise (its
    /// host timer was cancelled before it fired), nor one back on another
    /// CPU than its timer's: the scheduler moved it while it slept, and
    /// that wakeup's path (an IPI to the new CPU) is not the one the
    /// estimate is for.  Asked before the load starts a host timer here.
    fn back<P: Platform>(&self, p: &P) {
        if self.entry.load(Ordering::Relaxed) == NO_ENTRY || !self.host.started_here(p) {
            self.adv_used.store(NOT_TUNABLE, Ordering::Relaxed);
        }
    }

    /// Forget a wake by the advance: nothing to measure or wait for.
    fn forget_wake(&self) {
        self.wait.store(false, Ordering::Relaxed);
        self.entry.store(NO_ENTRY, Ordering::Relaxed);
        self.adv_used.store(NOT_TUNABLE, Ordering::Relaxed);
    }

    /// The deadline on the host counter of the earliest timer that can
    /// fire, by its registers now, and the ticks left to it (0 if due).
    fn first_deadline<P: Platform>(&self, p: &P) -> Option<(u64, u64)> {
        let mut first: Option<(u64, u64)> = None;
        for t in Which::ALL {
            let (ctl, cval) = self.regs_now(p, t);
            if !can_fire(ctl) {
                continue;
            }
            let rest = cval.saturating_sub(self.now(p, t));
            if first.is_none_or(|(_, r)| rest < r) {
                first = Some((cval.wrapping_add(p.offset(t)), rest));
            }
        }
        first
    }

    /// After a wake by the advance: whether the deadline it was for is
    /// still the vCPU's first and no farther than the advance's bound.  If
    /// so, the vCPU leaves WFI, and [`Self::wfi_done`] waits for it.
    /// Farther (the VM's counter offset moved since) or gone, the wake is
    /// forgotten: the vCPU blocks again, and its put starts the host timer
    /// anew.
    ///
    /// Preemptible: a put in between (still blocking) forgets the wake
    /// unless `wait` is set, so `wait` is set first and the wake checked
    /// after.  On this thread's CPU, in program order.
    fn woken_early<P: Platform>(&self, p: &P) -> bool {
        if self.entry.load(Ordering::Relaxed) == NO_ENTRY {
            return false;
        }
        self.wait.store(true, Ordering::Relaxed);
        let target = self.entry.load(Ordering::Relaxed);
        let keep = target != NO_ENTRY && self.still_first(p, target);
        if !keep {
            self.forget_wake();
        }
        keep
    }

    /// Whether `target`, the deadline on the host counter that a wake by
    /// the advance was for, is still that of the vCPU's first timer, and
    /// no farther than the advance's bound.
    fn still_first<P: Platform>(&self, p: &P, target: u64) -> bool {
        self.first_deadline(p).is_some_and(|(first, rest)| {
            first == target && self.clock.cycles_to_ns_ceil(rest) <= self.advance.max_ns()
        })
    }

    /// The vCPU is back from WFI or WFIT (`vcpu_wfi_done`, the end of
    /// `kvm_vcpu_wfi()`, its vGIC loaded), preemptible, interrupts on:
    /// after a wake by the advance, measure how early or late the vCPU is
    /// back for the deadline, which tunes the estimate (`used` went into
    /// the wake, and the path took that plus the lateness, less how
    /// early), and if it left WFI for that deadline (`pending()`) and the
    /// deadline is still its first, wait for it.  The rest of the way to the guest (the run loop's checks of
    /// the vCPU's requests, the vGIC's flush, the entry) is the same as a
    /// running vCPU's after its timer's exit.
    ///
    /// The wait raises no line: the timer does, at its deadline, from
    /// where load put it (the hardware's interrupt, or the emulated timer's
    /// host timer), and the vCPU then enters the guest with it pending.
    ///
    /// Runs after every WFI exit: with no wake to finish, it returns at
    /// once; the rest is `finish_wake`.
    #[inline]
    pub fn wfi_done<P: Platform>(&self, p: &P) {
        if self.entry.load(Ordering::Relaxed) != NO_ENTRY {
            self.finish_wake(p);
        }
    }

    /// [`Self::wfi_done`] with a wake to finish.  Not inlined, so that the
    /// common case does not pay for its frame.
    #[inline(never)]
    fn finish_wake<P: Platform>(&self, p: &P) {
        let target = self.entry.swap(NO_ENTRY, Ordering::Relaxed);
        let wait = self.wait.swap(false, Ordering::Relaxed);
        let used = self.adv_used.swap(NOT_TUNABLE, Ordering::Relaxed);
        if target == NO_ENTRY {
            return;
        }
        let start = p.counter();
        let (late_ns, early_ns) = advance::distance(self.clock, start, target);
        if used != NOT_TUNABLE {
            // Beyond the bound (a deadline moved since) it tunes nothing.
            self.advance.tune(used, late_ns, early_ns);
        }
        if !wait || early_ns == 0 || !self.still_first(p, target) {
            return;
        }
        advance::wait_ticks(
            start,
            target.saturating_sub(start),
            || p.counter(),
            || p.relax(),
        );
        // The wait for the deadline, not what else the loop took: the
        // timer's own interrupt comes at the deadline, in the wait, and its
        // handler (the vGIC's injection) runs there as it would anywhere;
        // a preemption is another task's time.
        self.stats.spin(early_ns);
    }

    /// The host timer's callback: raise the line of each timer in `scope`
    /// that is due by the counter now.  The deadline on the host counter of
    /// the first one, if any.
    ///
    /// The same condition as [`Self::scan`]'s (a timer is due at the
    /// scan's clock reading exactly when its `CVAL` is at or before the
    /// counter), without the clock: a delivery on time needs no host time.
    fn fire_due<P: Platform>(&self, p: &P, scope: u8) -> Option<u64> {
        let counter = p.counter();
        let mut first = None;
        for t in Which::ALL {
            if scope & t.bit() == 0 {
                continue;
            }
            if let Some((cval, now, target)) = self.saved_at(p, t, counter) {
                if cval <= now {
                    self.raise_scanned(p, t, cval, now);
                    first.get_or_insert(target);
                }
            }
        }
        first
    }

    /// The host timer's callback raised a line, for a timer whose deadline
    /// on the host counter is `target`, the host timer having started with
    /// advance `used`.
    fn fired<P: Platform>(&self, p: &P, used: u64, target: u64) -> Expiry {
        if used != NOT_TUNABLE {
            // A blocked vCPU's wakeup with an advance (too small to be
            // early, or late): `wfi_done` measures it.
            self.entry.store(target, Ordering::Relaxed);
        }
        if !p.irqchip_in_kernel() {
            // No vGIC to wake the vCPU for its line: wake it, and KVM finds
            // the lines to tell userspace (`kvm_arch_vcpu_runnable()`).
            p.wake();
        }
        Expiry::Done
    }

    /// The host interrupt of direct timer `t` while loaded (hard IRQ).
    ///
    /// Each one is a new delivery, also when our line is up: the host's
    /// interrupt stays active from one until the guest deactivates the
    /// line, and the vGIC may have lowered the line on resample since
    /// ([`Self::input_level`]), which tells this backend nothing.
    ///
    /// On the path a running guest waits on at each deadline, so each
    /// register is read once, and without `atomic`: in the hard interrupt,
    /// on the CPU where `t` is loaded, nothing can put it or write it.
    pub fn host_irq<P: Platform>(&self, p: &P, t: Which) {
        if !self.live(t) {
            return;
        }
        let ctl = p.hw_ctl(t);
        if !can_fire(ctl) || ctl & CTL_ISTATUS == 0 {
            return;
        }
        self.level[t.idx()].store(true, Ordering::Relaxed);
        let cval = self.guest_cval(p, t, p.hw_cval(t));
        self.count_delivery(cval, self.now(p, t));
        p.irq_line(t, true);
    }

    /// The level of `t`'s mapped line, for the vGIC (`get_input_level`):
    /// on the guest's deactivation (resample), and for a guest read of a
    /// redistributor's pending bits, also another vCPU's.  A pure read:
    /// the vGIC asks the vCPU that runs on this CPU
    /// (`kvm_get_running_vcpu()`), which need not be the one whose line it
    /// reads.
    pub fn input_level<P: Platform>(&self, p: &P, t: Which) -> bool {
        self.should_fire(p, t)
    }

    /// After a guest exit, userspace irqchip: a direct timer whose line
    /// dropped may interrupt the host again.
    pub fn sync_user<P: Platform>(&self, p: &P) {
        if !self.enabled() {
            return;
        }
        for t in Which::ALL {
            if self.direct(t) && self.level(t) && !self.should_fire(p, t) {
                self.set_level(p, t, false);
                p.host_irq_set_active(t, false);
            }
        }
    }

    /// The lines for userspace (`KVM_ARM_DEV_EL1_VTIMER`, `_PTIMER` order).
    pub fn user_lines<P: Platform>(&self, p: &P) -> [bool; 2] {
        [
            self.should_fire(p, Which::Virt),
            self.should_fire(p, Which::Phys),
        ]
    }

    /// Read register `r` of `t` (ONE_REG or a trapped access).
    pub fn read<P: Platform>(&self, p: &P, t: Which, r: TimerReg) -> u64 {
        let now = self.now(p, t);
        if r == TimerReg::Cnt {
            return now;
        }
        let (ctl, cval) = self.regs(p, t);
        match r {
            TimerReg::Cnt => now,
            TimerReg::Cval => cval,
            TimerReg::Tval => tval(cval, now),
            TimerReg::Ctl => ctl_with_status(ctl, cval, now),
        }
    }

    /// Apply a write of `r` to saved registers `(ctl, cval)`.
    fn apply(&self, r: TimerReg, val: u64, now: u64, regs: &mut (u64, u64)) {
        match r {
            TimerReg::Ctl => regs.0 = val & (CTL_ENABLE | CTL_IMASK),
            TimerReg::Cval => regs.1 = val,
            TimerReg::Tval => regs.1 = cval_from_tval(val, now),
            TimerReg::Cnt => {}
        }
    }

    /// A trapped guest write of register `r` of `t`; the architecture
    /// ignores RES0 bits, so every value is taken.
    pub fn guest_write<P: Platform>(&self, p: &P, t: Which, r: TimerReg, val: u64) {
        if r == TimerReg::Cnt {
            // The counters are read-only to the guest.
            return;
        }
        if self.live(t) {
            p.atomic(|| {
                let now = self.now(p, t);
                let mut regs = self.hw_save(p, t);
                self.apply(r, val, now, &mut regs);
                self.hw_load(p, t, regs.0, regs.1);
            });
            return;
        }
        // Interrupts off: a trap is handled preemptible, and a load in
        // between (the vCPU moved to another CPU) would start the host
        // timer there, which may raise the line before this thread, back,
        // drives it by its older decision and starts the timer again.
        p.atomic(|| {
            self.cancel(p);
            let now = self.now(p, t);
            let mut regs = (p.ctl(t), p.cval(t));
            self.apply(r, val, now, &mut regs);
            p.set_ctl(t, regs.0);
            p.set_cval(t, regs.1);
            if self.enabled() && self.loaded.load(Ordering::Relaxed) {
                self.emulate(p, t);
            }
        });
    }

    /// A ONE_REG write (the vCPU is not running): `CTL` with RES0 bits set
    /// is refused; a counter write moves the VM's offset of that counter,
    /// unless userspace fixed the offsets.
    pub fn user_write<P: Platform>(
        &self,
        p: &P,
        t: Which,
        r: TimerReg,
        val: u64,
    ) -> Result<(), Error> {
        match r {
            TimerReg::Ctl if val & !CTL_BITS != 0 => Err(Error::Invalid),
            TimerReg::Cnt => {
                if !p.offset_fixed() {
                    p.set_offset(t, p.counter().wrapping_sub(val));
                }
                Ok(())
            }
            TimerReg::Tval => Err(Error::Invalid),
            _ => {
                self.guest_write(p, t, r, val);
                Ok(())
            }
        }
    }
}

impl<P: Platform> VcpuLogic<P> for El1Timers {
    /// vCPU load (sched-in or ioctl), preemption disabled.
    fn load(&self, p: &P) {
        if !self.enabled() {
            return;
        }
        // The host timer was armed on the CPU the vCPU left, or watches a
        // timer that is about to be loaded: stop it first.
        self.cancel(p);
        self.back(p);
        for t in Which::ALL {
            if !self.direct(t) {
                continue;
            }
            // The line as the saved registers say, so that it matches the
            // state about to be loaded; an expiry in between is taken by
            // the host interrupt anyway.
            let fire = self.should_fire(p, t);
            self.set_level(p, t, fire);
            // The host's interrupt stays active while the guest has the
            // line (or the mapped interrupt) active, so that it does not
            // interrupt the host again for the same expiry.
            let active = fire || (p.irqchip_in_kernel() && p.irq_map_active(t));
            p.host_irq_set_active(t, active);
        }
        p.atomic(|| {
            for t in Which::ALL {
                if self.direct(t) {
                    self.hw_load(p, t, p.ctl(t), p.cval(t));
                }
            }
            self.loaded.store(true, Ordering::Relaxed);
        });
        for t in Which::ALL {
            if !self.direct(t) {
                self.emulate(p, t);
            }
        }
        p.set_traps();
    }

    /// vCPU put (sched-out or ioctl), preemption disabled.
    fn put(&self, p: &P) {
        if !self.enabled() {
            return;
        }
        p.atomic(|| {
            if !self.loaded.swap(false, Ordering::Relaxed) {
                return;
            }
            for t in Which::ALL {
                if self.direct(t) {
                    let (ctl, cval) = self.hw_save(p, t);
                    if !(can_fire(ctl) && ctl & CTL_ISTATUS != 0) {
                        // Its line is low, or the vGIC lowers it at the
                        // guest's deactivation: an expiry from now on is a
                        // new edge (counted by `set_level`).
                        self.level[t.idx()].store(false, Ordering::Relaxed);
                    }
                    p.set_ctl(t, ctl & !CTL_ISTATUS);
                    p.set_cval(t, cval);
                }
            }
        });
        // The emulated timer's host timer follows the vCPU: re-armed at
        // the next load, on that CPU.
        self.cancel(p);
        // A wake by the advance not measured yet (preempted on its way to
        // the guest): its path now includes the preemption.
        self.adv_used.store(NOT_TUNABLE, Ordering::Relaxed);
        if p.is_blocking() {
            self.block(p);
        }
    }

    /// The host timer's callback.
    fn expired(&self, p: &P) -> Expiry {
        let scope = self.scope.load(Ordering::Relaxed);
        let used = self.adv_used.load(Ordering::Relaxed);
        // The common case first, a timer at its deadline: by the counter
        // alone, with no clock read.
        if let Some(target) = self.fire_due(p, scope) {
            return self.fired(p, used, target);
        }
        let mut fired = false;
        let next = self.scan(p, scope, |t, d| {
            self.raise_scanned(p, t, d.cval, d.now);
            fired = true;
        });
        if let Some(d) = next.timer.filter(|_| fired) {
            return self.fired(p, used, d.target);
        }
        if scope & SCOPE_WFIT != 0 {
            if let Some(d) = p.wfit_deadline() {
                if d <= self.now(p, Which::Virt) {
                    p.wake();
                    return Expiry::Done;
                }
            }
        }
        if let Some(d) = next.timer {
            if used != NOT_TUNABLE && used != 0 && d.at.saturating_sub(used) <= next.now {
                // Early by the advance: wake the vCPU, raising no line; it
                // waits out the rest in `wfi_done()`.
                self.entry.store(d.target, Ordering::Relaxed);
                p.wake();
                return Expiry::Done;
            }
        }
        // Early (the host clock ran ahead of the counter): again, unless
        // past the end of host time.
        let r = next.wake_at(used).map_or(Expiry::Done, again);
        if r == Expiry::Done {
            // Done without a wake: nothing for the next load to measure.
            self.adv_used.store(NOT_TUNABLE, Ordering::Relaxed);
        }
        r
    }

    /// Whether a WFIT wait is over, or the vCPU was woken by the advance
    /// for its timer's deadline, which `wfi_done` waits out
    /// (`kvm_cpu_has_pending_timer`).
    fn pending(&self, p: &P) -> bool {
        let wfit_over = p
            .wfit_deadline()
            .is_some_and(|d| d <= self.now(p, Which::Virt));
        wfit_over || self.woken_early(p)
    }

    /// vCPU reset (KVM_ARM_VCPU_INIT), put, preemption disabled.
    fn reset(&self, p: &P) {
        self.cancel(p);
        self.forget_wake();
        for t in Which::ALL {
            // Disabled and unmasked, as KVM has always reset them.
            p.set_ctl(t, 0);
        }
        if self.enabled() {
            for t in Which::ALL {
                self.set_level(p, t, false);
                if self.direct(t) && p.irqchip_in_kernel() {
                    p.irq_map_reset(t);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tval_round_trips_and_sign_extends() {
        assert_eq!(tval(1100, 1000), 100);
        assert_eq!(tval(900, 1000), u64::from((-100i32) as u32));
        assert_eq!(cval_from_tval(100, 1000), 1100);
        assert_eq!(cval_from_tval(u64::from((-100i32) as u32), 1000), 900);
        // Only the low 32 bits count.
        assert_eq!(cval_from_tval((1 << 32) | 5, 1000), 1005);
        assert_eq!(cval_from_tval(u64::from(u32::MAX), 0), u64::MAX);
    }

    #[test]
    fn declines_nested_and_user_irqchip() {
        assert_eq!(decline(true, false), None);
        assert_eq!(decline(false, false), Some(Decline::UserIrqchip));
        assert_eq!(decline(true, true), Some(Decline::Nested));
        assert_eq!(decline(false, true), Some(Decline::Nested));
    }

    #[test]
    fn status_and_can_fire() {
        assert!(can_fire(CTL_ENABLE));
        assert!(!can_fire(CTL_ENABLE | CTL_IMASK));
        assert!(!can_fire(0));
        assert_eq!(
            ctl_with_status(CTL_ENABLE, 10, 10),
            CTL_ENABLE | CTL_ISTATUS
        );
        assert_eq!(
            ctl_with_status(CTL_ENABLE | CTL_ISTATUS, 11, 10),
            CTL_ENABLE
        );
        assert_eq!(ctl_with_status(0, 0, 0), CTL_ISTATUS);
    }
}
