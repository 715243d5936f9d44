// SPDX-License-Identifier: GPL-2.0

//! The arm64 EL1 timers (`rust/timer/el1.rs`) under the interleaving
//! scheduler: the vCPU thread (guest programming and trapped accesses,
//! the guest's handling of the interrupt through the vGIC, WFI, exits), the
//! host timer's callback, the direct timers' host interrupt, a ONE_REG
//! ioctl, a preemption of the vCPU thread and a remote kick.  In-kernel
//! vGIC (mapped lines, resampled through `input_level`) or a userspace
//! irqchip (`sync_user`, lines in `kvm_run`); counter offsets; the timer
//! advance of a blocked vCPU, whose wait-out once out of WFI (`wfi_done`)
//! runs with interrupts on (the host timer and the host interrupt may come
//! in it).

use std::sync::{Arc, Mutex, MutexGuard};

use crate::hrtimer::{self, end_run, Hr, Wait};
use crate::sched::{self, Actor, World};
use crate::timer::advance::Advance;
use crate::timer::clock::Clock;
use crate::timer::el1::{
    can_fire, El1Timers, Error, Placement, Platform, TimerReg, Which, CTL_IMASK, CTL_ISTATUS,
};
use crate::timer::host_timer::HostClock;
use crate::timer::VcpuLogic;

/// The actors, by index.
pub const VCPU: usize = 0;
/// The host timer: its callback runs on the CPU it was started on.
pub const TIMER: usize = 1;
/// A ONE_REG ioctl from another userspace thread.
pub const IOCTL: usize = 2;
/// The scheduler preempts the vCPU thread (put, then load on the other
/// CPU), at any point where it may.
pub const PREEMPT: usize = 3;
/// Another event for the vCPU: a halted vCPU wakes and stops halting.
pub const KICK: usize = 4;
/// The host interrupt of a loaded direct timer whose output is asserted,
/// on the vCPU's CPU.
pub const HWIRQ: usize = 5;
const ACTORS: usize = 6;

const IOCTL_CPU: u32 = 2;
const MAX_FIRES: u32 = 6;
/// How far the counter moves while a busy-wait pauses once.
const RELAX_TICKS: u64 = 10;

fn idx(t: Which) -> usize {
    match t {
        Which::Virt => 0,
        Which::Phys => 1,
    }
}

/// A step of the vCPU thread's script; deadlines are relative to the
/// timer's counter when the step starts.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// The guest programs direct timer `t` without a trap: `CTL`, and
    /// `CVAL` now + the offset.
    Program(Which, u64, i64),
    /// A trapped guest write of `CTL` (the value) or `TVAL`.
    Write(Which, TimerReg, u64),
    /// The guest runs this many cycles.
    Run(u64),
    /// The guest acknowledges `t`'s interrupt, masks the timer and
    /// deactivates the interrupt (the vGIC resamples the mapped line).
    Handle(Which),
    /// The guest reads another vCPU's pending bits: the vGIC asks this
    /// vCPU's `input_level` for both lines.
    ReadOtherPending,
    /// WFI: block until woken, maybe moving to the other CPU.
    Halt {
        /// Load on the other CPU.
        migrate: bool,
    },
    /// WFIT with a deadline this far ahead on the virtual counter.
    HaltWfit(i64),
    /// KVM_RUN returns to userspace (put, mutex released) and is called
    /// again.
    ExitToUser,
}

/// A ONE_REG access of the ioctl actor.
#[derive(Clone, Copy, Debug)]
pub enum Ioctl {
    /// Write register `r` of `t`: `CNT` and `CVAL` are the timer's counter
    /// now plus the offset, `CTL` the value.
    Write(Which, TimerReg, i64),
    /// Read `CTL` of `t`.
    ReadCtl(Which),
}

/// A scenario: what each actor does.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Where the physical timer runs.
    pub phys: Placement,
    /// A userspace irqchip instead of the vGIC.
    pub user_irqchip: bool,
    /// The VM's (virtual, physical) counter offsets at the start.
    pub offsets: (u64, u64),
    /// With a timer advance (30 ns, at most 60).
    pub advance: bool,
    /// The vCPU thread's script.
    pub vcpu: Vec<Op>,
    /// The ioctl actor's accesses (none: no such actor).
    pub ioctl: Vec<Ioctl>,
    /// Whether the scheduler may preempt the vCPU thread once.
    pub preempt: bool,
    /// Whether a remote kick comes once.
    pub kick: bool,
}

