// SPDX-License-Identifier: GPL-2.0
//! The arm64 EL1 timers (`rust/timer/el1.rs`) against a simulated host:
//! a counter that runs at 1 GHz (one tick per host ns), the vCPU's saved
//! registers, the hardware timers of the CPU it is loaded on, the vGIC lines
//! and one host timer.  [`Sim::run_guest`] is KVM's VHE world switch
//! (6.12), which with CNTPOFF moves the physical timer's `CVAL` between the
//! saved register and the hardware.

use std::cell::{Cell, RefCell};

use kvm_vtimer_logic::timer::advance::Advance;
use kvm_vtimer_logic::timer::clock::Clock;
use kvm_vtimer_logic::timer::el1::{
    El1Timers, Error, Expiry, Placement, Platform, TimerReg, Which, CTL_ENABLE, CTL_IMASK,
    CTL_ISTATUS,
};
use kvm_vtimer_logic::timer::host_timer::HostClock;
use kvm_vtimer_logic::timer::VcpuLogic;

fn idx(t: Which) -> usize {
    match t {
        Which::Virt => 0,
        Which::Phys => 1,
    }
}

#[derive(Default)]
struct Sim {
    now: Cell<u64>,
    offset: [Cell<u64>; 2],
    fixed: Cell<bool>,
    saved: [Cell<(u64, u64)>; 2],
    /// The hardware timers as loaded: `CTL` and `CVAL` as the hardware
    /// compares them in the host context (the virtual timer's against the
    /// counter less `CNTVOFF`, the physical one's against the raw counter).
    hw: [Cell<Option<(u64, u64)>>; 2],
    /// The CPU has ECV: `CNTPOFF_EL2`, and KVM's world switch uses it.
    cntpoff: Cell<bool>,
    /// `CNTPOFF_EL2`.
    cntpoff_reg: Cell<u64>,
    /// The VM has its irqchip in userspace: no vGIC, the lines go to
    /// userspace in `kvm_run` (`run_lines`) at exits.
    user_irqchip: Cell<bool>,
    /// The vGIC's line level of each timer interrupt.
    line: [Cell<bool>; 2],
    raises: [Cell<u32>; 2],
    /// The guest acknowledged the (mapped) interrupt and has not
    /// deactivated it yet.
    guest_active: [Cell<bool>; 2],
    /// The host's interrupt of each direct timer is active: it does not
    /// interrupt the host again until deactivated.
    active: [Cell<bool>; 2],
    /// The timer lines as userspace was last told (`device_irq_level`).
    run_lines: [Cell<bool>; 2],
    timer: Cell<Option<u64>>,
    /// The CPU the code runs on.
    cpu: Cell<u32>,
    wfit: Cell<Option<u64>>,
    woken: Cell<u32>,
    blocking: Cell<bool>,
    irqs_off: Cell<bool>,
    in_put: Cell<bool>,
    /// The next clock read comes this much later than the counter read
    /// before it: the host CPU stalled in between.
    stall: Cell<u64>,
    /// Busy-wait pauses (`relax`), one tick each.
    spins: Cell<u64>,
    log: RefCell<Vec<String>>,
}

impl Sim {
    fn guest_now(&self, t: Which) -> u64 {
        self.now.get().wrapping_sub(self.offset[idx(t)].get())
    }

    fn line(&self, t: Which) -> bool {
        self.line[idx(t)].get()
    }

    fn raises(&self, t: Which) -> u32 {
        self.raises[idx(t)].get()
    }

    /// The guest's `CTL` and `CVAL` of `t`, wherever they are, by KVM's
    /// rule: while loaded, a physical timer with an offset has its `CVAL`
    /// in the saved register (the world switch and the trap handler keep it
    /// there), else in the hardware.
    fn guest_regs(&self, t: Which) -> (u64, u64) {
        match self.hw[idx(t)].get() {
            None => self.saved[idx(t)].get(),
            Some((ctl, _)) if t == Which::Phys && self.offset(t) != 0 => {
                (ctl, self.saved[idx(t)].get().1)
            }
            Some(regs) => regs,
        }
    }

    /// The vCPU enters the guest, which runs `guest`, and exits: KVM's VHE
    /// `__activate_traps()` and `__deactivate_traps()` around it.  With
    /// CNTPOFF the physical timer's hardware `CVAL` is the guest's while it
    /// runs.
    fn run_guest(&self, guest: impl FnOnce(&Sim)) {
        let p = idx(Which::Phys);
        let ecv = self.cntpoff.get() && self.hw[p].get().is_some();
        if ecv {
            let (ctl, _) = self.hw[p].get().unwrap();
            self.hw[p].set(Some((ctl, self.saved[p].get().1)));
        }
        guest(self);
        if ecv {
            let (ctl, cval) = self.hw[p].get().unwrap();
            self.set_cval(Which::Phys, cval);
            let off = self.cntpoff_reg.get();
            if off != 0 {
                self.hw[p].set(Some((ctl, kvm_apply_offset(cval, off, self.now.get()))));
            }
        }
    }

    /// Whether loaded direct timer `t` asserts its interrupt output.
    fn hw_output(&self, t: Which) -> bool {
        self.hw[idx(t)].get().is_some() && {
            let ctl = self.hw_ctl(t);
            ctl & (CTL_ENABLE | CTL_IMASK | CTL_ISTATUS) == CTL_ENABLE | CTL_ISTATUS
        }
    }

    /// The host takes the interrupt of every loaded direct timer that
    /// asserts it, as the GIC does: not while the interrupt is active.
    /// Taking it makes it active.  Returns how many it took.
    fn take_host_irqs(&self, timers: &El1Timers) -> u32 {
        let mut n = 0;
        for t in Which::ALL {
            if self.hw_output(t) && !self.active[idx(t)].get() {
                self.active[idx(t)].set(true);
                timers.host_irq(self, t);
                n += 1;
            }
        }
        n
    }

    /// The guest acknowledges `t`'s pending interrupt.
    fn guest_ack(&self, t: Which) {
        assert!(self.line(t), "acknowledging a low line");
        self.guest_active[idx(t)].set(true);
    }

    /// The guest deactivates `t`'s mapped interrupt: the hardware
    /// deactivates the host's (a mapped interrupt's LR has the HW bit),
    /// then the vGIC resamples the line (`vgic_irq_handle_resampling()`).
    fn guest_deactivate(&self, timers: &El1Timers, t: Which) {
        self.guest_active[idx(t)].set(false);
        self.active[idx(t)].set(false);
        if self.line(t) {
            self.line[idx(t)].set(timers.input_level(self, t));
        }
    }

    /// A guest exit with a userspace irqchip, as KVM's run loop has it:
    /// `sync_user`, then, if the lines differ from what userspace was
    /// told, an exit to userspace with the new lines.  Whether it exits.
    fn exit_to_user(&self, timers: &El1Timers) -> bool {
        timers.sync_user(self);
        let lines = timers.user_lines(self);
        let told = [self.run_lines[0].get(), self.run_lines[1].get()];
        if lines == told {
            return false;
        }
        self.run_lines[0].set(lines[0]);
        self.run_lines[1].set(lines[1]);
        true
    }

    /// The running guest programs its timer `t` without a trap: the
    /// virtual one, or the physical one with CNTPOFF or with no offset.
    fn guest_program(&self, t: Which, ctl: u64, cval: u64) {
        assert!(
            t == Which::Virt || self.cntpoff.get() || self.offset(t) == 0,
            "this access traps"
        );
        assert!(self.hw[idx(t)].get().is_some(), "timer not loaded");
        self.hw[idx(t)].set(Some((ctl, cval)));
    }
}

/// KVM's `timer_apply_offset()` (6.12), for the simulated world switch.
fn kvm_apply_offset(cval: u64, offset: u64, now: u64) -> u64 {
    if now.wrapping_sub(offset) >= cval {
        0
    } else if cval.wrapping_add(offset) > now {
        cval.wrapping_add(offset)
    } else {
        u64::MAX
    }
}

