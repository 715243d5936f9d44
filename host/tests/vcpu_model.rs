// SPDX-License-Identifier: GPL-2.0

//! Model-based test of the vCPU timer: random sequences of what a guest, a
//! VMM and the host scheduler do, run against the real state machine on a
//! simulated platform (counter, clock, one host timer, interrupt line, CSRs),
//! and checked after every step against a reference of what the guest must
//! observe.

use std::cell::{Cell, RefCell};

use kvm_vtimer_logic::timer::advance::Advance;
use kvm_vtimer_logic::timer::clock::Clock;
use kvm_vtimer_logic::timer::host_timer::HostClock;
use kvm_vtimer_logic::timer::stats::Kick;
use kvm_vtimer_logic::timer::vcpu::{
    Expiry, Mode, Platform, Reg, RegError, VcpuTimer, NEVER, STATE_OFF, STATE_ON,
};
use kvm_vtimer_logic::timer::VcpuLogic;
use proptest::prelude::*;

/// A simulated host.  Host time in ns is derived from the host counter.
struct Sim {
    hz: u64,
    host_cycles: Cell<u64>,
    delta: Cell<u64>,
    cpu: Cell<u32>,
    /// The host timer: (absolute expiry in ns, CPU it was started on).
    timer: Cell<Option<(u64, u32)>>,
    irq: Cell<bool>,
    stie: Cell<bool>,
    blocking: Cell<bool>,
    loaded: Cell<bool>,
    csr_compare: Cell<u64>,
    in_atomic: Cell<bool>,
    kicks: Cell<u32>,
    /// (guest counter, deadline) at each interrupt raised.
    raises: RefCell<Vec<(u64, u64)>>,
    deadline_seen: Cell<u64>,
    /// Cycles the next clock read comes after the counter read before it:
    /// the host CPU stalled in between.
    stall: Cell<u64>,
    /// Host timer callbacks run.
    fires: Cell<u32>,
    /// Turns of the busy-wait before guest entry.
    spins: Cell<u64>,
    /// Whether the platform lets a vCPU woken early enter with WFI
    /// untrapped (`direct_wfi`, nothing else runnable).
    untrap_ok: Cell<bool>,
    /// Whether the guest's WFI traps (`hstatus.VTW`).
    wfi_trap: Cell<bool>,
    /// The CPU of each host timer start.
    start_cpus: RefCell<Vec<u32>>,
    /// Cycles from a host timer callback that takes a loaded (running)
    /// vCPU out of the guest to its next guest entry.
    exit_path: Cell<u64>,
}

impl Sim {
    fn new(hz: u64) -> Self {
        Self {
            hz,
            host_cycles: Cell::new(1 << 30),
            // The guest counter starts at 2^20.
            delta: Cell::new((1u64 << 20).wrapping_sub(1 << 30)),
            cpu: Cell::new(0),
            timer: Cell::new(None),
            irq: Cell::new(false),
            stie: Cell::new(true),
            blocking: Cell::new(false),
            loaded: Cell::new(true),
            csr_compare: Cell::new(NEVER),
            in_atomic: Cell::new(false),
            kicks: Cell::new(0),
            raises: RefCell::new(Vec::new()),
            deadline_seen: Cell::new(NEVER),
            stall: Cell::new(0),
            fires: Cell::new(0),
            spins: Cell::new(0),
            untrap_ok: Cell::new(false),
            wfi_trap: Cell::new(true),
            start_cpus: RefCell::new(Vec::new()),
            exit_path: Cell::new(0),
        }
    }

    fn guest(&self) -> u64 {
        self.host_cycles.get().wrapping_add(self.delta.get())
    }

    fn ns_at(&self, cycles: u64) -> u64 {
        (cycles as u128 * 1_000_000_000 / self.hz as u128) as u64
    }

    /// First host counter value whose time is at or after `ns`.
    fn cycles_at(&self, ns: u64) -> u64 {
        (ns as u128 * self.hz as u128).div_ceil(1_000_000_000) as u64
    }

    /// Let `cycles` of host counter pass, running the host timer when due.
    fn advance(&self, t: &VcpuTimer, cycles: u64) {
        let end = self.host_cycles.get() + cycles;
        while let Some((ns, _)) = self.timer.get() {
            let at = self.cycles_at(ns).max(self.host_cycles.get());
            if at > end {
                break;
            }
            self.host_cycles.set(at);
            self.timer.set(None);
            self.deadline_seen.set(t.deadline());
            self.fires.set(self.fires.get() + 1);
            match t.expired(self) {
                Expiry::Done => {}
                Expiry::Again(next) => {
                    assert!(next > ns, "re-armed without progress");
                    self.timer.set(Some((next, self.cpu.get())));
                }
            }
            if self.loaded.get() {
                // A kicked, running vCPU exits and enters again after the
                // exit path, and loses no time to the advance: its host
                // timer is early by less than that path.
                let spins = self.spins.get();
                self.host_cycles
                    .set(self.host_cycles.get() + self.exit_path.get());
                t.pre_enter(self);
                assert_eq!(
                    self.spins.get(),
                    spins,
                    "a running vCPU waited for its deadline"
                );
            }
        }
        self.host_cycles.set(end.max(self.host_cycles.get()));
    }
}

impl HostClock for Sim {
    fn host_ns(&self) -> u64 {
        self.host_cycles
            .set(self.host_cycles.get() + self.stall.take());
        self.ns_at(self.host_cycles.get())
    }
    fn cpu(&self) -> u32 {
        self.cpu.get()
    }
    fn timer_start(&self, expires_ns: u64) {
        assert!(expires_ns <= i64::MAX as u64);
        self.timer.set(Some((expires_ns, self.cpu.get())));
        self.start_cpus.borrow_mut().push(self.cpu.get());
    }
    fn timer_cancel(&self) -> bool {
        self.timer.take().is_some()
    }
}