struct W {
    now: u64,
    offset: [u64; 2],
    saved: [(u64, u64); 2],
    hw: [Option<(u64, u64)>; 2],
    user_irqchip: bool,
    line: [bool; 2],
    guest_active: [bool; 2],
    host_active: [bool; 2],
    run_lines: [bool; 2],
    hr: Hr,
    fires: u32,
    blocking: bool,
    halted: bool,
    woken: bool,
    other_event: bool,
    loaded: bool,
    vcpu_cpu: u32,
    preempting: bool,
    preempted: bool,
    preemptible: bool,
    hwirq_running: bool,
    mutex: Option<usize>,
    waits: [Wait; ACTORS],
    irqs_off: [bool; ACTORS],
    present: [bool; ACTORS],
    in_put: bool,
    in_input_level: bool,
    wfit: Option<u64>,
    /// Bumped by each write of a timer's registers or offset: a rising
    /// edge of its line is one per value.
    epoch: [u32; 2],
    edges: Vec<(usize, u32)>,
}

impl W {
    fn guest_now(&self, t: Which) -> u64 {
        self.now.wrapping_sub(self.offset[idx(t)])
    }

    fn cpu_of(&self, a: usize) -> u32 {
        match a {
            IOCTL => IOCTL_CPU,
            KICK => 3,
            TIMER => match self.hr {
                Hr::Running { cpu, .. } | Hr::Queued { cpu, .. } => cpu,
                Hr::Idle => u32::MAX,
            },
            _ => self.vcpu_cpu,
        }
    }

    fn irqs_off_on(&self, cpu: u32) -> bool {
        (0..ACTORS).any(|a| a != TIMER && a != HWIRQ && self.irqs_off[a] && self.cpu_of(a) == cpu)
    }

    /// Whether a hard interrupt (the host timer's callback, a timer's host
    /// interrupt) runs on `cpu`.
    fn in_irq_on(&self, cpu: u32) -> bool {
        matches!(self.hr, Hr::Running { cpu: c, .. } if c == cpu)
            || (self.hwirq_running && cpu == self.vcpu_cpu)
    }

    fn ready(&self, what: Wait) -> bool {
        match what {
            Wait::No => true,
            Wait::Callback => !matches!(self.hr, Hr::Running { .. }),
            Wait::Mutex => self.mutex.is_none(),
            Wait::Wakeup => self.woken || self.other_event,
        }
    }

    /// The guest's `CTL` and `CVAL` of `t`, wherever they are (see
    /// `el1_model.rs`).
    fn guest_regs(&self, t: Which) -> (u64, u64) {
        match self.hw[idx(t)] {
            None => self.saved[idx(t)],
            Some((ctl, _)) if t == Which::Phys && self.offset[1] != 0 => (ctl, self.saved[1].1),
            Some(regs) => regs,
        }
    }

    /// Whether `t`'s interrupt condition holds, by the guest's registers.
    fn condition(&self, t: Which) -> bool {
        let (ctl, cval) = self.guest_regs(t);
        can_fire(ctl) && cval <= self.guest_now(t)
    }

    /// The live `CTL` of loaded `t`, with `ISTATUS`.
    fn hw_ctl(&self, t: Which) -> u64 {
        let (ctl, cval) = self.hw[idx(t)].expect("reading an unloaded timer");
        let now = match t {
            Which::Virt => self.guest_now(t),
            Which::Phys => self.now,
        };
        if cval <= now {
            ctl | CTL_ISTATUS
        } else {
            ctl
        }
    }

    /// The direct timer whose asserted output the host takes next.
    fn hw_irq(&self) -> Option<Which> {
        Which::ALL.into_iter().find(|&t| {
            self.hw[idx(t)].is_some() && !self.host_active[idx(t)] && {
                let ctl = self.hw_ctl(t);
                can_fire(ctl) && ctl & CTL_ISTATUS != 0
            }
        })
    }

    /// What wakes a vCPU that blocks (`kvm_vcpu_check_block()`), but
    /// the backend's own `pending` (WFIT only).
    fn runnable(&self, lines: [bool; 2]) -> bool {
        if self.other_event {
            return true;
        }
        if self.user_irqchip {
            lines != self.run_lines
        } else {
            (0..2).any(|i| self.line[i] && !self.guest_active[i])
        }
    }
}

