// SPDX-License-Identifier: GPL-2.0

//! The RISC-V vCPU timer (`rust/timer/vcpu.rs`) under the interleaving
//! scheduler: the vCPU thread, the host timer's callback, a ONE_REG ioctl,
//! the scheduler preempting the vCPU, and a remote kick.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::hrtimer::{self, end_run, Hr, Wait};
use crate::sched::{self, Actor, World};
use crate::timer::advance::Advance;
use crate::timer::clock::Clock;
use crate::timer::host_timer::HostClock;
use crate::timer::stats::Kick;
use crate::timer::vcpu::{Mode, Platform, Reg, VcpuTimer, NEVER, STATE_OFF, STATE_ON};
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
/// Another event for the vCPU (an IPI, a device interrupt): a halted vCPU
/// wakes and stops halting.
pub const KICK: usize = 4;
const ACTORS: usize = 5;

/// The CPU the ioctl thread runs on.
const IOCTL_CPU: u32 = 2;
/// The most callback runs in one execution.
const MAX_FIRES: u32 = 6;
/// What another vCPU leaves in `vstimecmp`.
const OTHER_CSR: u64 = 0xdead;

/// A step of the vCPU thread's script.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// SBI `set_timer` for guest now + the offset (`None`: never).
    SetTimer(Option<i64>),
    /// Sstc: the guest writes `vstimecmp` (now + the offset) and exits.
    WriteCsr(i64),
    /// The guest runs this many cycles.
    Run(u64),
    /// WFI: block until woken, maybe moving to the other CPU.
    Halt { migrate: bool },
    /// Guest entry.
    PreEnter,
    /// KVM_RUN returns to userspace (put, the vCPU mutex released) and is
    /// called again.
    ExitToUser,
}

/// A ONE_REG access of the ioctl actor.
#[derive(Clone, Copy, Debug)]
pub enum Ioctl {
    /// Compare := guest now + the offset.
    SetCompare(i64),
    /// State ON or OFF.
    SetState(u64),
    /// Time := guest now + the offset.
    SetTime(i64),
    /// Read the state.
    GetState,
}

/// A scenario: what each actor does.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// SBI or Sstc.
    pub mode: Mode,
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
    mode: Mode,
    /// Host counter and clock: 1 GHz, so one cycle a ns.
    now: u64,
    delta: u64,
    hr: Hr,
    fires: u32,
    /// VSTIP pending.
    irq: bool,
    stie: bool,
    blocking: bool,
    halted: bool,
    woken: bool,
    woken_by_timer: bool,
    other_event: bool,
    loaded: bool,
    vcpu_cpu: u32,
    csr: u64,
    preempting: bool,
    preempted: bool,
    preemptible: bool,
    mutex: Option<usize>,
    waits: [Wait; ACTORS],
    irqs_off: [bool; ACTORS],
    preempt_off: bool,
    present: [bool; ACTORS],
    /// Deadlines stored since the line was last cleared.
    since_clear: Vec<u64>,
    /// Deadlines raised, in order.
    raised: Vec<u64>,
    /// Deadlines raised since the guest last programmed one: each once.
    raised_since_program: Vec<u64>,
    /// SBI: the deadline whose interrupt the guest must get.
    expect: Option<u64>,
    /// Sstc: the deadline the guest programmed last.
    guest_deadline: u64,
    deadline_addr: usize,
}

impl W {
    fn guest_now(&self) -> u64 {
        self.now.wrapping_add(self.delta)
    }

    /// The CPU actor `a` runs on.
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

    /// Whether an actor on `cpu` has interrupts off there: the host timer
    /// cannot fire on it.
    fn irqs_off_on(&self, cpu: u32) -> bool {
        (0..ACTORS).any(|a| a != TIMER && self.irqs_off[a] && self.cpu_of(a) == cpu)
    }

    fn ready(&self, what: Wait) -> bool {
        match what {
            Wait::No => true,
            Wait::Callback => !matches!(self.hr, Hr::Running { .. }),
            Wait::Mutex => self.mutex.is_none(),
            Wait::Wakeup => self.woken || self.other_event,
        }
    }

    /// Whether the host timer's callback interrupted actor `a` on its CPU.
    fn interrupted(&self, a: usize) -> bool {
        matches!(self.hr, Hr::Running { cpu, .. } if cpu == self.cpu_of(a))
    }
}