impl HostClock for Sim {
    fn host_ns(&self) -> u64 {
        self.now.set(self.now.get() + self.stall.take());
        self.now.get()
    }
    fn timer_start(&self, expires_ns: u64) {
        self.timer.set(Some(expires_ns))
    }
    fn timer_cancel(&self) -> bool {
        self.timer.take().is_some()
    }
    fn cpu(&self) -> u32 {
        self.cpu.get()
    }
}

impl Platform for Sim {
    fn counter(&self) -> u64 {
        self.now.get()
    }
    fn offset(&self, t: Which) -> u64 {
        self.offset[idx(t)].get()
    }
    fn set_offset(&self, t: Which, offset: u64) {
        self.offset[idx(t)].set(offset)
    }
    fn offset_fixed(&self) -> bool {
        self.fixed.get()
    }
    fn ctl(&self, t: Which) -> u64 {
        self.saved[idx(t)].get().0
    }
    fn cval(&self, t: Which) -> u64 {
        self.saved[idx(t)].get().1
    }
    fn set_ctl(&self, t: Which, ctl: u64) {
        let (_, cval) = self.saved[idx(t)].get();
        self.saved[idx(t)].set((ctl, cval));
    }
    fn set_cval(&self, t: Which, cval: u64) {
        let (ctl, _) = self.saved[idx(t)].get();
        self.saved[idx(t)].set((ctl, cval));
    }
    fn cntpoff(&self) -> bool {
        self.cntpoff.get()
    }
    fn hw_load(&self, t: Which, offset: u64, ctl: u64, cval: u64) {
        assert!(self.irqs_off.get(), "hardware loaded with interrupts on");
        assert_eq!(offset, self.offset(t));
        if t == Which::Phys && self.cntpoff.get() {
            self.cntpoff_reg.set(offset);
        }
        self.hw[idx(t)].set(Some((ctl, cval)));
    }
    fn hw_save(&self, t: Which) -> (u64, u64) {
        assert!(self.irqs_off.get(), "hardware saved with interrupts on");
        if t == Which::Phys {
            self.cntpoff_reg.set(0);
        }
        let (ctl, cval) = self.hw[idx(t)].take().expect("saving an unloaded timer");
        (ctl, cval)
    }
    fn hw_cval(&self, t: Which) -> u64 {
        self.hw[idx(t)].get().expect("reading an unloaded timer").1
    }
    fn hw_ctl(&self, t: Which) -> u64 {
        let (ctl, cval) = self.hw[idx(t)].get().expect("reading an unloaded timer");
        // The host context: the physical timer against the raw counter.
        let now = match t {
            Which::Virt => self.guest_now(t),
            Which::Phys => self.now.get(),
        };
        if cval <= now {
            ctl | CTL_ISTATUS
        } else {
            ctl
        }
    }
    fn set_traps(&self) {}
    fn irqchip_in_kernel(&self) -> bool {
        !self.user_irqchip.get()
    }
    fn irq_line(&self, t: Which, level: bool) {
        if self.user_irqchip.get() {
            // No vGIC: the shim drops it.
            return;
        }
        assert!(
            !self.in_put.get(),
            "a line driven from put (a wakeup in the scheduler)"
        );
        if level && !self.line[idx(t)].get() {
            self.raises[idx(t)].set(self.raises[idx(t)].get() + 1);
            // A raise must never come before the deadline.
            let (ctl, cval) = self.guest_regs(t);
            assert!(
                ctl & CTL_ENABLE != 0 && ctl & CTL_IMASK == 0,
                "raised a disabled timer"
            );
            assert!(cval <= self.guest_now(t), "raised before the deadline");
        }
        self.line[idx(t)].set(level);
    }
    fn irq_map_active(&self, t: Which) -> bool {
        assert!(!self.user_irqchip.get(), "no vGIC");
        self.guest_active[idx(t)].get()
    }
    fn host_irq_set_active(&self, t: Which, active: bool) {
        self.active[idx(t)].set(active)
    }
    fn irq_map_reset(&self, t: Which) {
        self.line[idx(t)].set(false);
        self.guest_active[idx(t)].set(false);
    }
    fn irq_setup(&self, direct: &[Which]) -> Result<(), Error> {
        self.log.borrow_mut().push(format!("setup {direct:?}"));
        Ok(())
    }
    fn wfit_deadline(&self) -> Option<u64> {
        self.wfit.get()
    }
    fn wake(&self) {
        self.woken.set(self.woken.get() + 1)
    }
    fn is_blocking(&self) -> bool {
        self.blocking.get()
    }
    fn atomic<R>(&self, f: impl FnOnce() -> R) -> R {
        let was = self.irqs_off.replace(true);
        let r = f();
        self.irqs_off.set(was);
        r
    }
    fn relax(&self) {
        self.now.set(self.now.get() + 1);
        self.spins.set(self.spins.get() + 1);
    }
}

fn timers(phys: Placement) -> (Sim, El1Timers) {
    timers_with(phys, false)
}

/// Timers of a VM whose irqchip is in userspace (`KVM_CREATE_IRQCHIP` not
/// called): no vGIC.
fn user_timers(phys: Placement) -> (Sim, El1Timers) {
    timers_with(phys, true)
}

fn timers_with(phys: Placement, user_irqchip: bool) -> (Sim, El1Timers) {
    timers_adv(phys, user_irqchip, Advance::off())
}

fn timers_adv(phys: Placement, user_irqchip: bool, advance: Advance) -> (Sim, El1Timers) {
    let sim = Sim::default();
    sim.now.set(1_000_000);
    sim.user_irqchip.set(user_irqchip);
    let t = El1Timers::new(Clock::new(1_000_000_000).unwrap(), phys, advance);
    t.enable(&sim).unwrap();
    (sim, t)
}

/// Run the host timer as the hrtimer core would, until it stops.
fn run_host_timer(sim: &Sim, t: &El1Timers) {
    while let Some(at) = sim.timer.get() {
        sim.now.set(sim.now.get().max(at));
        match t.expired(sim) {
            Expiry::Done => sim.timer.set(None),
            Expiry::Again(ns) => {
                assert!(ns > at, "re-armed without progress");
                sim.timer.set(Some(ns));
            }
        }
    }
}

/// Put, as the scheduler's sched-out runs it: no line may change there.
fn put(sim: &Sim, t: &El1Timers) {
    sim.in_put.set(true);
    t.put(sim);
    sim.in_put.set(false);
}

#[test]
fn first_run_maps_only_direct_timers() {
    let (sim, _) = timers(Placement::Direct);
    let (sim2, _) = timers(Placement::Emulated);
    assert_eq!(sim.log.borrow().as_slice(), ["setup [Virt, Phys]"]);
    assert_eq!(sim2.log.borrow().as_slice(), ["setup [Virt]"]);
}

#[test]
fn blocked_vcpu_wakes_at_the_earliest_deadline_once() {
    for phys in [Placement::Direct, Placement::Emulated] {
        let (sim, t) = timers(phys);
        t.load(&sim);
        let now = sim.guest_now(Which::Virt);
        t.guest_write(&sim, Which::Virt, TimerReg::Cval, now + 5000);
        t.guest_write(&sim, Which::Virt, TimerReg::Ctl, CTL_ENABLE);
        t.guest_write(&sim, Which::Phys, TimerReg::Tval, 3000);
        t.guest_write(&sim, Which::Phys, TimerReg::Ctl, CTL_ENABLE);
        sim.blocking.set(true);
        put(&sim, &t);
        // The physical timer is earlier: the host timer is at its deadline.
        assert_eq!(sim.timer.get(), Some(sim.now.get() + 3000));
        // The host clock fires a little early: the callback waits again.
        sim.now.set(sim.now.get() + 2999);
        assert_eq!(t.expired(&sim), Expiry::Again(sim.now.get() + 1));
        run_host_timer(&sim, &t);
        assert!(sim.line(Which::Phys));
        assert_eq!((sim.raises(Which::Phys), sim.raises(Which::Virt)), (1, 0));
        // The vCPU wakes and loads: the virtual timer is not due yet.
        sim.blocking.set(false);
        t.load(&sim);
        assert!(!sim.line(Which::Virt));
        assert_eq!(sim.raises(Which::Phys), 1);
    }
}