impl Platform for Sim {
    fn host_cycles(&self) -> u64 {
        self.host_cycles.get()
    }
    fn time_delta(&self) -> u64 {
        self.delta.get()
    }
    fn set_time_delta(&self, delta: u64) {
        self.delta.set(delta)
    }
    fn irq_raise(&self) -> Kick {
        self.irq_raise_now();
        Kick::Quiet
    }
    fn irq_raise_now(&self) {
        self.irq.set(true);
        self.raises
            .borrow_mut()
            .push((self.guest(), self.deadline_seen.get()));
    }
    fn irq_clear(&self) {
        self.irq.set(false);
    }
    fn irq_pending(&self) -> bool {
        self.irq.get() && self.stie.get()
    }
    fn irq_enabled(&self) -> bool {
        self.stie.get()
    }
    fn load_csrs(&self, _time_delta: u64, compare: Option<u64>) {
        assert!(
            self.loaded.get(),
            "CSRs written while the vCPU is not loaded"
        );
        if let Some(c) = compare {
            self.csr_compare.set(c);
        }
    }
    fn read_compare(&self) -> u64 {
        self.csr_compare.get()
    }
    fn atomic<R>(&self, f: impl FnOnce() -> R) -> R {
        self.in_atomic.set(true);
        let r = f();
        self.in_atomic.set(false);
        r
    }
    fn kick(&self) -> Kick {
        self.kicks.set(self.kicks.get() + 1);
        Kick::Woken
    }
    fn is_blocking(&self) -> bool {
        self.blocking.get()
    }
    fn running_here(&self) -> bool {
        self.loaded.get()
    }
    fn relax(&self) {
        self.spins.set(self.spins.get() + 1);
        self.host_cycles.set(self.host_cycles.get() + 1);
    }
    fn wfi_untrap_ok(&self) -> bool {
        self.untrap_ok.get()
    }
    fn set_wfi_trap(&self, trap: bool) {
        assert!(self.loaded.get(), "hstatus written while not loaded");
        self.wfi_trap.set(trap);
    }
}

/// What the guest must observe in SBI mode.
#[derive(Debug, Default)]
struct SbiRef {
    compare: u64,
    armed: Option<u64>,
    irq: bool,
    /// Interrupts raised so far: one per deadline reached.
    raises: usize,
    /// The deadline whose interrupt was raised last, if any.
    fired: Option<u64>,
}