/// The world of one execution: the simulated host and the timer.
pub struct Rv {
    w: Mutex<W>,
    t: VcpuTimer,
}

fn me() -> usize {
    sched::current().unwrap_or(VCPU)
}

impl Rv {
    fn new(s: &Scenario) -> Arc<Self> {
        let adv = if s.advance {
            Advance::new(30, 60)
        } else {
            Advance::off()
        };
        let mut present = [false; ACTORS];
        present[VCPU] = true;
        present[TIMER] = true;
        present[IOCTL] = !s.ioctl.is_empty();
        present[PREEMPT] = s.preempt;
        present[KICK] = s.kick;
        let rv = Arc::new(Rv {
            w: Mutex::new(W {
                mode: s.mode,
                now: 1_000_000,
                delta: 5_000,
                hr: Hr::Idle,
                fires: 0,
                irq: false,
                stie: true,
                blocking: false,
                halted: false,
                woken: false,
                woken_by_timer: false,
                other_event: false,
                loaded: true,
                vcpu_cpu: 0,
                csr: NEVER,
                preempting: false,
                preempted: false,
                preemptible: false,
                mutex: Some(VCPU),
                waits: [Wait::No; ACTORS],
                irqs_off: [false; ACTORS],
                preempt_off: false,
                present,
                since_clear: Vec::new(),
                raised: Vec::new(),
                raised_since_program: Vec::new(),
                expect: None,
                guest_deadline: NEVER,
                deadline_addr: 0,
            }),
            t: VcpuTimer::new(s.mode, Clock::new(1_000_000_000).unwrap(), adv),
        });
        rv.lock().deadline_addr = rv.t.deadline_addr();
        rv.t.reset(&*rv);
        rv.t.load(&*rv);
        rv
    }

    fn lock(&self) -> MutexGuard<'_, W> {
        self.w.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Under the lock: the raise of an interrupt is checked.
    fn check_raise(&self, w: &mut W, how: &str) {
        let d = self.t.peek_fired();
        if w.irq {
            sched::fail(format!(
                "{how}: the interrupt is raised twice (already pending), deadline {d}"
            ));
        }
        if w.guest_now() < d {
            sched::fail(format!(
                "{how}: raised at guest time {} before its deadline {d}",
                w.guest_now()
            ));
        }
        if w.raised_since_program.contains(&d) {
            sched::fail(format!(
                "{how}: the interrupt for deadline {d} is raised a second time"
            ));
        }
        if !w.since_clear.contains(&d) {
            sched::fail(format!(
                "{how}: raised for deadline {d}, which the guest replaced since (stale)"
            ));
        }
        w.irq = true;
        w.raised.push(d);
        w.raised_since_program.push(d);
    }

    fn wake(&self, w: &mut W) -> Kick {
        if w.blocking {
            w.woken = true;
            if me() == TIMER {
                w.woken_by_timer = true;
            }
            Kick::Woken
        } else {
            Kick::Quiet
        }
    }

    /// Wait (yielding) for `what`.
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

    fn set_irqs_off(&self, off: bool) {
        self.lock().irqs_off[me()] = off;
    }
}

hrtimer::impl_host_clock!(Rv);