#[test]
fn masked_or_disabled_timers_arm_nothing() {
    let (sim, t) = timers(Placement::Direct);
    t.load(&sim);
    t.guest_write(&sim, Which::Virt, TimerReg::Tval, 10);
    t.guest_write(&sim, Which::Virt, TimerReg::Ctl, CTL_ENABLE | CTL_IMASK);
    sim.blocking.set(true);
    put(&sim, &t);
    assert_eq!(sim.timer.get(), None);
    sim.now.set(sim.now.get() + 100);
    t.load(&sim);
    assert_eq!(sim.raises(Which::Virt), 0);
}

#[test]
fn emulated_timer_fires_while_loaded_and_follows_the_vcpu() {
    let (sim, t) = timers(Placement::Emulated);
    t.load(&sim);
    t.guest_write(&sim, Which::Phys, TimerReg::Tval, 700);
    t.guest_write(&sim, Which::Phys, TimerReg::Ctl, CTL_ENABLE);
    assert_eq!(sim.timer.get(), Some(sim.now.get() + 700));
    // Put (preempted, not blocking): the host timer is cancelled...
    put(&sim, &t);
    assert_eq!(sim.timer.get(), None);
    // ...and re-armed at the next load.
    t.load(&sim);
    assert_eq!(sim.timer.get().is_some(), true);
    run_host_timer(&sim, &t);
    assert_eq!(sim.raises(Which::Phys), 1);
    // Reading CTL shows ISTATUS; TVAL counts down past zero.
    assert_eq!(
        t.read(&sim, Which::Phys, TimerReg::Ctl),
        CTL_ENABLE | CTL_ISTATUS
    );
    sim.now.set(sim.now.get() + 5);
    assert_eq!(
        t.read(&sim, Which::Phys, TimerReg::Tval),
        u64::from((-5i32) as u32)
    );
    // Disabling lowers the line.
    t.guest_write(&sim, Which::Phys, TimerReg::Ctl, 0);
    assert!(!sim.line(Which::Phys));
}

#[test]
fn a_host_stall_does_not_delay_the_emulated_timer() {
    // The host CPU stalls between reading the counter and the clock (an
    // interrupt, or the nested host's vCPU descheduled): the host timer
    // must still be at the deadline, not the stall later.
    let (sim, t) = timers(Placement::Emulated);
    t.load(&sim);
    let deadline = sim.guest_now(Which::Phys) + 700_000;
    t.guest_write(&sim, Which::Phys, TimerReg::Cval, deadline);
    sim.stall.set(300_000);
    t.guest_write(&sim, Which::Phys, TimerReg::Ctl, CTL_ENABLE);
    let host = |guest: u64| guest + sim.offset[idx(Which::Phys)].get();
    assert_eq!(sim.timer.get(), Some(host(deadline)));
    // At load, after a preemption.
    put(&sim, &t);
    sim.stall.set(200_000);
    t.load(&sim);
    assert_eq!(sim.timer.get(), Some(host(deadline)));
    // And when the vCPU blocks.
    sim.blocking.set(true);
    sim.stall.set(100_000);
    put(&sim, &t);
    assert_eq!(sim.timer.get(), Some(host(deadline)));
    run_host_timer(&sim, &t);
    assert_eq!(sim.raises(Which::Phys), 1);
    assert_eq!(sim.now.get(), host(deadline));
}

#[test]
fn load_raises_a_deadline_passed_while_put() {
    let (sim, t) = timers(Placement::Direct);
    t.load(&sim);
    t.guest_write(&sim, Which::Virt, TimerReg::Tval, 100);
    t.guest_write(&sim, Which::Virt, TimerReg::Ctl, CTL_ENABLE);
    put(&sim, &t);
    sim.now.set(sim.now.get() + 100);
    t.load(&sim);
    assert!(sim.line(Which::Virt));
    // The host's interrupt stays active while the guest has the line.
    assert!(sim.active[0].get());
    // The loaded hardware raises nothing new: the host interrupt handler
    // keeps the line up, the count of rising edges stays 1.
    t.host_irq(&sim, Which::Virt);
    assert_eq!(sim.raises(Which::Virt), 1);
}

#[test]
fn one_reg_restore_of_an_armed_timer_and_offset_changes() {
    let (sim, t) = timers(Placement::Direct);
    // Userspace restores an armed virtual timer (vCPU not loaded).
    t.user_write(&sim, Which::Virt, TimerReg::Cnt, 10_000)
        .unwrap();
    assert_eq!(t.read(&sim, Which::Virt, TimerReg::Cnt), 10_000);
    t.user_write(&sim, Which::Virt, TimerReg::Cval, 12_000)
        .unwrap();
    t.user_write(&sim, Which::Virt, TimerReg::Ctl, CTL_ENABLE | CTL_ISTATUS)
        .unwrap();
    assert_eq!(t.read(&sim, Which::Virt, TimerReg::Ctl), CTL_ENABLE);
    t.load(&sim);
    assert!(!sim.line(Which::Virt));
    put(&sim, &t);
    // The counter jumps past the deadline: raised at the next load.
    t.user_write(&sim, Which::Virt, TimerReg::Cnt, 12_500)
        .unwrap();
    t.load(&sim);
    assert!(sim.line(Which::Virt));
    put(&sim, &t);
    // With the VM's offset fixed by the ioctl, counter writes are ignored.
    sim.fixed.set(true);
    t.user_write(&sim, Which::Virt, TimerReg::Cnt, 1).unwrap();
    assert!(t.read(&sim, Which::Virt, TimerReg::Cnt) >= 12_500);
    // RES0 bits of CTL are refused; TVAL is no ONE_REG register.
    assert_eq!(
        t.user_write(&sim, Which::Phys, TimerReg::Ctl, 8),
        Err(Error::Invalid)
    );
    assert_eq!(
        t.user_write(&sim, Which::Phys, TimerReg::Tval, 8),
        Err(Error::Invalid)
    );
    assert_eq!(t.read(&sim, Which::Phys, TimerReg::Ctl) & CTL_ENABLE, 0);
}

#[test]
fn blocking_with_a_due_timer_raises_from_the_host_timer_only() {
    for phys in [Placement::Direct, Placement::Emulated] {
        let (sim, t) = timers(phys);
        t.load(&sim);
        t.guest_write(&sim, Which::Phys, TimerReg::Tval, 50);
        t.guest_write(&sim, Which::Phys, TimerReg::Ctl, CTL_ENABLE);
        // The deadline passes with the host timer's interrupt not yet taken.
        sim.now.set(sim.now.get() + 60);
        sim.blocking.set(true);
        put(&sim, &t);
        assert!(!sim.line(Which::Phys));
        assert_eq!(sim.timer.get(), Some(sim.now.get()));
        run_host_timer(&sim, &t);
        assert_eq!(sim.raises(Which::Phys), 1);
    }
}

#[test]
fn wfit_wakes_without_a_timer() {
    let (sim, t) = timers(Placement::Direct);
    t.load(&sim);
    sim.wfit.set(Some(sim.guest_now(Which::Virt) + 400));
    assert!(!t.pending(&sim));
    sim.blocking.set(true);
    put(&sim, &t);
    run_host_timer(&sim, &t);
    assert_eq!(sim.woken.get(), 1);
    assert!(t.pending(&sim));
}