impl SbiRef {
    fn program(&mut self, now: u64, d: u64) {
        self.compare = d;
        self.irq = false;
        self.armed = None;
        self.fired = None;
        if d == NEVER {
        } else if now >= d {
            self.irq = true;
            self.raises += 1;
            self.fired = Some(d);
        } else {
            self.armed = Some(d);
        }
    }
    /// ONE_REG compare: moves an armed timer, else only stored.
    fn write_compare(&mut self, now: u64, d: u64) {
        if self.armed.is_some() {
            self.program(now, d);
        } else {
            self.compare = d;
        }
    }
    /// ONE_REG state=ON: arms compare unless armed or already raised for it.
    fn state_on(&mut self, now: u64) {
        if self.armed.is_none() && self.fired != Some(self.compare) {
            self.program(now, self.compare);
        }
    }
    fn tick(&mut self, now: u64) {
        if let Some(d) = self.armed {
            if now >= d {
                self.armed = None;
                self.irq = true;
                self.raises += 1;
                self.fired = Some(d);
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// SBI set_timer at guest now + rel (may be past), or NEVER.
    SetTimer(Option<i32>),
    /// Guest writes vstimecmp directly (Sstc), then exits.
    WriteCompareCsr(Option<i32>),
    Advance(u32),
    /// Sched out (maybe blocking in WFI), then in, maybe on another CPU.
    PutLoad {
        blocking: bool,
        migrate: bool,
        sleep: u32,
    },
    SetStie(bool),
    /// VMM save/restore of a deadline: compare then state ON.
    RestoreArmed(i32),
    StateOff,
    SetTime(u32),
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    let rel = prop_oneof![4 => (-2000i32..200_000).prop_map(Some), 1 => Just(None)];
    prop_oneof![
        rel.clone().prop_map(Op::SetTimer),
        rel.prop_map(Op::WriteCompareCsr),
        (0u32..300_000).prop_map(Op::Advance),
        (any::<bool>(), any::<bool>(), 0u32..300_000).prop_map(|(blocking, migrate, sleep)| {
            Op::PutLoad {
                blocking,
                migrate,
                sleep,
            }
        }),
        any::<bool>().prop_map(Op::SetStie),
        (-2000i32..200_000).prop_map(Op::RestoreArmed),
        Just(Op::StateOff),
        (0u32..1_000_000).prop_map(Op::SetTime),
        Just(Op::Reset),
    ]
}

fn at(now: u64, rel: Option<i32>) -> u64 {
    rel.map_or(NEVER, |r| now.wrapping_add_signed(r as i64))
}

fn check_common(sim: &Sim, t: &VcpuTimer) {
    if sim.timer.get().is_some() {
        assert!(t.armed(), "host timer running while disarmed");
    }
    for &(now, d) in sim.raises.borrow().iter() {
        assert!(
            d != NEVER && now >= d,
            "interrupt at {now} before deadline {d}"
        );
    }
}

/// The advance settings the model runs with: off, on from nothing, on from
/// an overestimate.
fn advance(which: u8) -> Advance {
    match which {
        0 => Advance::off(),
        1 => Advance::new(0, 50_000),
        _ => Advance::new(40_000, 50_000),
    }
}

fn run_sbi(hz: u64, adv: u8, exit_path: u64, ops: &[Op]) {
    let sim = Sim::new(hz);
    sim.exit_path.set(exit_path);
    let t = VcpuTimer::new(Mode::Sbi, Clock::new(hz).unwrap(), advance(adv));
    let mut r = SbiRef {
        compare: NEVER,
        ..Default::default()
    };
    t.reset(&sim);
    for op in ops {
        match *op {
            Op::SetTimer(rel) | Op::WriteCompareCsr(rel) => {
                let d = at(sim.guest(), rel);
                sim.deadline_seen.set(d);
                t.set_timer(&sim, d);
                r.program(sim.guest(), d);
            }
            Op::Advance(c) => {
                sim.advance(&t, c as u64);
                r.tick(sim.guest());
            }
            Op::PutLoad {
                blocking,
                migrate,
                sleep,
            } => {
                sim.blocking.set(blocking);
                t.put(&sim);
                sim.loaded.set(false);
                sim.advance(&t, sleep as u64);
                if migrate {
                    sim.cpu.set(sim.cpu.get() ^ 1);
                }
                sim.loaded.set(true);
                sim.blocking.set(false);
                t.load(&sim);
                if let Some((_, cpu)) = sim.timer.get() {
                    assert_eq!(cpu, sim.cpu.get(), "host timer did not follow the vCPU");
                }
                // Guest entry: a delivery that came early waits here.
                t.pre_enter(&sim);
                r.tick(sim.guest());
            }
            Op::SetStie(on) => sim.stie.set(on),
            Op::RestoreArmed(rel) => {
                let d = at(sim.guest(), Some(rel));
                // Writing compare re-programs an armed timer at once.
                sim.deadline_seen.set(d);
                t.set_reg(&sim, Reg::Compare, d).unwrap();
                r.write_compare(sim.guest(), d);
                t.set_reg(&sim, Reg::State, STATE_ON).unwrap();
                r.state_on(sim.guest());
                assert_eq!(t.get_reg(&sim, Reg::Compare), d);
            }
            Op::StateOff => {
                t.set_reg(&sim, Reg::State, STATE_OFF).unwrap();
                r.armed = None;
                assert_eq!(t.get_reg(&sim, Reg::State), STATE_OFF);
            }
            Op::SetTime(v) => {
                let v = v as u64 + (1 << 20);
                t.set_reg(&sim, Reg::Time, v).unwrap();
                assert_eq!(t.get_reg(&sim, Reg::Time), v);
                if let Some(d) = r.armed {
                    r.program(v, d);
                }
            }
            Op::Reset => {
                t.reset(&sim);
                r.armed = None;
                r.compare = NEVER;
                r.fired = None;
            }
        }
        check_common(&sim, &t);
        assert_eq!(sim.irq.get(), r.irq, "interrupt line after {op:?}");
        assert_eq!(
            sim.raises.borrow().len(),
            r.raises,
            "interrupts raised after {op:?}"
        );
        assert_eq!(t.armed(), r.armed.is_some(), "armed after {op:?}");
        let want = if r.armed.is_some() {
            STATE_ON
        } else {
            STATE_OFF
        };
        assert_eq!(t.get_reg(&sim, Reg::State), want);
        assert_eq!(t.pending(&sim), r.irq && sim.stie.get());
    }
}

/// Whether `deadline` is ahead and within the advance estimate: after an
/// exit then, WFI may stay untrapped (a blocking vCPU would be woken late).
fn near(sim: &Sim, t: &VcpuTimer, deadline: u64) -> bool {
    let (now, hz) = (sim.guest(), sim.hz as u128);
    deadline != NEVER
        && deadline > now
        && ((deadline - now) as u128 * 1_000_000_000).div_ceil(hz) <= 2 * t.advance().ns() as u128
}

fn run_sstc(hz: u64, adv: u8, untrap: bool, ops: &[Op]) {
    let sim = Sim::new(hz);
    sim.untrap_ok.set(untrap);
    let t = VcpuTimer::new(Mode::Sstc, Clock::new(hz).unwrap(), advance(adv));
    t.reset(&sim);
    t.load(&sim);
    let mut deadline = NEVER;
    for op in ops {
        match *op {
            Op::SetTimer(rel) => {
                // The SBI call is an exit.
                t.sync(&sim);
                assert!(
                    sim.wfi_trap.get() || near(&sim, &t, deadline),
                    "WFI untrapped after an exit, deadline not near"
                );
                deadline = at(sim.guest(), rel);
                t.set_timer(&sim, deadline);
                assert_eq!(
                    sim.csr_compare.get(),
                    deadline,
                    "SBI deadline not in vstimecmp"
                );
            }
            Op::WriteCompareCsr(rel) => {
                deadline = at(sim.guest(), rel);
                sim.csr_compare.set(deadline);
                t.sync(&sim);
            }
            Op::Advance(c) => sim.advance(&t, c as u64),
            Op::PutLoad {
                blocking,
                migrate,
                sleep,
            } => {
                // The exit (WFI, or a host interrupt) before the put.
                t.sync(&sim);
                let kept = !sim.wfi_trap.get();
                assert!(
                    !kept || near(&sim, &t, deadline),
                    "WFI untrapped after an exit, deadline not near"
                );
                if blocking && !t.pending(&sim) && t.keep_running(&sim) {
                    // KVM asked before it slept: the deadline is within
                    // the wake timer's reach, the vCPU does not block but
                    // enters at once, into a WFI that waits in the hart.
                    assert!(untrap, "kept from blocking without direct WFI");
                    assert!(deadline != NEVER && sim.guest() < deadline);
                    let spins = sim.spins.get();
                    t.pre_enter(&sim);
                    assert!(!sim.wfi_trap.get(), "kept from blocking, WFI trapping");
                    assert_eq!(sim.spins.get(), spins, "kept from blocking, then a wait");
                } else {
                    sim.blocking.set(blocking);
                    t.put(&sim);
                    sim.loaded.set(false);
                    sim.csr_compare.set(0xdead); // another vCPU uses the CSR
                    let kicks = sim.kicks.get();
                    let wake_at = sim.timer.get();
                    sim.advance(&t, sleep as u64);
                    if blocking && sim.stie.get() && deadline != NEVER && sim.guest() >= deadline {
                        assert!(
                            sim.kicks.get() > kicks,
                            "blocked vCPU not woken at its deadline"
                        );
                    }
                    let woken = sim.kicks.get() > kicks;
                    if woken {
                        let (ns, _) = wake_at.expect("kick without a wake timer");
                        assert!(ns <= sim.host_ns());
                    }
                    if migrate {
                        sim.cpu.set(sim.cpu.get() ^ 1);
                    }
                    sim.loaded.set(true);
                    sim.blocking.set(false);
                    t.load(&sim);
                    assert_eq!(sim.csr_compare.get(), deadline, "vstimecmp not restored");
                    assert!(sim.timer.get().is_none(), "wake timer left running");
                    let spins = sim.spins.get();
                    let moved_before = {
                        let starts = sim.start_cpus.borrow();
                        starts.len() >= 2 && starts[starts.len() - 1] != starts[starts.len() - 2]
                    };
                    t.pre_enter(&sim);
                    if woken && sim.guest() < deadline {
                        // Only into a WFI that waits in the hart, not the host.
                        assert!(untrap, "woken vCPU entered before its deadline");
                        assert!(!migrate, "entered early on a CPU it did not block on");
                        assert!(!moved_before, "entered early right after a move");
                        assert!(!sim.wfi_trap.get(), "entered early with WFI trapping");
                        assert_eq!(sim.spins.get(), spins, "entered early after a wait");
                    } else {
                        assert!(
                            sim.wfi_trap.get() || kept,
                            "WFI untrapped for no early entry"
                        );
                    }
                }
            }
            Op::SetStie(on) => sim.stie.set(on),
            Op::RestoreArmed(rel) => {
                // A VMM restores while the vCPU is not loaded.
                sim.loaded.set(false);
                deadline = at(sim.guest(), Some(rel));
                t.set_reg(&sim, Reg::Compare, deadline).unwrap();
                t.set_reg(&sim, Reg::State, STATE_ON).unwrap();
                sim.loaded.set(true);
                t.load(&sim);
                assert_eq!(sim.csr_compare.get(), deadline);
            }
            Op::StateOff => {
                sim.loaded.set(false);
                t.set_reg(&sim, Reg::State, STATE_OFF).unwrap();
                sim.loaded.set(true);
                t.load(&sim);
                deadline = NEVER;
                assert_eq!(t.get_reg(&sim, Reg::State), STATE_OFF);
            }
            Op::SetTime(v) => {
                let v = v as u64 + (1 << 20);
                t.set_reg(&sim, Reg::Time, v).unwrap();
                assert_eq!(t.get_reg(&sim, Reg::Time), v);
            }
            Op::Reset => {
                t.reset(&sim);
                t.load(&sim);
                deadline = NEVER;
            }
        }
        check_common(&sim, &t);
        assert!(!sim.irq.get(), "Sstc: the host never raises VSTIP");
        assert_eq!(t.deadline(), deadline);
        let due = deadline != NEVER && sim.guest() >= deadline;
        assert_eq!(
            t.pending(&sim),
            due && sim.stie.get(),
            "pending after {op:?}"
        );
    }
}

const FREQS: [u64; 4] = [10_000_000, 62_500_000, 1_000_000_000, 3];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn sbi_mode_matches_reference(hz in prop::sample::select(&FREQS[..]), adv in 0u8..3,
                                  exit_path in 0u64..600,
                                  ops in prop::collection::vec(op(), 1..40)) {
        run_sbi(hz, adv, exit_path, &ops);
    }

    #[test]
    fn sstc_mode_matches_reference(hz in prop::sample::select(&FREQS[..]), adv in 0u8..3,
                                   untrap in any::<bool>(),
                                   ops in prop::collection::vec(op(), 1..40)) {
        run_sstc(hz, adv, untrap, &ops);
    }
}

/// A vCPU timer in `mode` at 10 MHz, without advance, reset.
fn plain(mode: Mode) -> (Sim, VcpuTimer) {
    let sim = Sim::new(10_000_000);
    let t = VcpuTimer::new(mode, Clock::new(10_000_000).unwrap(), Advance::off());
    t.reset(&sim);
    (sim, t)
}

#[test]
fn one_reg_errors_and_values() {
    for mode in [Mode::Sbi, Mode::Sstc] {
        let (sim, t) = plain(mode);
        assert_eq!(t.get_reg(&sim, Reg::Frequency), 10_000_000);
        assert_eq!(t.set_reg(&sim, Reg::Frequency, 10_000_000), Ok(()));
        assert_eq!(t.set_reg(&sim, Reg::Frequency, 1), Err(RegError::Invalid));
        assert_eq!(t.set_reg(&sim, Reg::State, 2), Err(RegError::Invalid));
        // Nothing armed: turning it off succeeds (the in-tree timer: -EINVAL).
        assert_eq!(t.set_reg(&sim, Reg::State, STATE_OFF), Ok(()));
        assert_eq!(t.get_reg(&sim, Reg::Compare), NEVER);
        assert_eq!(Reg::from_num(4), None);
    }
}

#[test]
fn state_on_arms_the_saved_compare_not_one() {
    let (sim, t) = plain(Mode::Sbi);
    let d = sim.guest() + 1000;
    t.set_reg(&sim, Reg::Compare, d).unwrap();
    sim.deadline_seen.set(d);
    t.set_reg(&sim, Reg::State, STATE_ON).unwrap();
    assert!(
        !sim.irq.get(),
        "fired at once: armed the state value, not the deadline"
    );
    sim.advance(&t, 999);
    assert!(!sim.irq.get());
    sim.advance(&t, 1);
    assert!(sim.irq.get());
}

#[test]
fn a_host_stall_does_not_delay_the_host_timer() {
    // The host CPU stalls for 1 ms between reading the counter and the
    // clock: the host timer must still be at the deadline.
    for mode in [Mode::Sbi, Mode::Sstc] {
        let (sim, t) = plain(mode);
        let d = sim.guest() + 100_000;
        sim.stall.set(10_000);
        if mode == Mode::Sbi {
            t.set_timer(&sim, d);
        } else {
            // Sstc: the host timer only watches a blocked vCPU.
            t.load(&sim);
            t.set_timer(&sim, d);
            sim.blocking.set(true);
            t.put(&sim);
        }
        let (ns, _) = sim.timer.get().expect("host timer armed");
        assert_eq!(ns, sim.ns_at(d.wrapping_sub(sim.delta.get())), "{mode:?}");
    }
}

#[test]
fn far_and_never_deadlines_do_not_start_the_host_timer() {
    let (sim, t) = plain(Mode::Sbi);
    for d in [NEVER, NEVER - 1, 1 << 63] {
        t.set_timer(&sim, d);
        assert!(sim.timer.get().is_none(), "host timer for {d}");
        assert_eq!(t.armed(), d != NEVER);
    }
}

#[test]
fn masked_sstc_timer_does_not_wake_a_blocked_vcpu() {
    let (sim, t) = plain(Mode::Sstc);
    t.load(&sim);
    t.set_timer(&sim, sim.guest() - 1);
    sim.stie.set(false);
    assert!(
        !t.pending(&sim),
        "masked, due timer ends WFI: the vCPU would spin"
    );
    sim.blocking.set(true);
    t.put(&sim);
    assert!(sim.timer.get().is_none());
    sim.stie.set(true);
    assert!(t.pending(&sim));
}

#[test]
fn restoring_a_raised_deadline_raises_once_and_reset_forgets_it() {
    let (sim, t) = plain(Mode::Sbi);
    let d = sim.guest();
    sim.deadline_seen.set(d);
    t.set_timer(&sim, d);
    assert_eq!(sim.raises.borrow().len(), 1);
    // A VMM restores the same, already raised deadline: nothing new.
    t.set_reg(&sim, Reg::Compare, d).unwrap();
    t.set_reg(&sim, Reg::State, STATE_ON).unwrap();
    assert_eq!(sim.raises.borrow().len(), 1);
    assert!(sim.irq.get());
    // After a vCPU reset the same value is a new deadline again.
    t.reset(&sim);
    sim.irq.set(false);
    t.set_reg(&sim, Reg::Compare, d).unwrap();
    t.set_reg(&sim, Reg::State, STATE_ON).unwrap();
    assert_eq!(sim.raises.borrow().len(), 2);
    assert!(sim.irq.get());
}

/// A 10 MHz vCPU timer in `mode` with a 20 us advance estimate (at most
/// 50 us), reset, on its simulated platform.
fn with_advance(mode: Mode) -> (Sim, VcpuTimer) {
    let sim = Sim::new(10_000_000);
    let t = VcpuTimer::new(
        mode,
        Clock::new(10_000_000).unwrap(),
        Advance::new(20_000, 50_000),
    );
    t.reset(&sim);
    (sim, t)
}

#[test]
fn advance_delivers_at_the_deadline_and_not_before() {
    // 10 MHz: 100 ns a tick; a 20 us advance is 200 ticks.
    let (sim, t) = with_advance(Mode::Sbi);
    let d = sim.guest() + 100_000;
    sim.deadline_seen.set(d);
    t.set_timer(&sim, d);
    let d_ns = sim.ns_at(d.wrapping_sub(sim.delta.get()));
    let (ns, _) = sim.timer.get().expect("host timer armed");
    assert_eq!(ns, d_ns, "a running vCPU's host timer is at the deadline");

    // The vCPU blocks: the host timer moves 200 ticks early, fires and
    // wakes it, but the interrupt is not raised before the deadline.
    block(&sim, &t);
    let (ns, _) = sim.timer.get().expect("host timer armed");
    assert_eq!(ns + 20_000, d_ns);
    sim.advance(&t, 100_000 - 150);
    assert!(sim.timer.get().is_none());
    assert!(!sim.irq.get(), "raised before the deadline");
    assert!(t.pending(&sim), "an early delivery must end WFI");
    assert_eq!(t.get_reg(&sim, Reg::State), STATE_ON);

    // Guest entry waits out the last 150 ticks, then raises it.
    enter(&sim, &t);
    assert!(sim.irq.get());
    assert_eq!(*sim.raises.borrow(), vec![(d, d)]);
    let st = t.stats().snapshot();
    // Two starts (set_timer, the block's re-arm) and no cancel: the
    // re-arm replaced the queued expiry.
    assert_eq!((st.irqs, st.early, st.starts, st.cancels), (1, 0, 2, 0));
    assert_eq!(st.late[0], 1, "delivered on the deadline's tick");
    assert_eq!(sim.spins.get(), 150, "waited the last 150 ticks");
    assert_eq!(st.spin_ns, 15_000, "spun 15 us");
    // It had to wait 15 us: the estimate shrinks by half of that.
    assert_eq!(t.advance().ns(), 20_000 - 7_500);
}

/// A 10 MHz Sstc vCPU with a 20 us advance (`with_advance`) that blocks with
/// its deadline 10 ms ahead and is woken 20 us (200 ticks) early: the
/// wakeup has fired and the vCPU is not loaded yet, 150 ticks before the
/// deadline.  Runs with `untrap_ok` as given; the deadline is returned.
fn woken_early(untrap_ok: bool) -> (Sim, VcpuTimer, u64) {
    let (sim, t) = with_advance(Mode::Sstc);
    sim.untrap_ok.set(untrap_ok);
    t.load(&sim);
    let d = sim.guest() + 100_000;
    t.set_timer(&sim, d);
    block(&sim, &t);
    sim.advance(&t, 100_000 - 150);
    (sim, t, d)
}

/// The vCPU blocks in WFI: put from the scheduler, no longer loaded.
fn block(sim: &Sim, t: &VcpuTimer) {
    sim.blocking.set(true);
    t.put(sim);
    sim.loaded.set(false);
}

/// The vCPU is back: loaded, not blocking, and enters the guest.
fn enter(sim: &Sim, t: &VcpuTimer) {
    sim.loaded.set(true);
    sim.blocking.set(false);
    t.load(sim);
    t.pre_enter(sim);
}

/// With Sstc, a vCPU woken before its deadline: with `direct_wfi`, on the
/// CPU it blocked on, it enters at once with WFI untrapped (the hart raises
/// the interrupt), and the next exit traps WFI again and counts the time;
/// without, or moved to another CPU, it waits out the rest.
#[test]
fn sstc_early_wakeup_enters_with_wfi_untrapped() {
    for (ok, moved) in [(true, false), (false, false), (true, true)] {
        let untrap = ok && !moved;
        // Woken 20 us (200 ticks) early; it runs 50 ticks later.
        let (sim, t, d) = woken_early(ok);
        assert!(sim.timer.get().is_none(), "{untrap}: wake timer not fired");
        assert!(t.pending(&sim), "{untrap}: an early wakeup must end WFI");
        if moved {
            // Moved to another CPU while it slept: it waits there.
            sim.cpu.set(1);
        }
        enter(&sim, &t);
        let st = t.stats().snapshot();
        assert_eq!((st.irqs, st.early), (1, 0), "{untrap}");
        if !untrap {
            // It waited 15 us: the estimate shrinks by half of that; not
            // for a wakeup on another CPU than its timer's, whose path is
            // not the one the estimate is for.
            let tuned = if moved { 20_000 } else { 20_000 - 7_500 };
            assert_eq!(t.advance().ns(), tuned, "{ok} {moved}");
            assert!(sim.wfi_trap.get());
            assert_eq!((sim.spins.get(), st.spin_ns), (150, 15_000));
            assert_eq!((st.untrapped, st.late[0]), (0, 1));
            continue;
        }
        // Early costs no wait, but the estimate aims at a margin ahead:
        // fired 20 us early, ready 15 us early, the path took 5 us; the
        // estimate moves half way to 5 us and a quarter, 6.25 us.
        assert_eq!(t.advance().ns(), 20_000 - (20_000 - 6_250) / 2);
        assert!(!sim.wfi_trap.get(), "entered early with WFI trapping");
        assert_eq!(sim.guest(), d - 150, "entered at once");
        assert_eq!((sim.spins.get(), st.spin_ns, st.untrapped), (0, 0, 1));
        assert_eq!(st.late.iter().sum::<u64>(), 0, "the host measured nothing");
        // The guest waits in the hart past its deadline; a host interrupt
        // takes it out 300 ticks after the entry.
        sim.advance(&t, 300);
        t.sync(&sim);
        assert!(sim.wfi_trap.get(), "WFI still untrapped after the exit");
        let st = t.stats().snapshot();
        assert_eq!((st.untrapped, st.untrapped_ns), (1, 30_000));
        // The next entry, nothing delivered: WFI traps.
        t.pre_enter(&sim);
        t.sync(&sim);
        assert!(sim.wfi_trap.get());
        assert_eq!(t.stats().snapshot().untrapped_ns, 30_000);
    }
}

/// An exit that ends an untrapped stretch within twice the advance before
/// the next deadline keeps WFI untrapped (a blocking vCPU would be woken too
/// late); one farther from it, or with another task to run, traps again.
#[test]
fn sstc_exit_near_the_deadline_keeps_wfi_untrapped() {
    for (ahead, ok, keeps) in [
        (100, true, true),
        (100, false, false),
        (262, true, true),
        (263, true, false),
    ] {
        let (sim, t, d) = woken_early(true);
        enter(&sim, &t);
        assert!(!sim.wfi_trap.get());
        // The guest takes its interrupt in the hart and programs the next
        // deadline; an exit comes `ahead` ticks before it (the entry tuned
        // the estimate to 13.125 us: twice that is 262.5 ticks).
        assert_eq!(t.advance().ns(), 13_125);
        let next = d + 10_000;
        sim.csr_compare.set(next);
        sim.host_cycles
            .set(sim.host_cycles.get() + (next - sim.guest()) - ahead);
        sim.untrap_ok.set(ok);
        t.sync(&sim);
        assert_eq!(!sim.wfi_trap.get(), keeps, "{ahead} {ok}");
        assert_eq!(t.deadline(), next);
        // The time so far is counted either way.
        let held = t.stats().snapshot().untrapped_ns;
        assert_eq!(held, (10_150 - ahead) * 100, "{ahead} {ok}");
        if keeps {
            // The next exit, past the deadline, traps it again.
            sim.host_cycles.set(sim.host_cycles.get() + ahead + 10);
            t.sync(&sim);
            assert!(sim.wfi_trap.get());
            assert_eq!(t.stats().snapshot().untrapped_ns, held + (ahead + 10) * 100);
        }
    }
}

/// What KVM asks before a vCPU sleeps in WFI (`kvm_vcpu_check_block()`):
/// the glue's `vcpu_pending` op.
fn check_block(sim: &Sim, t: &VcpuTimer) -> bool {
    t.pending(sim) || t.keep_running(sim)
}

/// A vCPU about to block with its deadline nearer than its wake timer's
/// lead and a quarter would be woken at once, late: with direct WFI it does
/// not block, and enters untrapped.  Farther, without direct WFI, or moved
/// to another CPU, it blocks as before.  The host's tick farther than
/// twice the estimate before a deadline made WFI trap; KVM's halt polling
/// ran past the rest of the lead before the block, the wake timer fired at
/// once, and the guest saw its interrupt late (the benchmark's wfi p99
/// with Sstc, `Documentation/riscv.rst`, "Direct WFI (Sstc)").
#[test]
fn sstc_block_within_the_lead_enters_untrapped_instead() {
    // ahead (ticks), direct WFI, moved since: kept from blocking
    for (ahead, ok, moved, kept) in [
        (150, true, false, true),
        (164, true, false, true),
        (165, true, false, false),
        (230, true, false, false),
        (150, false, false, false),
        (150, true, true, false),
    ] {
        let (sim, t, d) = woken_early(true);
        enter(&sim, &t);
        // The entry tuned the estimate to 13.125 us: a quarter more is
        // 16.4 us, 164 ticks.
        assert_eq!(t.advance().ns(), 13_125);
        // The guest takes the interrupt in the hart, programs its next
        // deadline; the host's tick takes it out 30 us before it, farther
        // than twice the estimate: WFI traps again.
        let next = d + 10_000;
        sim.csr_compare.set(next);
        sim.host_cycles
            .set(sim.host_cycles.get() + (next - sim.guest()) - 300);
        t.sync(&sim);
        assert!(sim.wfi_trap.get());
        // Back in the guest, its WFI traps `ahead` ticks before the deadline.
        sim.host_cycles.set(sim.host_cycles.get() + 300 - ahead);
        sim.untrap_ok.set(ok);
        if moved {
            sim.cpu.set(1);
        }
        let irqs = t.stats().snapshot().irqs;
        assert_eq!(check_block(&sim, &t), kept, "{ahead} {ok} {moved}");
        if !kept {
            // It blocks: its wake timer fires the estimate ahead.
            block(&sim, &t);
            assert!(sim.timer.get().is_some(), "{ahead} {ok} {moved}");
            continue;
        }
        assert_eq!(t.stats().snapshot().irqs, irqs + 1, "counted as a delivery");
        // Asked again (halt polling), no second delivery.
        assert!(check_block(&sim, &t));
        assert_eq!(t.stats().snapshot().irqs, irqs + 1);
        let spins = sim.spins.get();
        t.pre_enter(&sim);
        assert!(!sim.wfi_trap.get(), "kept from blocking, WFI trapping");
        assert_eq!(sim.spins.get(), spins, "kept from blocking, then a wait");
        assert_eq!(sim.guest(), next - ahead, "entered at once");
        assert!(sim.timer.get().is_none(), "no wake timer");
        assert!(!t.pending(&sim), "delivered once");
        // Not tuned: no wake timer fired.
        assert_eq!(t.advance().ns(), 13_125);
        // The hart raises the interrupt at the deadline; the guest never
        // sees it early.
        let st = t.stats().snapshot();
        assert_eq!(st.early, 0);
    }
}

#[test]
fn advance_estimate_grows_when_entry_is_late() {
    let sim = Sim::new(10_000_000);
    let t = VcpuTimer::new(
        Mode::Sstc,
        Clock::new(10_000_000).unwrap(),
        Advance::new(0, 50_000),
    );
    t.reset(&sim);
    t.load(&sim);
    let d = sim.guest() + 10_000;
    t.set_timer(&sim, d);
    block(&sim, &t);
    // Woken at the deadline, entered 30 us (300 ticks) later.
    sim.advance(&t, 10_000 + 300);
    enter(&sim, &t);
    let st = t.stats().snapshot();
    assert_eq!((st.irqs, st.wakeups, st.cancels), (1, 1, 0));
    assert_eq!(st.late[9], 1, "300 ticks late: bucket 256..512");
    // From nothing, the first measurement is the estimate.
    assert_eq!(t.advance().ns(), 30_000);
}

#[test]
fn a_deadline_nearer_than_the_advance_fires_once_and_tunes_it() {
    // A 20 us estimate; the vCPU blocks 5 us (50 ticks) before its
    // deadline.  The host timer starts at once and must deliver at once
    // (one callback, not one now and one at the deadline), and the
    // delivery measures the path: fired 5 us early, the vCPU entered 3 us
    // later and waited the last 2 us, so the path took 3 us.
    for mode in [Mode::Sbi, Mode::Sstc] {
        let (sim, t) = with_advance(mode);
        t.load(&sim);
        let d = sim.guest() + 50;
        sim.deadline_seen.set(d);
        t.set_timer(&sim, d);
        block(&sim, &t);
        sim.advance(&t, 30);
        assert_eq!(sim.fires.get(), 1, "{mode:?}: host timer callbacks");
        assert!(sim.kicks.get() >= 1, "{mode:?}: blocked vCPU not woken");
        assert!(t.pending(&sim), "{mode:?}: the delivery must end WFI");
        enter(&sim, &t);
        assert_eq!(sim.guest(), d, "{mode:?}: entered at the deadline");
        assert_eq!(
            t.advance().ns(),
            20_000 - (20_000 - 3_000) / 2,
            "{mode:?}: the estimate learnt nothing"
        );
        assert_eq!(sim.fires.get(), 1, "{mode:?}: fired again");
        if mode == Mode::Sbi {
            assert_eq!(*sim.raises.borrow(), vec![(d, d)]);
        }
    }
}

#[test]
fn a_running_vcpu_takes_its_sbi_interrupt_at_the_deadline() {
    // The guest spins through its deadline: the host timer fires at the
    // deadline, not by the advance before it, and the vCPU does not wait
    // for it before guest entry.
    let (sim, t) = with_advance(Mode::Sbi);
    let d = sim.guest() + 100_000;
    sim.deadline_seen.set(d);
    t.set_timer(&sim, d);
    sim.advance(&t, 100_000 - 1);
    assert_eq!(sim.fires.get(), 0, "host timer fired before the deadline");
    sim.advance(&t, 1);
    assert_eq!(sim.fires.get(), 1);
    assert_eq!(*sim.raises.borrow(), vec![(d, d)]);
    assert_eq!(sim.spins.get(), 0, "the running vCPU waited");
    assert_eq!(t.stats().snapshot().spin_ns, 0);
    // It was no wakeup: the estimate is left alone.
    assert_eq!(t.advance().ns(), 20_000);
}

/// SBI, a vCPU running in the guest: once it has measured the path from its
/// host timer to its next guest entry, the host timer takes it out early by
/// that path less an eighth, so that it enters just after the deadline and
/// never waits for it; a vCPU out of the guest when that timer fires (here
/// preempted) gets it at the deadline, and one that blocks gets the wakeup
/// advance instead.
#[test]
fn a_running_vcpu_is_taken_out_a_margin_before_its_sbi_deadline() {
    // 10 MHz: the path is 240 ticks, 24 us.
    let (sim, t) = with_advance(Mode::Sbi);
    sim.exit_path.set(240);
    let next = |sim: &Sim| {
        let d = sim.guest() + 100_000;
        sim.deadline_seen.set(d);
        t.set_timer(sim, d);
        (d, sim.ns_at(d.wrapping_sub(sim.delta.get())))
    };
    // Nothing learnt yet: at the deadline, entered 24 us late, which is
    // the estimate less an eighth, 21 us.
    let (d, d_ns) = next(&sim);
    assert_eq!(sim.timer.get().map(|(ns, _)| ns), Some(d_ns));
    sim.advance(&t, 100_000 + 240);
    assert_eq!(*sim.raises.borrow(), vec![(d, d)]);
    assert_eq!(t.running_advance().ns(), 21_000);
    assert_eq!(t.advance().ns(), 20_000, "the wakeup estimate moved");

    // Out 21 us early, in 3 us after the deadline: no wait.
    let (d, d_ns) = next(&sim);
    assert_eq!(sim.timer.get().map(|(ns, _)| ns + 21_000), Some(d_ns));
    sim.advance(&t, 100_000 + 30);
    assert_eq!(sim.raises.borrow().last(), Some(&(d + 30, d)));
    assert_eq!((sim.spins.get(), t.stats().snapshot().spin_ns), (0, 0));
    assert_eq!(t.stats().snapshot().late[5], 1, "30 ticks late: 16..32");
    assert_eq!(t.running_advance().ns(), 21_000);

    // Preempted when the early timer fires: at the deadline, learning
    // nothing.
    let (d, _) = next(&sim);
    t.put(&sim);
    sim.loaded.set(false);
    sim.advance(&t, 100_000 - 100);
    assert!(
        sim.timer.get().is_some(),
        "delivered early out of the guest"
    );
    sim.advance(&t, 100);
    assert_eq!(sim.raises.borrow().last(), Some(&(d, d)));
    sim.advance(&t, 1000);
    enter(&sim, &t);
    assert_eq!(sim.spins.get(), 0);
    assert_eq!(t.running_advance().ns(), 21_000);

    // Blocking: the wakeup's advance.
    let (_, d_ns) = next(&sim);
    block(&sim, &t);
    assert_eq!(sim.timer.get().map(|(ns, _)| ns + 20_000), Some(d_ns));
    // Woken otherwise, back in the guest: the running one again.
    enter(&sim, &t);
    assert_eq!(sim.timer.get().map(|(ns, _)| ns + 21_000), Some(d_ns));
}

#[test]
fn a_vcpu_woken_before_its_early_timer_runs_to_the_deadline() {
    // The vCPU blocks (its host timer moves 20 us early), then something
    // else wakes it 50 us before the deadline: back in the guest, its
    // host timer is at the deadline again.
    let (sim, t) = with_advance(Mode::Sbi);
    let d = sim.guest() + 100_000;
    let d_ns = sim.ns_at(d.wrapping_sub(sim.delta.get()));
    sim.deadline_seen.set(d);
    t.set_timer(&sim, d);
    block(&sim, &t);
    assert_eq!(sim.timer.get().map(|(ns, _)| ns + 20_000), Some(d_ns));
    sim.advance(&t, 100_000 - 500);
    enter(&sim, &t);
    assert_eq!(sim.timer.get().map(|(ns, _)| ns), Some(d_ns));
    sim.advance(&t, 500);
    assert_eq!(*sim.raises.borrow(), vec![(d, d)]);
    assert_eq!(sim.spins.get(), 0, "the running vCPU waited");

    // Woken otherwise between the early expiry and guest entry: the
    // callback finds the vCPU no longer blocking and waits for the
    // deadline itself.
    let d = sim.guest() + 100_000;
    let d_ns = sim.ns_at(d.wrapping_sub(sim.delta.get()));
    sim.deadline_seen.set(d);
    t.set_timer(&sim, d);
    sim.blocking.set(true);
    t.put(&sim);
    sim.blocking.set(false);
    sim.advance(&t, 100_000 - 100);
    assert_eq!(sim.fires.get(), 2, "the early expiry ran");
    assert_eq!(sim.timer.get().map(|(ns, _)| ns), Some(d_ns));
    sim.advance(&t, 100);
    assert_eq!(sim.raises.borrow().last(), Some(&(d, d)));
    assert_eq!(sim.spins.get(), 0, "the running vCPU waited");
}

// The host timer's rules, as `rust/timer/host_timer.rs` has them for both
// architectures (el1_model.rs pins the same ones for arm64).

#[test]
fn host_timer_counts_a_migration_when_started_on_another_cpu() {
    let (sim, t) = plain(Mode::Sbi);
    let counts = || {
        let s = t.stats().snapshot();
        (s.starts, s.migrations)
    };
    // The first start has no CPU before it: no migration, on any CPU.
    sim.cpu.set(3);
    t.set_timer(&sim, sim.guest() + 1000);
    assert_eq!(counts(), (1, 0));
    // Started again on the same CPU: none.
    t.set_timer(&sim, sim.guest() + 1000);
    assert_eq!(counts(), (2, 0));
    sim.advance(&t, 2000);
    assert_eq!(sim.raises.borrow().len(), 1);
    // The vCPU moves with no timer armed, then programs one: the start on
    // the new CPU is a migration.
    sim.cpu.set(1);
    t.load(&sim);
    assert_eq!(counts(), (2, 0));
    t.set_timer(&sim, sim.guest() + 1000);
    assert_eq!(counts(), (3, 1));
    // Loaded elsewhere with the timer armed: the load moves it.
    sim.cpu.set(2);
    t.load(&sim);
    assert_eq!(counts(), (4, 2));
    assert_eq!(sim.timer.get().map(|(_, cpu)| cpu), Some(2));
}

#[test]
fn host_timer_deadline_past_ktime_max_is_never() {
    for mode in [Mode::Sbi, Mode::Sstc] {
        let (sim, t) = plain(mode);
        // 2^62 cycles at 10 MHz: far past the end of ktime_t.
        let far = sim.guest() + (1 << 62);
        t.set_timer(&sim, far);
        t.sync(&sim);
        sim.blocking.set(true);
        t.put(&sim);
        assert_eq!(sim.timer.get(), None, "{mode:?}: host timer started");
        assert_eq!(t.stats().snapshot().starts, 0);
        assert_eq!(t.deadline(), far, "{mode:?}: the deadline is kept");
    }
}