impl Platform for Rv {
    fn host_cycles(&self) -> u64 {
        self.lock().now
    }
    fn time_delta(&self) -> u64 {
        self.lock().delta
    }
    fn set_time_delta(&self, delta: u64) {
        sched::point("set_time_delta");
        self.lock().delta = delta;
    }
    fn irq_raise(&self) -> Kick {
        sched::point("irq_raise");
        let mut w = self.lock();
        self.check_raise(&mut w, "irq_raise");
        self.wake(&mut w)
    }
    fn irq_raise_now(&self) {
        sched::point("irq_raise_now");
        let mut w = self.lock();
        assert!(
            w.loaded && w.irqs_off[me()],
            "irq_raise_now outside guest entry"
        );
        self.check_raise(&mut w, "irq_raise_now");
    }
    fn irq_clear(&self) {
        sched::point("irq_clear");
        let mut w = self.lock();
        w.irq = false;
        w.since_clear.clear();
    }
    fn irq_pending(&self) -> bool {
        sched::point("irq_pending");
        let w = self.lock();
        w.irq && w.stie
    }
    fn irq_enabled(&self) -> bool {
        self.lock().stie
    }
    fn load_csrs(&self, _time_delta: u64, compare: Option<u64>) {
        sched::point("load_csrs");
        let mut w = self.lock();
        assert!(w.loaded, "CSRs written while the vCPU is not loaded");
        if let Some(c) = compare {
            w.csr = c;
        }
    }
    fn read_compare(&self) -> u64 {
        self.lock().csr
    }
    fn atomic<R>(&self, f: impl FnOnce() -> R) -> R {
        let was = std::mem::replace(&mut self.lock().preempt_off, true);
        let r = f();
        self.lock().preempt_off = was;
        r
    }
    fn kick(&self) -> Kick {
        sched::point("kick");
        let mut w = self.lock();
        self.wake(&mut w)
    }
    fn is_blocking(&self) -> bool {
        sched::point("is_blocking");
        self.lock().blocking
    }
    fn running_here(&self) -> bool {
        sched::point("running_here");
        let w = self.lock();
        w.loaded && !w.preempted && w.cpu_of(me()) == w.vcpu_cpu
    }
    fn relax(&self) {
        self.lock().now += 1;
    }
    // An early entry with WFI untrapped involves the vCPU thread alone (its
    // pre-entry and the sync after the exit): vcpu_model.rs checks it.
    fn wfi_untrap_ok(&self) -> bool {
        false
    }
    fn set_wfi_trap(&self, _trap: bool) {}
}

impl World for Rv {
    fn enabled(&self, a: usize) -> bool {
        let w = self.lock();
        if !w.present[a] {
            return false;
        }
        if a != TIMER && w.interrupted(a) {
            return false;
        }
        match a {
            TIMER => match w.hr {
                Hr::Queued { cpu, .. } => !w.irqs_off_on(cpu) && w.fires < MAX_FIRES,
                Hr::Running { .. } => true,
                Hr::Idle => false,
            },
            VCPU if w.preempting => false,
            PREEMPT if !w.preempting => {
                !w.preempted
                    && w.preemptible
                    && w.loaded
                    && !w.halted
                    && !w.preempt_off
                    && !w.irqs_off[VCPU]
                    && w.waits[VCPU] == Wait::No
            }
            _ => w.ready(w.waits[a]),
        }
    }

    fn on_store(&self, addr: usize, val: u64) {
        let mut w = self.lock();
        if addr == w.deadline_addr {
            w.since_clear.push(val);
        }
    }