/// The world of one execution: the simulated host and the timers.
pub struct Arm {
    w: Mutex<W>,
    t: El1Timers,
}

fn me() -> usize {
    sched::current().unwrap_or(VCPU)
}

impl Arm {
    fn new(s: &Scenario) -> Arc<Self> {
        let mut present = [false; ACTORS];
        present[VCPU] = true;
        present[TIMER] = true;
        present[HWIRQ] = true;
        present[IOCTL] = !s.ioctl.is_empty();
        present[PREEMPT] = s.preempt;
        present[KICK] = s.kick;
        let now = 1_000_000u64;
        let offset = [s.offsets.0, s.offsets.1];
        let adv = if s.advance {
            Advance::new(30, 60)
        } else {
            Advance::off()
        };
        // Disabled, CVAL at the timer's counter now.
        let saved = [0, 1].map(|i| (0, now.wrapping_sub(offset[i])));
        let arm = Arc::new(Arm {
            w: Mutex::new(W {
                now,
                offset,
                saved,
                hw: [None, None],
                user_irqchip: s.user_irqchip,
                line: [false; 2],
                guest_active: [false; 2],
                host_active: [false; 2],
                run_lines: [false; 2],
                hr: Hr::Idle,
                fires: 0,
                blocking: false,
                halted: false,
                woken: false,
                other_event: false,
                loaded: false,
                vcpu_cpu: 0,
                preempting: false,
                preempted: false,
                preemptible: false,
                hwirq_running: false,
                mutex: Some(VCPU),
                waits: [Wait::No; ACTORS],
                irqs_off: [false; ACTORS],
                present,
                in_put: false,
                in_input_level: false,
                wfit: None,
                epoch: [0; 2],
                edges: Vec::new(),
            }),
            t: El1Timers::new(Clock::new(1_000_000_000).unwrap(), s.phys, adv),
        });
        arm.t.enable(&*arm).unwrap();
        load(&arm);
        arm
    }

    fn lock(&self) -> MutexGuard<'_, W> {
        self.w.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait(&self, what: Wait) {
        loop {
            {
                let mut w = self.lock();
                if w.ready(what) {
                    w.waits[me()] = Wait::No;
                    return;
                }
                w.waits[me()] = what;
            }
            sched::point(format!("waits: {what:?}"));
        }
    }

    fn irqs_off<R>(&self, f: impl FnOnce() -> R) -> R {
        let a = me();
        let was = std::mem::replace(&mut self.lock().irqs_off[a], true);
        let r = f();
        self.lock().irqs_off[a] = was;
        r
    }

    fn wake(w: &mut W) {
        if w.blocking {
            w.woken = true;
        }
    }

    fn no_change_in_input_level(w: &W, what: &str) {
        if w.in_input_level {
            sched::fail(format!("input_level changes state: {what}"));
        }
    }
}

hrtimer::impl_host_clock!(Arm);