#[test]
fn reset_disables_and_lowers() {
    let (sim, t) = timers(Placement::Emulated);
    t.load(&sim);
    t.guest_write(&sim, Which::Phys, TimerReg::Tval, 0);
    t.guest_write(&sim, Which::Phys, TimerReg::Ctl, CTL_ENABLE);
    assert!(sim.line(Which::Phys));
    put(&sim, &t);
    t.reset(&sim);
    assert!(!sim.line(Which::Phys));
    assert_eq!(sim.ctl(Which::Phys), 0);
    assert_eq!(sim.timer.get(), None);
}

/// The physical offsets the world-switch tests run with: CNTPOFF with and
/// without an offset, no CNTPOFF with an offset (every access traps) and
/// without (the guest programs the hardware).
const PHYS_SETUPS: [(bool, u64); 4] = [(true, 250_000), (true, 0), (false, 250_000), (false, 0)];

fn direct_phys(cntpoff: bool, offset: u64) -> (Sim, El1Timers) {
    let (sim, t) = timers(Placement::Direct);
    sim.cntpoff.set(cntpoff);
    sim.offset[idx(Which::Phys)].set(offset);
    (sim, t)
}

/// The guest programs its physical timer, as it can on that host.
fn guest_phys(sim: &Sim, t: &El1Timers, ctl: u64, cval: u64) {
    if sim.cntpoff.get() || sim.offset(Which::Phys) == 0 {
        sim.run_guest(|s| s.guest_program(Which::Phys, ctl, cval));
    } else {
        t.guest_write(sim, Which::Phys, TimerReg::Cval, cval);
        t.guest_write(sim, Which::Phys, TimerReg::Ctl, ctl);
        sim.run_guest(|_| {});
    }
}

#[test]
fn a_put_while_the_physical_timer_is_due_keeps_the_guests_cval() {
    for (cntpoff, offset) in PHYS_SETUPS {
        for mask in [0, CTL_IMASK] {
            let what = format!("cntpoff {cntpoff} offset {offset} mask {mask}");
            let (sim, t) = direct_phys(cntpoff, offset);
            t.load(&sim);
            let cval = sim.guest_now(Which::Phys) - 10;
            guest_phys(&sim, &t, CTL_ENABLE | mask, cval);
            if cntpoff && offset != 0 {
                // What the world switch left for the host context.
                assert_eq!(sim.hw[1].get().unwrap().1, 0, "{what}");
            }
            // The host interrupt comes while the vCPU is loaded.
            t.host_irq(&sim, Which::Phys);
            assert_eq!(sim.line(Which::Phys), mask == 0, "{what}");
            put(&sim, &t);
            // Userspace reads the guest's CVAL (ONE_REG), and ISTATUS.
            assert_eq!(t.read(&sim, Which::Phys, TimerReg::Cval), cval, "{what}");
            assert_eq!(sim.cval(Which::Phys), cval, "{what}");
            assert_eq!(
                t.read(&sim, Which::Phys, TimerReg::Ctl),
                CTL_ENABLE | mask | CTL_ISTATUS,
                "{what}"
            );
            // Re-entry: still pending if unmasked; the guest reads its CVAL.
            sim.now.set(sim.now.get() + 1_000);
            t.load(&sim);
            assert_eq!(sim.line(Which::Phys), mask == 0, "{what}");
            sim.run_guest(|s| {
                if cntpoff || offset == 0 {
                    assert_eq!(s.hw[1].get().unwrap().1, cval, "{what}");
                }
            });
            assert_eq!(t.read(&sim, Which::Phys, TimerReg::Cval), cval, "{what}");
            assert_eq!(sim.raises(Which::Phys), u32::from(mask == 0), "{what}");
        }
    }
}

#[test]
fn a_compare_value_whose_sum_wraps_never_fires() {
    // The guest's counter is behind the host's (a positive offset), and
    // the guest's CVAL is so far ahead that CVAL + offset wraps.
    for (cntpoff, offset) in PHYS_SETUPS {
        if offset == 0 {
            continue;
        }
        let what = format!("cntpoff {cntpoff}");
        let (sim, t) = direct_phys(cntpoff, offset);
        t.load(&sim);
        let cval = u64::MAX - 5;
        guest_phys(&sim, &t, CTL_ENABLE, cval);
        assert_eq!(sim.hw[1].get().unwrap().1, u64::MAX, "{what}");
        // The host interrupt of the other timer, say: nothing to raise.
        t.host_irq(&sim, Which::Phys);
        assert!(!t.should_fire(&sim, Which::Phys), "{what}");
        put(&sim, &t);
        assert_eq!(sim.cval(Which::Phys), cval, "{what}");
        // Loaded again (the load writes the hardware from the host): the
        // hardware never fires, the host interrupt raises nothing.
        t.load(&sim);
        assert_eq!(sim.hw[1].get().unwrap().1, u64::MAX, "{what}");
        assert_eq!(sim.hw_ctl(Which::Phys) & CTL_ISTATUS, 0, "{what}");
        t.host_irq(&sim, Which::Phys);
        // Blocked: the host timer is far away, if armed at all.
        sim.blocking.set(true);
        put(&sim, &t);
        assert!(
            sim.timer
                .get()
                .is_none_or(|at| at > sim.now.get() + (1 << 40)),
            "{what}"
        );
        assert_eq!(sim.raises(Which::Phys), 0, "{what}");
    }
}

#[test]
fn a_cval_moved_ahead_while_the_line_is_up_drops_it_and_fires_again() {
    // Direct physical timer: the guest moves CVAL without a trap (or with
    // one, on a host without CNTPOFF and with an offset); the vGIC
    // resamples the line on the next exit.
    for (cntpoff, offset) in PHYS_SETUPS {
        let what = format!("cntpoff {cntpoff} offset {offset}");
        let (sim, t) = direct_phys(cntpoff, offset);
        t.load(&sim);
        let due = sim.guest_now(Which::Phys);
        guest_phys(&sim, &t, CTL_ENABLE, due);
        t.host_irq(&sim, Which::Phys);
        assert!(sim.line(Which::Phys), "{what}");
        let later = sim.guest_now(Which::Phys) + 5_000;
        guest_phys(&sim, &t, CTL_ENABLE, later);
        // The guest deactivates the interrupt: the vGIC resamples the
        // mapped line and takes the level the backend returns.
        sim.guest_ack(Which::Phys);
        sim.guest_deactivate(&t, Which::Phys);
        assert!(!sim.line(Which::Phys), "{what}");
        sim.now.set(sim.now.get() + 4_999);
        t.host_irq(&sim, Which::Phys);
        assert_eq!(sim.raises(Which::Phys), 1, "{what}");
        sim.now.set(sim.now.get() + 1);
        t.host_irq(&sim, Which::Phys);
        assert_eq!(sim.raises(Which::Phys), 2, "{what}");
    }
    // Emulated physical timer (nVHE): every access traps; the write that
    // drops the line must also watch the new deadline (upstream 6.14,
    // b450dcce93bc, for KVM's own timer).
    let (sim, t) = timers(Placement::Emulated);
    t.load(&sim);
    t.guest_write(&sim, Which::Phys, TimerReg::Tval, 0);
    t.guest_write(&sim, Which::Phys, TimerReg::Ctl, CTL_ENABLE);
    assert!(sim.line(Which::Phys));
    t.guest_write(&sim, Which::Phys, TimerReg::Tval, 5_000);
    assert!(!sim.line(Which::Phys));
    assert_eq!(sim.timer.get(), Some(sim.now.get() + 5_000));
    run_host_timer(&sim, &t);
    assert_eq!(sim.raises(Which::Phys), 2);
}