    fn finish(&self) {
        let t = &self.t;
        {
            let w = self.lock();
            if w.halted {
                let should = match w.mode {
                    Mode::Sbi => w.stie && (w.expect.is_some() || w.irq),
                    Mode::Sstc => w.stie && w.guest_deadline != NEVER,
                };
                if should {
                    sched::fail("the halted vCPU is never woken for its deadline");
                }
                return;
            }
            if w.mode == Mode::Sstc && matches!(w.hr, Hr::Queued { .. }) {
                sched::fail("Sstc: a wake timer is left running for a running vCPU");
            }
            if w.mode == Mode::Sbi && matches!(w.hr, Hr::Queued { .. }) && !t.peek_armed() {
                sched::fail("the host timer is left running for a disarmed timer");
            }
        }
        // The next KVM_RUN.
        self.lock().loaded = true;
        t.load(self);
        let (mode, expect) = {
            let w = self.lock();
            (w.mode, w.expect)
        };
        if mode == Mode::Sstc {
            let w = self.lock();
            if w.csr != w.guest_deadline || t.peek_deadline() != w.guest_deadline {
                sched::fail(format!(
                    "Sstc: lost update: vstimecmp {:#x}, deadline {:#x}, the guest's {:#x}",
                    w.csr,
                    t.peek_deadline(),
                    w.guest_deadline
                ));
            }
            return;
        }
        // Let the deadline pass, and the host timer run out.
        if let Some(d) = expect {
            let mut w = self.lock();
            let host = d.wrapping_sub(w.delta);
            w.now = w.now.max(host);
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
        self.set_irqs_off(true);
        t.pre_enter(self);
        self.set_irqs_off(false);
        let w = self.lock();
        if let Some(d) = expect {
            if !w.irq || !w.raised.contains(&d) {
                sched::fail(format!(
                    "the interrupt for deadline {d} is lost (raised: {:?})",
                    w.raised
                ));
            }
        }
        if w.hr != Hr::Idle {
            sched::fail(format!("the host timer never stops: {:?}", w.hr));
        }
        if t.stats().snapshot().early != 0 {
            sched::fail("the statistics count an early interrupt");
        }
    }
}

fn offset(w: &W, rel: Option<i64>) -> u64 {
    rel.map_or(NEVER, |r| w.guest_now().wrapping_add_signed(r))
}

/// The checks between two steps of the vCPU thread (it holds the vCPU
/// mutex, is loaded, and no callback runs).
fn check_between(rv: &Rv, op: Op) {
    let w = rv.lock();
    if matches!(w.hr, Hr::Running { .. }) || !w.loaded || w.mutex != Some(VCPU) {
        return;
    }
    match w.mode {
        Mode::Sbi => {
            if matches!(w.hr, Hr::Queued { .. }) && !rv.t.peek_armed() {
                sched::fail(format!(
                    "after {op:?}: the host timer runs for a disarmed timer"
                ));
            }
        }
        Mode::Sstc => {
            if matches!(w.hr, Hr::Queued { .. }) {
                sched::fail(format!(
                    "after {op:?}: a wake timer runs while the vCPU runs"
                ));
            }
            if w.csr != w.guest_deadline || rv.t.peek_deadline() != w.guest_deadline {
                sched::fail(format!(
                    "after {op:?}: lost update: vstimecmp {:#x}, deadline {:#x}, the guest's {:#x}",
                    w.csr,
                    rv.t.peek_deadline(),
                    w.guest_deadline
                ));
            }
        }
    }
}

/// A preemptible stretch of the vCPU thread.
fn preemptible<R>(rv: &Rv, f: impl FnOnce() -> R) -> R {
    rv.lock().preemptible = true;
    let r = f();
    rv.lock().preemptible = false;
    r
}

fn put(rv: &Rv) {
    rv.set_irqs_off(true);
    rv.t.put(rv);
    rv.set_irqs_off(false);
    let mut w = rv.lock();
    w.loaded = false;
    w.csr = OTHER_CSR;
}

fn load(rv: &Rv) {
    rv.lock().loaded = true;
    rv.t.load(rv);
}

fn acquire(rv: &Rv) {
    let a = me();
    rv.wait(Wait::Mutex);
    rv.lock().mutex = Some(a);
}

fn release(rv: &Rv) {
    rv.lock().mutex = None;
}

fn vcpu_step(rv: &Rv, op: Op) {
    // Between two steps the vCPU runs the guest or handles an exit, both
    // preemptible.
    preemptible(rv, || sched::point(format!("-- {op:?}")));
    match op {
        Op::SetTimer(rel) => {
            let d = {
                let mut w = rv.lock();
                w.raised_since_program.clear();
                offset(&w, rel)
            };
            preemptible(rv, || rv.t.set_timer(rv, d));
            let mut w = rv.lock();
            match w.mode {
                Mode::Sbi => w.expect = (d != NEVER).then_some(d),
                Mode::Sstc => w.guest_deadline = d,
            }
        }
        Op::WriteCsr(rel) => {
            {
                let mut w = rv.lock();
                let d = offset(&w, Some(rel));
                w.csr = d;
                w.guest_deadline = d;
            }
            // The exit: sync() with interrupts off.
            rv.set_irqs_off(true);
            rv.t.sync(rv);
            rv.set_irqs_off(false);
        }
        Op::Run(n) => preemptible(rv, || {
            rv.lock().now += n;
            sched::point("guest runs");
        }),
        Op::PreEnter => {
            rv.set_irqs_off(true);
            rv.t.pre_enter(rv);
            rv.set_irqs_off(false);
            let mut w = rv.lock();
            if w.mode == Mode::Sstc && std::mem::take(&mut w.woken_by_timer) {
                let d = rv.t.peek_deadline();
                if w.guest_now() < d {
                    sched::fail(format!(
                        "a vCPU woken by its timer enters at {} before its deadline {d}",
                        w.guest_now()
                    ));
                }
            }
        }
        Op::Halt { migrate } => {
            rv.lock().blocking = true;
            for _ in 0..3 {
                sched::point("wfi: check_block");
                let pending = preemptible(rv, || rv.t.pending(rv));
                if pending || rv.lock().other_event {
                    break;
                }
                // schedule(): the sched-out notifier, then asleep.
                put(rv);
                rv.lock().halted = true;
                rv.wait(Wait::Wakeup);
                {
                    let mut w = rv.lock();
                    w.halted = false;
                    w.woken = false;
                    if migrate {
                        w.vcpu_cpu ^= 1;
                    }
                }
                load(rv);
            }
            let mut w = rv.lock();
            w.blocking = false;
            w.other_event = false;
        }
        Op::ExitToUser => {
            put(rv);
            release(rv);
            sched::point("in userspace");
            acquire(rv);
            load(rv);
        }
    }
    check_between(rv, op);
}

fn ioctl_step(rv: &Rv, op: Ioctl) {
    sched::point(format!("-- ONE_REG {op:?}"));
    let t = &rv.t;
    match op {
        Ioctl::SetCompare(rel) => {
            let v = offset(&rv.lock(), Some(rel));
            t.set_reg(rv, Reg::Compare, v).unwrap();
            let mut w = rv.lock();
            match w.mode {
                Mode::Sbi if t.peek_armed() || t.peek_fired() == v => w.expect = Some(v),
                Mode::Sbi => {}
                Mode::Sstc => w.guest_deadline = v,
            }
        }
        Ioctl::SetState(v) => {
            t.set_reg(rv, Reg::State, v).unwrap();
            let mut w = rv.lock();
            let d = t.peek_deadline();
            match (w.mode, v) {
                (Mode::Sbi, STATE_ON) if t.peek_armed() || t.peek_fired() == d => {
                    w.expect = Some(d)
                }
                (Mode::Sbi, STATE_OFF) => w.expect = None,
                (Mode::Sstc, STATE_OFF) => w.guest_deadline = NEVER,
                _ => {}
            }
        }
        Ioctl::SetTime(rel) => {
            let v = offset(&rv.lock(), Some(rel));
            t.set_reg(rv, Reg::Time, v).unwrap();
        }
        Ioctl::GetState => {
            let s = t.get_reg(rv, Reg::State);
            assert!(s == STATE_ON || s == STATE_OFF);
        }
    }
}

/// The host timer: whenever it is queued (and its CPU takes interrupts),
/// it may expire; its callback runs to the end before a cancel returns.
fn timer_actor(rv: Arc<Rv>) {
    loop {
        sched::point("hrtimer waits");
        let at = {
            let mut w = rv.lock();
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
        let r = rv.t.expired(&*rv);
        sched::point(format!("callback returns {r:?}"));
        let mut w = rv.lock();
        w.hr = end_run(w.hr, r);
    }
}

/// The actors of `s` on a fresh world.
pub fn setup(s: &Scenario) -> (Arc<Rv>, Vec<Actor>) {
    let rv = Rv::new(s);
    let mut actors: Vec<Actor> = Vec::new();
    let r = rv.clone();
    let script = s.vcpu.clone();
    actors.push((
        "vcpu",
        Box::new(move || {
            for op in script {
                vcpu_step(&r, op);
            }
            // KVM_RUN returns.
            put(&r);
            release(&r);
        }),
    ));
    let r = rv.clone();
    actors.push(("timer", Box::new(move || timer_actor(r))));
    let r = rv.clone();
    let ops = s.ioctl.clone();
    actors.push((
        "ioctl",
        Box::new(move || {
            acquire(&r);
            for op in ops {
                ioctl_step(&r, op);
            }
            release(&r);
        }),
    ));
    let r = rv.clone();
    actors.push((
        "preempt",
        Box::new(move || {
            r.lock().preempting = true;
            sched::point("preempts the vCPU: put");
            put(&r);
            {
                let mut w = r.lock();
                w.vcpu_cpu ^= 1;
            }
            sched::point("the vCPU runs again, on the other CPU: load");
            load(&r);
            let mut w = r.lock();
            w.preempting = false;
            w.preempted = true;
        }),
    ));
    let r = rv.clone();
    actors.push((
        "kick",
        Box::new(move || {
            sched::point("remote kick");
            r.lock().other_event = true;
        }),
    ));
    (rv, actors)
}

/// Explore `s` with at most `bound` preemptions, with `mutation` on.
pub fn explore(s: &Scenario, bound: usize, mutation: Option<&'static str>) -> sched::Report {
    sched::explore(bound, mutation, || setup(s))
}