impl Platform for Arm {
    fn counter(&self) -> u64 {
        self.lock().now
    }
    fn offset(&self, t: Which) -> u64 {
        self.lock().offset[idx(t)]
    }
    fn set_offset(&self, t: Which, offset: u64) {
        sched::point("set_offset");
        let mut w = self.lock();
        w.offset[idx(t)] = offset;
        w.epoch[idx(t)] += 1;
    }
    fn offset_fixed(&self) -> bool {
        false
    }
    fn ctl(&self, t: Which) -> u64 {
        sched::point(format!("ctl({t:?})"));
        self.lock().saved[idx(t)].0
    }
    fn cval(&self, t: Which) -> u64 {
        sched::point(format!("cval({t:?})"));
        self.lock().saved[idx(t)].1
    }
    fn set_ctl(&self, t: Which, ctl: u64) {
        sched::point(format!("set_ctl({t:?})"));
        let mut w = self.lock();
        Self::no_change_in_input_level(&w, "set_ctl");
        w.saved[idx(t)].0 = ctl;
    }
    fn set_cval(&self, t: Which, cval: u64) {
        sched::point(format!("set_cval({t:?})"));
        let mut w = self.lock();
        Self::no_change_in_input_level(&w, "set_cval");
        w.saved[idx(t)].1 = cval;
    }
    fn cntpoff(&self) -> bool {
        false
    }
    fn hw_load(&self, t: Which, offset: u64, ctl: u64, cval: u64) {
        sched::point(format!("hw_load({t:?})"));
        let mut w = self.lock();
        assert!(w.irqs_off[me()], "hardware loaded with interrupts on");
        assert_eq!(offset, w.offset[idx(t)], "loaded with another offset");
        w.hw[idx(t)] = Some((ctl, cval));
    }
    fn hw_save(&self, t: Which) -> (u64, u64) {
        sched::point(format!("hw_save({t:?})"));
        let mut w = self.lock();
        assert!(w.irqs_off[me()], "hardware saved with interrupts on");
        w.hw[idx(t)].take().expect("saving an unloaded timer")
    }
    fn hw_ctl(&self, t: Which) -> u64 {
        self.lock().hw_ctl(t)
    }
    fn hw_cval(&self, t: Which) -> u64 {
        self.lock().hw[idx(t)].expect("reading an unloaded timer").1
    }
    fn set_traps(&self) {}
    fn irqchip_in_kernel(&self) -> bool {
        !self.lock().user_irqchip
    }
    fn irq_line(&self, t: Which, level: bool) {
        sched::point(format!("irq_line({t:?}, {level})"));
        let mut w = self.lock();
        if w.user_irqchip {
            return;
        }
        Self::no_change_in_input_level(&w, "irq_line");
        if w.in_put {
            sched::fail("a line driven from put (a wakeup in the scheduler)");
        }
        let i = idx(t);
        if level && !w.line[i] {
            if !w.condition(t) {
                let (ctl, cval) = w.guest_regs(t);
                sched::fail(format!(
                    "{t:?} raised early or disabled: CTL {ctl:#x}, CVAL {cval}, count {}",
                    w.guest_now(t)
                ));
            }
            let edge = (i, w.epoch[i]);
            if w.edges.contains(&edge) {
                sched::fail(format!("{t:?} raised twice for one deadline"));
            }
            w.edges.push(edge);
            // The vGIC queues the interrupt and kicks the vCPU.
            Self::wake(&mut w);
        }
        w.line[i] = level;
    }
    fn irq_map_active(&self, t: Which) -> bool {
        let w = self.lock();
        assert!(!w.user_irqchip, "no vGIC");
        w.guest_active[idx(t)]
    }
    fn host_irq_set_active(&self, t: Which, active: bool) {
        sched::point(format!("host_irq_set_active({t:?}, {active})"));
        let mut w = self.lock();
        Self::no_change_in_input_level(&w, "host_irq_set_active");
        w.host_active[idx(t)] = active;
    }
    fn irq_map_reset(&self, t: Which) {
        let mut w = self.lock();
        w.line[idx(t)] = false;
        w.guest_active[idx(t)] = false;
    }
    fn irq_setup(&self, _direct: &[Which]) -> Result<(), Error> {
        Ok(())
    }
    fn wfit_deadline(&self) -> Option<u64> {
        sched::point("wfit_deadline");
        self.lock().wfit
    }
    fn wake(&self) {
        sched::point("wake");
        Self::wake(&mut self.lock());
    }
    fn is_blocking(&self) -> bool {
        sched::point("is_blocking");
        self.lock().blocking
    }
    fn atomic<R>(&self, f: impl FnOnce() -> R) -> R {
        self.irqs_off(f)
    }
    fn relax(&self) {
        // Interrupts are on in the wait: the host's may come in between.
        sched::point("relax");
        self.lock().now += RELAX_TICKS;
    }
}

impl World for Arm {
    fn enabled(&self, a: usize) -> bool {
        let w = self.lock();
        if !w.present[a] {
            return false;
        }
        match a {
            TIMER => match w.hr {
                Hr::Queued { cpu, .. } => {
                    !w.irqs_off_on(cpu) && !w.in_irq_on(cpu) && w.fires < MAX_FIRES
                }
                Hr::Running { .. } => true,
                Hr::Idle => false,
            },
            HWIRQ if w.hwirq_running => true,
            HWIRQ => {
                w.hw_irq().is_some()
                    && !w.irqs_off_on(w.vcpu_cpu)
                    && !w.in_irq_on(w.vcpu_cpu)
                    && !w.in_put
            }
            _ if w.in_irq_on(w.cpu_of(a)) => false,
            VCPU if w.preempting => false,
            PREEMPT if !w.preempting => {
                !w.preempted
                    && w.preemptible
                    && w.loaded
                    && !w.irqs_off[VCPU]
                    && w.waits[VCPU] == Wait::No
            }
            _ => w.ready(w.waits[a]),
        }
    }