#[test]
fn input_level_reads_the_line_and_changes_nothing() {
    // The vGIC asks the vCPU that runs on this CPU for the level of a
    // mapped timer line: when its guest deactivates the interrupt, and when
    // the guest reads a redistributor's pending bits, also another vCPU's
    // (the PPI has the same number there).  The answer is this vCPU's line;
    // asking must not change this vCPU's state.
    let (sim, t) = timers(Placement::Direct);
    t.load(&sim);
    let due = sim.guest_now(Which::Virt);
    sim.guest_program(Which::Virt, CTL_ENABLE, due);
    assert_eq!(sim.take_host_irqs(&t), 1);
    assert!(sim.line(Which::Virt) && t.level(Which::Virt));
    sim.guest_ack(Which::Virt);
    // Its handler masks the timer, then reads vCPU 1's pending bits before
    // it deactivates its own interrupt.
    sim.guest_program(Which::Virt, CTL_ENABLE | CTL_IMASK, due);
    let state = |t: &El1Timers| {
        (
            t.level(Which::Virt),
            t.level(Which::Phys),
            t.stats().snapshot(),
        )
    };
    let before = state(&t);
    for _ in 0..2 {
        assert!(!t.input_level(&sim, Which::Virt));
        assert!(!t.input_level(&sim, Which::Phys));
    }
    assert_eq!(state(&t), before, "input_level changed the vCPU's state");
    // The deactivation: the vGIC lowers its line on resample.
    sim.guest_deactivate(&t, Which::Virt);
    assert!(!sim.line(Which::Virt));
    assert!(!sim.active[0].get());
    // The next deadline comes while the vCPU blocks: a new delivery,
    // counted once.
    sim.guest_program(Which::Virt, CTL_ENABLE, sim.guest_now(Which::Virt) + 1_000);
    sim.blocking.set(true);
    put(&sim, &t);
    run_host_timer(&sim, &t);
    assert!(sim.line(Which::Virt));
    assert_eq!(sim.raises(Which::Virt), 2);
    assert_eq!(t.stats().snapshot().irqs, 2);
}

#[test]
fn every_host_interrupt_of_a_running_vcpu_is_counted() {
    // A vCPU that never leaves the guest: each expiry interrupts the host
    // once the guest deactivated the one before.
    let (sim, t) = timers(Placement::Direct);
    t.load(&sim);
    for n in 1..=3 {
        let cval = sim.guest_now(Which::Virt) + 100;
        sim.guest_program(Which::Virt, CTL_ENABLE, cval);
        assert_eq!(sim.take_host_irqs(&t), 0, "fired early");
        sim.now.set(sim.now.get() + 100);
        assert_eq!(sim.take_host_irqs(&t), 1);
        assert_eq!(sim.take_host_irqs(&t), 0, "the active interrupt came again");
        sim.guest_ack(Which::Virt);
        sim.guest_program(Which::Virt, CTL_ENABLE | CTL_IMASK, cval);
        sim.guest_deactivate(&t, Which::Virt);
        assert_eq!(sim.raises(Which::Virt), n);
        assert_eq!(t.stats().snapshot().irqs, u64::from(n));
    }
}

#[test]
fn load_keeps_the_host_interrupt_active_while_the_guest_has_it() {
    // Put while the guest handles the interrupt (acknowledged, not yet
    // deactivated) and has already masked the timer: at the next load the
    // host's interrupt stays active, or it would interrupt the host for
    // what the guest is handling.
    let (sim, t) = timers(Placement::Direct);
    t.load(&sim);
    let due = sim.guest_now(Which::Virt);
    sim.guest_program(Which::Virt, CTL_ENABLE, due);
    sim.take_host_irqs(&t);
    sim.guest_ack(Which::Virt);
    sim.guest_program(Which::Virt, CTL_ENABLE | CTL_IMASK, due);
    put(&sim, &t);
    t.load(&sim);
    assert!(
        sim.active[0].get(),
        "host interrupt inactive under an active guest one"
    );
    // The guest deactivates it: the host's goes with it (HW bit).
    sim.guest_deactivate(&t, Which::Virt);
    assert!(!sim.active[0].get());
    assert!(!sim.line(Which::Virt));
    put(&sim, &t);
    t.load(&sim);
    assert!(!sim.active[0].get());
}

#[test]
fn userspace_irqchip_lines_go_to_userspace_at_exits() {
    let (sim, t) = user_timers(Placement::Direct);
    assert!(sim.log.borrow().is_empty(), "a vGIC set up without one");
    t.load(&sim);
    let due = sim.guest_now(Which::Virt) + 100;
    sim.guest_program(Which::Virt, CTL_ENABLE, due);
    assert!(!sim.exit_to_user(&t));
    sim.now.set(sim.now.get() + 100);
    assert_eq!(sim.take_host_irqs(&t), 1);
    assert!(!sim.line(Which::Virt), "a vGIC line without a vGIC");
    assert!(sim.exit_to_user(&t), "userspace not told of the expiry");
    assert!(sim.run_lines[0].get());
    // The host's interrupt stays active while the line is up: the guest
    // runs on without exits for it.
    assert_eq!(sim.take_host_irqs(&t), 0);
    assert!(!sim.exit_to_user(&t));
    // The guest handles the interrupt that userspace injected: it masks
    // the timer.  At the next exit `sync_user` drops the line and
    // re-enables the host's interrupt for the next deadline.
    sim.guest_program(Which::Virt, CTL_ENABLE | CTL_IMASK, due);
    assert!(sim.exit_to_user(&t));
    assert!(!sim.run_lines[0].get());
    assert!(
        !sim.active[0].get(),
        "sync_user left the host interrupt masked"
    );
    sim.guest_program(Which::Virt, CTL_ENABLE, sim.guest_now(Which::Virt) + 50);
    sim.now.set(sim.now.get() + 50);
    assert_eq!(sim.take_host_irqs(&t), 1, "the next expiry is lost");
    assert!(sim.exit_to_user(&t));
    assert_eq!(t.stats().snapshot().irqs, 2);

    // The emulated physical timer (nVHE): its host timer raises the line.
    let (sim, t) = user_timers(Placement::Emulated);
    t.load(&sim);
    t.guest_write(&sim, Which::Phys, TimerReg::Tval, 300);
    t.guest_write(&sim, Which::Phys, TimerReg::Ctl, CTL_ENABLE);
    run_host_timer(&sim, &t);
    assert!(sim.exit_to_user(&t));
    assert_eq!(
        [sim.run_lines[0].get(), sim.run_lines[1].get()],
        [false, true]
    );
    t.guest_write(&sim, Which::Phys, TimerReg::Ctl, 0);
    assert!(sim.exit_to_user(&t));
    assert!(!sim.run_lines[1].get());
}

#[test]
fn userspace_irqchip_wakes_a_blocked_vcpu_at_its_deadline() {
    // Without a vGIC nothing else wakes the vCPU: KVM's check then finds
    // lines to tell userspace (kvm_arch_vcpu_runnable()) and it exits.
    for phys in [Placement::Direct, Placement::Emulated] {
        let (sim, t) = user_timers(phys);
        t.load(&sim);
        t.guest_write(&sim, Which::Phys, TimerReg::Tval, 300);
        t.guest_write(&sim, Which::Phys, TimerReg::Ctl, CTL_ENABLE);
        sim.blocking.set(true);
        put(&sim, &t);
        assert_eq!(t.user_lines(&sim), [false, false]);
        run_host_timer(&sim, &t);
        assert_eq!(sim.woken.get(), 1, "{phys:?}: the blocked vCPU sleeps on");
        assert_eq!(t.user_lines(&sim), [false, true], "{phys:?}");
    }
}