    fn on_store(&self, _addr: usize, _val: u64) {
        Self::no_change_in_input_level(&self.lock(), "an atomic store");
    }

    fn finish(&self) {
        let t = &self.t;
        {
            let w = self.lock();
            if w.halted && w.wfit.is_some() {
                sched::fail("the vCPU halted in WFIT is never woken");
            }
            if w.halted {
                let lost = Which::ALL
                    .into_iter()
                    .filter(|&x| can_fire(w.saved[idx(x)].0))
                    .find(|&x| w.user_irqchip || !w.line[idx(x)]);
                if let Some(x) = lost {
                    sched::fail(format!(
                        "the halted vCPU is never woken for its {x:?} timer"
                    ));
                }
                return;
            }
            if matches!(w.hr, Hr::Queued { .. }) {
                sched::fail("the host timer is left running after put");
            }
        }
        // The next KVM_RUN: the deadlines pass, the host timer and the
        // timers' host interrupts run.
        load(self);
        {
            let mut w = self.lock();
            for x in Which::ALL {
                let (ctl, cval) = w.guest_regs(x);
                if can_fire(ctl) {
                    let host = cval.wrapping_add(w.offset[idx(x)]);
                    w.now = w.now.max(host);
                }
            }
        }
        for _ in 0..MAX_FIRES {
            {
                let mut w = self.lock();
                let Hr::Queued { at, cpu } = w.hr else { break };
                w.now = w.now.max(at);
                w.hr = Hr::Running {
                    cpu,
                    at,
                    restarted: None,
                };
            }
            let r = t.expired(self);
            let mut w = self.lock();
            w.hr = end_run(w.hr, r);
        }
        host_irqs(self);
        let user = self.lock().user_irqchip;
        if user {
            exit_user(self);
        }
        let w = self.lock();
        for x in Which::ALL {
            let i = idx(x);
            let seen = if user { w.run_lines[i] } else { w.line[i] };
            if w.condition(x) && !seen {
                sched::fail(format!("the {x:?} timer's interrupt is lost"));
            }
        }
        if w.hr != Hr::Idle {
            sched::fail(format!("the host timer never stops: {:?}", w.hr));
        }
        let st = t.stats().snapshot();
        if st.early != 0 {
            sched::fail("the statistics count an early interrupt");
        }
        if st.late.iter().sum::<u64>() != st.irqs {
            sched::fail(format!(
                "the lateness histogram misses deliveries: {:?} for {} irqs",
                st.late, st.irqs
            ));
        }
    }
}

/// The host takes the asserted interrupts of the loaded direct timers
/// (outside an execution: in the final checks).
fn host_irqs(arm: &Arm) {
    loop {
        let x = {
            let mut w = arm.lock();
            let Some(x) = w.hw_irq() else { return };
            w.host_active[idx(x)] = true;
            x
        };
        arm.irqs_off(|| arm.t.host_irq(arm, x));
    }
}

fn load(arm: &Arm) {
    arm.lock().loaded = true;
    arm.t.load(arm);
}

fn put(arm: &Arm) {
    arm.lock().in_put = true;
    arm.irqs_off(|| arm.t.put(arm));
    let mut w = arm.lock();
    w.in_put = false;
    w.loaded = false;
}

fn acquire(arm: &Arm) {
    let a = me();
    arm.wait(Wait::Mutex);
    arm.lock().mutex = Some(a);
}

fn release(arm: &Arm) {
    arm.lock().mutex = None;
}

/// After an exit with a userspace irqchip: `sync_user`, then userspace is
/// told the lines if they changed (`kvm_timer_update_run()`).
fn exit_user(arm: &Arm) {
    arm.irqs_off(|| arm.t.sync_user(arm));
    let lines = arm.t.user_lines(arm);
    arm.lock().run_lines = lines;
}

fn preemptible<R>(arm: &Arm, f: impl FnOnce() -> R) -> R {
    arm.lock().preemptible = true;
    let r = f();
    arm.lock().preemptible = false;
    r
}

/// Checks between two steps of the vCPU thread.
fn check_between(arm: &Arm, op: Op) {
    let w = arm.lock();
    if matches!(w.hr, Hr::Running { .. }) || !w.loaded || w.mutex != Some(VCPU) {
        return;
    }
    if matches!(w.hr, Hr::Queued { .. }) {
        let watched = Which::ALL
            .into_iter()
            .any(|x| arm.t.placement(x) == Placement::Emulated && can_fire(w.saved[idx(x)].0));
        if !watched {
            sched::fail(format!(
                "after {op:?}: the host timer runs for no timer that can fire"
            ));
        }
    }
}

/// WFI: `kvm_vcpu_block()`.
fn halt(arm: &Arm, migrate: bool) {
    let t = &arm.t;
    arm.lock().blocking = true;
    let mut timer_pending = false;
    for _ in 0..3 {
        sched::point("wfi: check_block");
        let lines = t.user_lines(arm);
        if arm.lock().runnable(lines) {
            break;
        }
        if preemptible(arm, || t.pending(arm)) {
            timer_pending = true;
            break;
        }
        put(arm);
        arm.lock().halted = true;
        arm.wait(Wait::Wakeup);
        {
            let mut w = arm.lock();
            w.halted = false;
            w.woken = false;
            if migrate {
                w.vcpu_cpu ^= 1;
            }
        }
        load(arm);
    }
    {
        let mut w = arm.lock();
        w.blocking = false;
        w.other_event = false;
    }
    // The end of `kvm_vcpu_wfi()`, on the way to the guest: a wake by the
    // advance waits out its deadline there, with interrupts and
    // preemption on.
    preemptible(arm, || t.wfi_done(arm));
    if timer_pending {
        // Back to the guest for a timer (or the WFIT deadline), with no
        // line needed: its deadline must have come, or the guest finds
        // its WFI done for nothing.
        let w = arm.lock();
        let wfit_over = w.wfit.is_some_and(|d| d <= w.guest_now(Which::Virt));
        if !wfit_over && !Which::ALL.into_iter().any(|x| w.condition(x)) {
            sched::fail("the vCPU enters the guest for its timer before the deadline");
        }
    }
}

fn vcpu_step(arm: &Arm, op: Op) {
    preemptible(arm, || sched::point(format!("-- {op:?}")));
    let t = &arm.t;
    match op {
        Op::Program(x, ctl, rel) => {
            let mut w = arm.lock();
            let cval = w.guest_now(x).wrapping_add_signed(rel);
            assert!(w.hw[idx(x)].is_some(), "programs an unloaded timer");
            w.hw[idx(x)] = Some((ctl, cval));
            w.epoch[idx(x)] += 1;
        }
        Op::Write(x, r, val) => {
            arm.lock().epoch[idx(x)] += 1;
            preemptible(arm, || t.guest_write(arm, x, r, val));
        }
        Op::Run(n) => preemptible(arm, || {
            arm.lock().now += n;
            sched::point("guest runs");
        }),
        Op::Handle(x) => {
            let pending = {
                let mut w = arm.lock();
                let pending = w.line[idx(x)] && !w.user_irqchip;
                if pending {
                    w.guest_active[idx(x)] = true;
                    w.epoch[idx(x)] += 1;
                }
                pending
            };
            if !pending {
                return check_between(arm, op);
            }
            // The handler masks the timer: a trapped write or not.
            if t.placement(x) == Placement::Emulated {
                let ctl = t.read(arm, x, TimerReg::Ctl) & !CTL_ISTATUS;
                preemptible(arm, || {
                    t.guest_write(arm, x, TimerReg::Ctl, ctl | CTL_IMASK)
                });
            } else {
                let mut w = arm.lock();
                if let Some((ctl, cval)) = w.hw[idx(x)] {
                    w.hw[idx(x)] = Some((ctl | CTL_IMASK, cval));
                }
            }
            // The deactivation: the host's interrupt goes with it, and at
            // the exit the vGIC resamples the line.
            {
                let mut w = arm.lock();
                w.guest_active[idx(x)] = false;
                w.host_active[idx(x)] = false;
            }
            sched::point("the guest deactivates the interrupt");
            arm.irqs_off(|| {
                if arm.lock().line[idx(x)] {
                    let level = input_level(arm, x);
                    arm.lock().line[idx(x)] = level;
                }
            });
        }
        Op::ReadOtherPending => {
            arm.irqs_off(|| {
                for x in Which::ALL {
                    input_level(arm, x);
                }
            });
        }
        Op::Halt { migrate } => halt(arm, migrate),
        Op::HaltWfit(rel) => {
            {
                let mut w = arm.lock();
                let d = w.guest_now(Which::Virt).wrapping_add_signed(rel);
                w.wfit = Some(d);
            }
            halt(arm, false);
            arm.lock().wfit = None;
        }
        Op::ExitToUser => {
            put(arm);
            release(arm);
            sched::point("in userspace");
            acquire(arm);
            load(arm);
        }
    }
    if arm.lock().user_irqchip {
        exit_user(arm);
    }
    check_between(arm, op);
}