#[test]
fn counter_offsets_of_both_timers() {
    // Each timer counts its own counter: the host's less the VM's offset
    // of it.  ONE_REG counter writes set the offsets (the vCPU is not
    // loaded); the virtual counter goes back, the physical one ahead.
    for phys in [Placement::Direct, Placement::Emulated] {
        let (sim, t) = timers(phys);
        let host = sim.now.get();
        t.user_write(&sim, Which::Virt, TimerReg::Cnt, 50_000)
            .unwrap();
        t.user_write(&sim, Which::Phys, TimerReg::Cnt, host + 2_000_000)
            .unwrap();
        assert_eq!(sim.offset(Which::Virt), host - 50_000);
        assert_eq!(sim.offset(Which::Phys), 2_000_000u64.wrapping_neg());
        assert_eq!(t.read(&sim, Which::Virt, TimerReg::Cnt), 50_000);
        assert_eq!(t.read(&sim, Which::Phys, TimerReg::Cnt), host + 2_000_000);
        // Deadlines 700 and 300 ahead, each in its own counter.
        t.user_write(&sim, Which::Virt, TimerReg::Cval, 50_700)
            .unwrap();
        t.user_write(&sim, Which::Virt, TimerReg::Ctl, CTL_ENABLE)
            .unwrap();
        t.user_write(&sim, Which::Phys, TimerReg::Cval, host + 2_000_300)
            .unwrap();
        t.user_write(&sim, Which::Phys, TimerReg::Ctl, CTL_ENABLE)
            .unwrap();
        // hw_load checks that the hardware gets each timer's offset.
        t.load(&sim);
        assert_eq!(t.read(&sim, Which::Virt, TimerReg::Tval), 700);
        assert_eq!(t.read(&sim, Which::Phys, TimerReg::Tval), 300);
        sim.blocking.set(true);
        put(&sim, &t);
        assert_eq!(sim.timer.get(), Some(host + 300), "{phys:?}");
        run_host_timer(&sim, &t);
        assert_eq!((sim.raises(Which::Phys), sim.raises(Which::Virt)), (1, 0));
        // The guest turns the physical timer off and blocks again: the
        // virtual one wakes it.
        sim.blocking.set(false);
        t.load(&sim);
        t.guest_write(&sim, Which::Phys, TimerReg::Ctl, 0);
        sim.blocking.set(true);
        put(&sim, &t);
        assert_eq!(sim.timer.get(), Some(host + 700), "{phys:?}");
        run_host_timer(&sim, &t);
        assert_eq!(sim.raises(Which::Virt), 1, "{phys:?}");
        assert_eq!(sim.now.get(), host + 700);
        // The guest turns the physical timer on again (due: raised) and
        // the virtual one off, and exits to userspace.
        sim.blocking.set(false);
        t.load(&sim);
        t.guest_write(&sim, Which::Phys, TimerReg::Ctl, CTL_ENABLE);
        t.guest_write(&sim, Which::Virt, TimerReg::Ctl, 0);
        // A direct one by the host's interrupt.
        sim.take_host_irqs(&t);
        assert!(sim.line(Which::Phys));
        assert_eq!(sim.raises(Which::Phys), 2, "{phys:?}");
        put(&sim, &t);
        // The VMM moves the physical counter back by 1000: the passed
        // deadline is 600 ahead again, and the line drops at the load.
        t.user_write(&sim, Which::Phys, TimerReg::Cnt, host + 1_999_700)
            .unwrap();
        assert_eq!(t.read(&sim, Which::Phys, TimerReg::Tval), 600);
        t.load(&sim);
        assert!(!sim.line(Which::Phys), "{phys:?}: line not dropped");
        sim.blocking.set(true);
        put(&sim, &t);
        assert_eq!(sim.timer.get(), Some(host + 1_300), "{phys:?}");
        run_host_timer(&sim, &t);
        assert_eq!(sim.raises(Which::Phys), 3, "{phys:?}");
    }
}

// The host timer's rules, as `rust/timer/host_timer.rs` has them for both
// architectures (vcpu_model.rs pins the same ones for RISC-V).

#[test]
fn host_timer_counts_a_migration_when_started_on_another_cpu() {
    let (sim, t) = timers(Placement::Emulated);
    // The first start has no CPU before it: no migration, on any CPU.
    sim.cpu.set(3);
    t.load(&sim);
    t.guest_write(&sim, Which::Phys, TimerReg::Tval, 700);
    t.guest_write(&sim, Which::Phys, TimerReg::Ctl, CTL_ENABLE);
    let migrations = || t.stats().snapshot().migrations;
    assert_eq!((t.stats().snapshot().starts, migrations()), (1, 0));
    // Started again on the same CPU: none.
    t.guest_write(&sim, Which::Phys, TimerReg::Tval, 800);
    assert_eq!((t.stats().snapshot().starts, migrations()), (2, 0));
    // Put, and loaded on another CPU: the load starts it there.
    put(&sim, &t);
    sim.cpu.set(1);
    t.load(&sim);
    assert_eq!((t.stats().snapshot().starts, migrations()), (3, 1));
    // A vCPU that blocks on that CPU: its wake timer starts there too.
    sim.blocking.set(true);
    put(&sim, &t);
    assert_eq!((t.stats().snapshot().starts, migrations()), (4, 1));
}

#[test]
fn host_timer_deadline_past_ktime_max_is_never() {
    for phys in [Placement::Direct, Placement::Emulated] {
        let (sim, t) = timers(phys);
        t.load(&sim);
        // 2^63 cycles at 1 GHz: past the end of ktime_t from any now.
        let far = sim.guest_now(Which::Phys) + (1 << 63);
        t.guest_write(&sim, Which::Phys, TimerReg::Cval, far);
        t.guest_write(&sim, Which::Phys, TimerReg::Ctl, CTL_ENABLE);
        assert_eq!(sim.timer.get(), None, "{phys:?}: started while loaded");
        sim.blocking.set(true);
        put(&sim, &t);
        assert_eq!(sim.timer.get(), None, "{phys:?}: started to block");
        assert_eq!(t.stats().snapshot().starts, 0);
        assert!(!sim.line(Which::Phys));
    }
}

// The timer advance of a blocked vCPU (`rust/timer/advance.rs`): its host
// timer fires early by the estimate and only wakes it; the load puts the
// timers back where they fire by themselves at the deadline; `pending`
// lets it leave WFI; once out (`wfi_done`, the end of `kvm_vcpu_wfi()`) it
// is measured and waits out the rest.

/// Timers with a 20 us advance estimate (at most 50 us).
fn advance_timers(phys: Placement) -> (Sim, El1Timers) {
    timers_adv(phys, false, Advance::new(20_000, 50_000))
}

/// The host counter value at which `t`'s guest counter reads `guest`.
fn host_at(sim: &Sim, t: Which, guest: u64) -> u64 {
    guest.wrapping_add(sim.offset(t))
}

/// The guest enables `t` with `CVAL` `ahead` ticks from now (trapped
/// writes, or the hardware's for a loaded direct timer); its deadline.
fn arm(sim: &Sim, t: &El1Timers, which: Which, ahead: u64) -> u64 {
    let deadline = sim.guest_now(which) + ahead;
    t.guest_write(sim, which, TimerReg::Cval, deadline);
    t.guest_write(sim, which, TimerReg::Ctl, CTL_ENABLE);
    deadline
}

/// Loaded timers with a 20 us advance, `which` enabled `ahead` ticks from
/// now: they, its deadline, and the host counter's value at it.
fn armed(phys: Placement, which: Which, ahead: u64) -> (Sim, El1Timers, u64, u64) {
    let (sim, t) = advance_timers(phys);
    t.load(&sim);
    let deadline = arm(&sim, &t, which, ahead);
    let host = host_at(&sim, which, deadline);
    (sim, t, deadline, host)
}

/// The vCPU leaves WFI for its timer (`pending`), and once out
/// (`wfi_done`) waits out the deadline.
fn leave_wfi(sim: &Sim, t: &El1Timers) {
    assert!(t.pending(sim), "does not leave WFI");
    sim.blocking.set(false);
    t.wfi_done(sim);
}

/// The vCPU blocks in WFI; its host timer fires (early by the advance) and
/// wakes it, and it is loaded `path_ns` later.
fn woken_and_loaded(sim: &Sim, t: &El1Timers, path_ns: u64) {
    block(sim, t);
    fire_once(sim, t);
    sim.now.set(sim.now.get() + path_ns);
    t.load(sim);
}