/// The vGIC asks for `x`'s line: it must change nothing.
fn input_level(arm: &Arm, x: Which) -> bool {
    arm.lock().in_input_level = true;
    let level = arm.t.input_level(arm, x);
    arm.lock().in_input_level = false;
    level
}

fn ioctl_step(arm: &Arm, op: Ioctl) {
    sched::point(format!("-- ONE_REG {op:?}"));
    let t = &arm.t;
    match op {
        Ioctl::Write(x, r, rel) => {
            let val = match r {
                TimerReg::Ctl => rel as u64,
                _ => {
                    let w = arm.lock();
                    w.guest_now(x).wrapping_add_signed(rel)
                }
            };
            arm.lock().epoch[idx(x)] += 1;
            t.user_write(arm, x, r, val).unwrap();
        }
        Ioctl::ReadCtl(x) => {
            t.read(arm, x, TimerReg::Ctl);
        }
    }
}

fn timer_actor(arm: Arc<Arm>) {
    loop {
        sched::point("hrtimer waits");
        let at = {
            let mut w = arm.lock();
            let Hr::Queued { at, cpu } = w.hr else {
                unreachable!("the timer runs only when queued")
            };
            w.now = w.now.max(at);
            w.hr = Hr::Running {
                cpu,
                at,
                restarted: None,
            };
            w.fires += 1;
            at
        };
        sched::point(format!("hrtimer expires at {at}: callback"));
        let r = arm.t.expired(&*arm);
        sched::point(format!("callback returns {r:?}"));
        let mut w = arm.lock();
        w.hr = end_run(w.hr, r);
    }
}

fn hwirq_actor(arm: Arc<Arm>) {
    loop {
        sched::point("host interrupt waits");
        let x = {
            let mut w = arm.lock();
            let x = w.hw_irq().expect("enabled for an asserted output");
            w.host_active[idx(x)] = true;
            w.hwirq_running = true;
            x
        };
        sched::point(format!("host interrupt of {x:?}"));
        arm.t.host_irq(&*arm, x);
        arm.lock().hwirq_running = false;
    }
}

/// The actors of `s` on a fresh world.
pub fn setup(s: &Scenario) -> (Arc<Arm>, Vec<Actor>) {
    let arm = Arm::new(s);
    let mut actors: Vec<Actor> = Vec::new();
    let a = arm.clone();
    let script = s.vcpu.clone();
    actors.push((
        "vcpu",
        Box::new(move || {
            for op in script {
                vcpu_step(&a, op);
            }
            put(&a);
            release(&a);
        }),
    ));
    let a = arm.clone();
    actors.push(("timer", Box::new(move || timer_actor(a))));
    let a = arm.clone();
    let ops = s.ioctl.clone();
    actors.push((
        "ioctl",
        Box::new(move || {
            acquire(&a);
            for op in ops {
                ioctl_step(&a, op);
            }
            release(&a);
        }),
    ));
    let a = arm.clone();
    actors.push((
        "preempt",
        Box::new(move || {
            a.lock().preempting = true;
            sched::point("preempts the vCPU: put");
            put(&a);
            a.lock().vcpu_cpu ^= 1;
            sched::point("the vCPU runs again, on the other CPU: load");
            load(&a);
            let mut w = a.lock();
            w.preempting = false;
            w.preempted = true;
        }),
    ));
    let a = arm.clone();
    actors.push((
        "kick",
        Box::new(move || {
            sched::point("remote kick");
            let mut w = a.lock();
            w.other_event = true;
            Arm::wake(&mut w);
        }),
    ));
    let a = arm.clone();
    actors.push(("hwirq", Box::new(move || hwirq_actor(a))));
    (arm, actors)
}

/// Explore `s` with at most `bound` preemptions, with `mutation` on.
pub fn explore(s: &Scenario, bound: usize, mutation: Option<&'static str>) -> sched::Report {
    sched::explore(bound, mutation, || setup(s))
}