/// The vCPU blocks in WFI (put from the scheduler).
fn block(sim: &Sim, t: &El1Timers) {
    sim.blocking.set(true);
    put(sim, t);
}

/// The host timer fires as the hrtimer core runs it, once: its callback
/// must be done.
fn fire_once(sim: &Sim, t: &El1Timers) {
    let at = sim.timer.take().expect("no host timer");
    sim.now.set(sim.now.get().max(at));
    assert_eq!(t.expired(sim), Expiry::Done);
}

/// The interrupt of `which`, at its deadline, as the loaded timer raises
/// it: the hardware's (direct) or the host timer's (emulated).
fn timer_fires(sim: &Sim, t: &El1Timers, which: Which) {
    if t.placement(which) == Placement::Direct {
        assert_eq!(sim.take_host_irqs(t), 1);
    } else {
        run_host_timer(sim, t);
    }
    assert!(sim.line(which));
}

#[test]
fn advance_wakes_a_blocked_vcpu_early_and_its_timer_fires_at_the_deadline() {
    for (phys, which) in [
        (Placement::Direct, Which::Virt),
        (Placement::Direct, Which::Phys),
        (Placement::Emulated, Which::Phys),
        (Placement::Emulated, Which::Virt),
    ] {
        let what = format!("{phys:?} {which:?}");
        let (sim, t, _, host) = armed(phys, which, 100_000);
        block(&sim, &t);
        assert_eq!(sim.timer.get(), Some(host - 20_000), "{what}: not early");
        // The callback wakes the vCPU and raises nothing.
        fire_once(&sim, &t);
        assert_eq!(sim.woken.get(), 1, "{what}");
        assert!(!sim.line(which), "{what}");
        // The vCPU is back 5 us later: loaded, its timer fires by itself
        // at the deadline (the hardware, or a host timer at the deadline
        // itself).
        sim.now.set(sim.now.get() + 5_000);
        t.load(&sim);
        assert!(!sim.line(which), "{what}");
        let at_deadline = (t.placement(which) == Placement::Emulated).then_some(host);
        assert_eq!(sim.timer.get(), at_deadline, "{what}");
        // Its last check leaves WFI at once, with the estimate as it was.
        assert!(t.pending(&sim), "{what}");
        assert_eq!(sim.spins.get(), 0, "{what}: waited in WFI");
        assert_eq!(t.advance().ns(), 20_000, "{what}");
        sim.blocking.set(false);
        // Out of WFI, it waits out the 15 us left.
        t.wfi_done(&sim);
        assert_eq!((sim.spins.get(), sim.now.get()), (15_000, host), "{what}");
        assert!(!sim.line(which), "{what}: the wait raised the line");
        timer_fires(&sim, &t, which);
        let st = t.stats().snapshot();
        assert_eq!((st.irqs, st.early, st.late[0]), (1, 0, 1), "{what}");
        assert_eq!(st.spin_ns, 15_000, "{what}");
        // 20 us used, back 15 us early: the path took 5 us, and the
        // estimate moves half-way there.
        assert_eq!(t.advance().ns(), 20_000 - 7_500, "{what}");
        // Once out, nothing waits any more.
        assert!(!t.pending(&sim), "{what}");
        t.wfi_done(&sim);
        assert_eq!(sim.spins.get(), 15_000, "{what}");
    }
}

/// A vCPU woken with the advance but back on another CPU than its wake
/// timer's (moved while it slept) waits out its deadline as any other, but
/// does not tune the estimate: that wakeup's path is not the one it is for.
#[test]
fn a_wakeup_on_another_cpu_does_not_tune_the_advance() {
    for phys in [Placement::Direct, Placement::Emulated] {
        let (sim, t, _, host) = armed(phys, Which::Virt, 100_000);
        block(&sim, &t);
        fire_once(&sim, &t);
        assert_eq!(sim.woken.get(), 1, "{phys:?}");
        sim.now.set(sim.now.get() + 5_000);
        sim.cpu.set(sim.cpu.get() + 1);
        t.load(&sim);
        leave_wfi(&sim, &t);
        assert_eq!((sim.spins.get(), sim.now.get()), (15_000, host), "{phys:?}");
        assert_eq!(
            t.advance().ns(),
            20_000,
            "{phys:?}: tuned by a moved wakeup"
        );
    }
}

#[test]
fn advance_converges_to_the_wakeup_path_from_both_sides() {
    for phys in [Placement::Direct, Placement::Emulated] {
        let which = Which::Phys;
        for start in [0, 45_000] {
            let (sim, t) = timers_adv(phys, false, Advance::new(start, 50_000));
            let path = 17_000;
            t.load(&sim);
            for n in 1..=40u64 {
                let deadline = arm(&sim, &t, which, 200_000);
                block(&sim, &t);
                // The host timer fires, early or at the deadline (from 0:
                // its callback raises the line, and the vCPU is measured
                // just the same); the vCPU is loaded `path` later.
                fire_once(&sim, &t);
                sim.now.set(sim.now.get() + path);
                t.load(&sim);
                if sim.line(which) {
                    // Woken late: the line is up, so KVM does not ask.
                    sim.blocking.set(false);
                    t.wfi_done(&sim);
                } else {
                    leave_wfi(&sim, &t);
                }
                assert!(sim.guest_now(which) >= deadline);
                if !sim.line(which) {
                    timer_fires(&sim, &t, which);
                }
                assert_eq!(sim.raises(which), n as u32);
                // The guest handles it: masks the timer, deactivates.
                sim.guest_ack(which);
                t.guest_write(&sim, which, TimerReg::Ctl, CTL_ENABLE | CTL_IMASK);
                sim.guest_deactivate(&t, which);
                assert!(!sim.line(which));
            }
            let st = t.stats().snapshot();
            assert_eq!(st.early, 0);
            assert!(
                t.advance().ns().abs_diff(path) <= 2,
                "{phys:?} from {start}: {}",
                t.advance().ns()
            );
        }
    }
}

#[test]
fn a_running_or_preempted_vcpu_gets_no_advance() {
    // The emulated timer of a loaded vCPU: its host timer at the deadline.
    let (sim, t, _, host) = armed(Placement::Emulated, Which::Phys, 100_000);
    assert_eq!(sim.timer.get(), Some(host));
    // Preempted (put, not blocking) and back: still at the deadline.
    put(&sim, &t);
    assert_eq!(sim.timer.get(), None);
    t.load(&sim);
    assert_eq!(sim.timer.get(), Some(host));
    assert!(!t.pending(&sim));
    run_host_timer(&sim, &t);
    assert_eq!(sim.now.get(), host);
    // A direct timer of a vCPU put without blocking: no host timer at all.
    let (sim, t, _, _) = armed(Placement::Direct, Which::Virt, 100_000);
    put(&sim, &t);
    assert_eq!(sim.timer.get(), None);
    t.load(&sim);
    assert!(!t.pending(&sim));
    assert_eq!((sim.spins.get(), t.stats().snapshot().spin_ns), (0, 0));
    assert_eq!(t.advance().ns(), 20_000, "tuned without a wake");
}

#[test]
fn a_vcpu_woken_otherwise_cancels_the_early_wake_and_measures_nothing() {
    for phys in [Placement::Direct, Placement::Emulated] {
        let (sim, t, _, host) = armed(phys, Which::Phys, 100_000);
        block(&sim, &t);
        let cancels = t.stats().snapshot().cancels;
        // Another interrupt wakes it 50 us before the deadline.
        sim.now.set(sim.now.get() + 50_000);
        t.load(&sim);
        assert_eq!(t.stats().snapshot().cancels, cancels + 1, "{phys:?}");
        assert!(!t.pending(&sim), "{phys:?}: waits with no early wake");
        assert_eq!(t.advance().ns(), 20_000, "{phys:?}");
        sim.blocking.set(false);
        // The guest runs; its timer fires at the deadline.
        sim.now.set(host);
        timer_fires(&sim, &t, Which::Phys);
        assert_eq!(sim.spins.get(), 0);
    }
}

#[test]
fn an_early_woken_vcpu_preempted_before_its_wait_measures_nothing() {
    let (sim, t, _, host) = armed(Placement::Emulated, Which::Phys, 100_000);
    block(&sim, &t);
    fire_once(&sim, &t);
    sim.now.set(sim.now.get() + 2_000);
    t.load(&sim);
    // Preempted before its check: put while still blocking.  The wake that
    // got no further tuned nothing, and the host timer starts again with
    // what is left of the estimate: at once, 18 us before the deadline.
    put(&sim, &t);
    assert_eq!(t.advance().ns(), 20_000);
    assert_eq!(sim.timer.get(), Some(sim.now.get()));
    assert!(sim.now.get() + 18_000 == host);
    fire_once(&sim, &t);
    assert_eq!(sim.woken.get(), 2);
    sim.now.set(sim.now.get() + 1_000);
    t.load(&sim);
    leave_wfi(&sim, &t);
    assert_eq!(sim.now.get(), host);
    timer_fires(&sim, &t, Which::Phys);
    assert_eq!(sim.raises(Which::Phys), 1);
    // The second wake measured a path of 1 us.
    let tuned = 20_000 - (20_000 - 1_000) / 2;
    assert_eq!(t.advance().ns(), tuned);
    // Out of the block but preempted before `wfi_done` (put, not
    // blocking): it still waits out its deadline there, and measures
    // nothing, the preemption being part of its path.
    sim.guest_ack(Which::Phys);
    t.guest_write(&sim, Which::Phys, TimerReg::Ctl, 0);
    sim.guest_deactivate(&t, Which::Phys);
    let deadline = arm(&sim, &t, Which::Phys, 100_000);
    let host = host_at(&sim, Which::Phys, deadline);
    block(&sim, &t);
    fire_once(&sim, &t);
    t.load(&sim);
    assert!(t.pending(&sim));
    sim.blocking.set(false);
    put(&sim, &t);
    sim.now.set(sim.now.get() + 3_000);
    t.load(&sim);
    t.wfi_done(&sim);
    assert_eq!(sim.now.get(), host);
    assert_eq!(t.advance().ns(), tuned, "tuned by a preempted wake");
    timer_fires(&sim, &t, Which::Phys);
    // A deadline nearer than the estimate when the vCPU blocks: the host
    // timer starts at once, with what is left of it.
    sim.guest_ack(Which::Phys);
    t.guest_write(&sim, Which::Phys, TimerReg::Ctl, 0);
    sim.guest_deactivate(&t, Which::Phys);
    let deadline = arm(&sim, &t, Which::Phys, 3_000);
    block(&sim, &t);
    assert_eq!(sim.timer.get(), Some(sim.now.get()));
    fire_once(&sim, &t);
    t.load(&sim);
    leave_wfi(&sim, &t);
    assert_eq!(sim.guest_now(Which::Phys), deadline);
    timer_fires(&sim, &t, Which::Phys);
    assert_eq!(t.stats().snapshot().early, 0);
}

/// A vCPU woken by the advance that another interrupt makes runnable (KVM
/// then does not ask `pending`) goes to the guest at once: it measures the
/// wake, but waits for nothing.
#[test]
fn an_early_woken_vcpu_with_another_interrupt_does_not_wait() {
    for phys in [Placement::Direct, Placement::Emulated] {
        let (sim, t, _, _) = armed(phys, Which::Phys, 100_000);
        woken_and_loaded(&sim, &t, 5_000);
        sim.blocking.set(false);
        t.wfi_done(&sim);
        assert_eq!(sim.spins.get(), 0, "{phys:?}: waited with an interrupt");
        assert_eq!(t.advance().ns(), 20_000 - 7_500, "{phys:?}");
        assert!(!t.pending(&sim), "{phys:?}");
    }
}

#[test]
fn reset_forgets_an_early_wake() {
    let (sim, t, _, _) = armed(Placement::Direct, Which::Virt, 100_000);
    block(&sim, &t);
    fire_once(&sim, &t);
    t.reset(&sim);
    t.load(&sim);
    assert!(!t.pending(&sim));
    assert_eq!((sim.spins.get(), t.advance().ns()), (0, 20_000));
}

#[test]
fn an_early_wake_for_a_deadline_that_moved_away_blocks_again() {
    // While the vCPU sleeps, another vCPU's ONE_REG write moves the VM's
    // virtual counter back by 1 ms: its deadline is 1 ms further.
    let (sim, t, deadline, _) = armed(Placement::Direct, Which::Virt, 100_000);
    block(&sim, &t);
    fire_once(&sim, &t);
    sim.offset[idx(Which::Virt)].set(sim.offset(Which::Virt) + 1_000_000);
    t.load(&sim);
    assert!(!t.pending(&sim), "waits for a deadline that moved");
    t.wfi_done(&sim);
    assert_eq!(sim.spins.get(), 0);
    // It blocks again: woken early for the deadline's new time.
    put(&sim, &t);
    let host = host_at(&sim, Which::Virt, deadline);
    assert_eq!(sim.timer.get(), Some(host - t.advance().ns()));
    fire_once(&sim, &t);
    t.load(&sim);
    leave_wfi(&sim, &t);
    assert_eq!(sim.now.get(), host);
    timer_fires(&sim, &t, Which::Virt);
}

#[test]
fn wfit_gets_no_advance() {
    let (sim, t, _, host) = armed(Placement::Direct, Which::Virt, 100_000);
    sim.wfit.set(Some(sim.guest_now(Which::Virt) + 300_000));
    block(&sim, &t);
    assert_eq!(sim.timer.get(), Some(host));
    run_host_timer(&sim, &t);
    assert!(sim.line(Which::Virt));
    t.load(&sim);
    assert_eq!(t.advance().ns(), 20_000);
}

#[test]
fn advance_off_wakes_at_the_deadline() {
    // advance_max_ns=0.
    let (sim, t) = timers_adv(Placement::Emulated, false, Advance::new(0, 0));
    t.load(&sim);
    let deadline = arm(&sim, &t, Which::Phys, 100_000);
    block(&sim, &t);
    assert_eq!(sim.timer.get(), Some(host_at(&sim, Which::Phys, deadline)));
    fire_once(&sim, &t);
    assert!(sim.line(Which::Phys));
    t.load(&sim);
    assert_eq!((t.advance().ns(), t.stats().snapshot().spin_ns), (0, 0));
}

#[test]
fn every_delivery_is_in_the_lateness_histogram() {
    let (sim, t) = timers(Placement::Emulated);
    t.load(&sim);
    // A running guest's direct timer: the host interrupt 3 ticks late.
    let cval = sim.guest_now(Which::Virt) + 100;
    sim.guest_program(Which::Virt, CTL_ENABLE, cval);
    sim.now.set(sim.now.get() + 103);
    assert_eq!(sim.take_host_irqs(&t), 1);
    sim.guest_ack(Which::Virt);
    sim.guest_program(Which::Virt, CTL_ENABLE | CTL_IMASK, cval);
    sim.guest_deactivate(&t, Which::Virt);
    // The emulated timer, by its host timer: on the deadline's tick.
    arm(&sim, &t, Which::Phys, 500);
    run_host_timer(&sim, &t);
    t.guest_write(&sim, Which::Phys, TimerReg::Ctl, 0);
    // A deadline that passed while the vCPU was put (preempted), raised
    // at its load 1000 ticks late.
    arm(&sim, &t, Which::Phys, 500);
    put(&sim, &t);
    sim.now.set(sim.now.get() + 1_500);
    t.load(&sim);
    let st = t.stats().snapshot();
    assert_eq!((st.irqs, st.early), (3, 0));
    assert_eq!((st.late[2], st.late[0], st.late[10]), (1, 1, 1));
    assert_eq!(st.late.iter().sum::<u64>(), 3);
}
