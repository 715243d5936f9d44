// SPDX-License-Identifier: GPL-2.0

//! The arm64 backend: KVM's `struct kvm_arch_timer_ops` for the EL1 virtual
//! and physical timers of [`crate::timer::el1`], with the in-kernel vGICv3.
//!
//! The virtual timer is direct (the guest programs the hardware); the
//! physical timer is direct on VHE hosts (with CNTPOFF where the CPU has
//! it) and emulated with an hrtimer on nVHE hosts.  Everything that touches
//! C lives here or in the wrappers; the timers' behaviour is `El1Timers`'s,
//! which the host tests run.
//!
//! A VM without the in-kernel vGIC, or with nested virtualization, is
//! declined at its first vCPU run ([`el1::decline`]) and runs on KVM's
//! built-in timer.

use core::ffi::c_void;

use kernel::c_str;
use kernel::ffi::c_int;
use kernel::prelude::*;

use crate::backend::{c_stats, PerVcpu, Registration};
use crate::bindings;
use crate::hrtimer::{
    impl_has_hr_timer, HrTimer, HrTimerCallback, HrTimerCallbackContext, HrTimerRestart,
};
use crate::kvm::{self, Vcpu, VcpuDeinit, VcpuHandle, VcpuInit, VcpuOp};
use crate::timer::clock::Clock;
use crate::timer::el1::{self, Decline, El1Timers, Error, Placement, Platform, TimerReg, Which};

/// A vCPU's timer state, owned by KVM's `vcpu->arch.timer_cpu.backend_priv`
/// from `vcpu_init` to `vcpu_deinit`.
#[pin_data]
pub(crate) struct VcpuState {
    #[pin]
    timer: HrTimer<VcpuState>,
    logic: El1Timers,
    vcpu: VcpuHandle,
}

impl_has_hr_timer! {
    impl HasHrTimer<VcpuState> for VcpuState { self.timer }
}

impl HrTimerCallback for VcpuState {
    fn run(this: &Self, ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        ctx.restart_for(this.logic.expired(&Host(this)))
    }
}

fn is_phys(t: Which) -> bool {
    t == Which::Phys
}

/// The host as [`El1Timers`] sees it, for one vCPU.
///
/// Every method passes the vCPU of the state, which outlives the state
/// (`Vcpu` invariant); that is the precondition of each C helper unless a
/// comment says more.
struct Host<'a>(&'a VcpuState);

impl Host<'_> {
    fn vcpu(&self) -> *mut bindings::kvm_vcpu {
        self.0.vcpu.get().as_ptr()
    }
}

impl Platform for Host<'_> {
    fn counter(&self) -> u64 {
        // SAFETY: reads the counter; no preconditions.
        unsafe { bindings::kvt_arm64_counter() }
    }

    fn host_ns(&self) -> u64 {
        kvm::ktime_ns()
    }

    fn offset(&self, t: Which) -> u64 {
        // SAFETY: see `Host`.
        unsafe { bindings::kvt_arm64_offset(self.vcpu(), is_phys(t)) }
    }

    fn set_offset(&self, t: Which, offset: u64) {
        // SAFETY: see `Host`.
        unsafe { bindings::kvt_arm64_set_offset(self.vcpu(), is_phys(t), offset) }
    }

    fn offset_fixed(&self) -> bool {
        // SAFETY: see `Host`.
        unsafe { bindings::kvt_arm64_offset_fixed(self.vcpu()) }
    }

    fn ctl(&self, t: Which) -> u64 {
        // SAFETY: see `Host`.
        unsafe { bindings::kvt_arm64_ctl(self.vcpu(), is_phys(t)) }
    }

    fn cval(&self, t: Which) -> u64 {
        // SAFETY: see `Host`.
        unsafe { bindings::kvt_arm64_cval(self.vcpu(), is_phys(t)) }
    }

    fn set_ctl(&self, t: Which, ctl: u64) {
        // SAFETY: see `Host`; the vCPU thread (or the timer callback, for
        // an emulated timer it watches) is the only writer.
        unsafe { bindings::kvt_arm64_set_ctl(self.vcpu(), is_phys(t), ctl) }
    }

    fn set_cval(&self, t: Which, cval: u64) {
        // SAFETY: as in `set_ctl`.
        unsafe { bindings::kvt_arm64_set_cval(self.vcpu(), is_phys(t), cval) }
    }

    fn cntpoff(&self) -> bool {
        // SAFETY: reads a final CPU capability; no preconditions.
        unsafe { bindings::kvt_arm64_has_cntpoff() }
    }

    fn hw_load(&self, t: Which, offset: u64, ctl: u64, cval: u64) {
        // SAFETY: `El1Timers` calls this inside `atomic` (interrupts off)
        // from load or a trapped access, with this vCPU on this CPU, and
        // only for a direct timer (the physical one only on VHE).
        unsafe { bindings::kvt_arm64_hw_load(is_phys(t), offset, ctl, cval) }
    }

    fn hw_save(&self, t: Which) -> (u64, u64) {
        let (mut ctl, mut cval) = (0, 0);
        // SAFETY: as in `hw_load`; the out-pointers are locals.
        unsafe { bindings::kvt_arm64_hw_save(is_phys(t), &mut ctl, &mut cval) };
        (ctl, cval)
    }

    fn hw_ctl(&self, t: Which) -> u64 {
        // SAFETY: reads a timer register of this CPU; `El1Timers` calls it
        // only while the direct timer is loaded here.
        unsafe { bindings::kvt_arm64_hw_ctl(is_phys(t)) }
    }

    fn set_traps(&self) {
        // SAFETY: see `Host`; from load, preemption disabled.
        unsafe { bindings::kvt_arm64_set_traps(self.vcpu()) }
    }

    fn irqchip_in_kernel(&self) -> bool {
        // SAFETY: see `Host`.
        unsafe { bindings::kvt_arm64_irqchip_in_kernel(self.vcpu()) }
    }

    fn irq_line(&self, t: Which, level: bool) {
        // SAFETY: see `Host`; the vGIC takes raw spinlocks only, so any
        // context (hard IRQ included) may inject.
        unsafe { bindings::kvt_arm64_irq_line(self.vcpu(), is_phys(t), level) }
    }

    fn irq_map_active(&self, t: Which) -> bool {
        // SAFETY: see `Host`.
        unsafe { bindings::kvt_arm64_irq_map_active(self.vcpu(), is_phys(t)) }
    }

    fn host_irq_set_active(&self, t: Which, active: bool) {
        // SAFETY: see `Host`; the host interrupt of a direct timer is a
        // per-CPU one, set on this CPU (load, sync after exit).
        unsafe { bindings::kvt_arm64_host_irq_set_active(self.vcpu(), is_phys(t), active) }
    }

    fn irq_map_reset(&self, t: Which) {
        // SAFETY: see `Host`; only for a mapped (direct) timer of a VM with
        // the in-kernel vGIC.
        unsafe { bindings::kvt_arm64_irq_map_reset(self.vcpu(), is_phys(t)) }
    }

    fn irq_setup(&self, direct: &[Which]) -> Result<(), Error> {
        let map_phys = direct.contains(&Which::Phys);
        // SAFETY: see `Host`; first run, in-kernel vGIC initialized.
        match unsafe { bindings::kvt_arm64_irq_setup(self.vcpu(), map_phys) } {
            0 => Ok(()),
            e if e == EINVAL.to_errno() => Err(Error::BadIrqs),
            e => Err(Error::Map(e)),
        }
    }

    fn timer_start(&self, expires_ns: u64) {
        self.0.timer.start(expires_ns)
    }

    fn timer_cancel(&self) -> bool {
        self.0.timer.cancel()
    }

    fn wfit_deadline(&self) -> Option<u64> {
        let mut deadline = 0;
        // SAFETY: see `Host`; the out-pointer is a local.
        unsafe { bindings::kvt_arm64_wfit_deadline(self.vcpu(), &mut deadline) }.then_some(deadline)
    }

    fn wake(&self) {
        // SAFETY: see `Host`; may be called from any context.
        unsafe { bindings::kvt_vcpu_wake_up(self.vcpu()) }
    }

    fn is_blocking(&self) -> bool {
        self.0.vcpu.get().is_blocking()
    }

    fn cpu(&self) -> u32 {
        kvm::this_cpu()
    }

    fn atomic<R>(&self, f: impl FnOnce() -> R) -> R {
        kvm::without_irqs(f)
    }
}

/// The vCPUs' states.
type States = PerVcpu<VcpuState>;

/// Why a VM is left to KVM's timer, for the kernel log.
fn decline_reason(d: Decline) -> &'static kernel::str::CStr {
    match d {
        Decline::Nested => c_str!("nested virtualization (KVM_ARM_VCPU_HAS_EL2)"),
        Decline::UserIrqchip => c_str!("userspace irqchip (no in-kernel vGIC)"),
    }
}

unsafe extern "C" fn vm_accept(vcpu: *mut bindings::kvm_vcpu) -> bool {
    // SAFETY: `vm_accept`, from `kvm_timer_enable()` at the first `KVM_RUN`
    // (which holds the vCPU's mutex) of the VM's first vCPU to run.
    let Some(vcpu) = (unsafe { VcpuOp::from_raw(vcpu) }) else {
        return false;
    };
    // SAFETY: a live vCPU; its VM's vGIC and vCPU features are final.
    let (in_kernel, nested) = unsafe {
        (
            bindings::kvt_arm64_irqchip_in_kernel(vcpu.as_ptr()),
            bindings::kvt_arm64_nested(vcpu.as_ptr()),
        )
    };
    let Some(d) = el1::decline(in_kernel, nested) else {
        return true;
    };
    // SAFETY: a live vCPU; the reason is a static string.
    unsafe { bindings::kvt_warn_vm_declined(vcpu.as_ptr(), decline_reason(d).as_char_ptr()) };
    false
}

unsafe extern "C" fn vcpu_init(vcpu: *mut bindings::kvm_vcpu) -> c_int {
    // SAFETY: `vcpu_init`, from `kvm_timer_vcpu_init()` in
    // `kvm_arch_vcpu_create()`: the vCPU being created, which no one else
    // reaches yet; KVM calls `vcpu_deinit` before it frees it, also on the
    // creation's error path.
    let Some(vcpu) = (unsafe { VcpuInit::from_raw(vcpu) }) else {
        return EINVAL.to_errno();
    };
    // SAFETY: no preconditions.
    let hz = unsafe { bindings::kvt_arm64_counter_hz() };
    let Some(clock) = Clock::new(hz) else {
        kvm::warn_ratelimited(c_str!("unusable counter frequency"), hz);
        return EINVAL.to_errno();
    };
    let installed = States::install(vcpu, |vcpu| {
        pin_init!(VcpuState {
            timer <- HrTimer::new(),
            logic: El1Timers::new(clock, Backend::phys_placement()),
            vcpu,
        })
    });
    match installed {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

unsafe extern "C" fn vcpu_deinit(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_deinit`, from `kvm_timer_vcpu_terminate()` in
    // `kvm_arch_vcpu_destroy()` or the creation's error path: no op of the
    // vCPU runs now or later, the VM's debugfs file no longer lists it, and
    // the vGIC asks only about a running vCPU.
    if let Some(vcpu) = unsafe { VcpuDeinit::from_raw(vcpu) } {
        // The state comes back with its host timer cancelled, and goes.
        drop(States::remove(vcpu));
    }
}

unsafe extern "C" fn vcpu_reset(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_reset`, from `kvm_reset_vcpu()`: `KVM_ARM_VCPU_INIT`, or
    // `KVM_REQ_VCPU_RESET` in `KVM_RUN`, which both hold the vCPU's mutex.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    States::with(op, (), |s, _| s.logic.reset(&Host(s)))
}

unsafe extern "C" fn vcpu_enable(vcpu: *mut bindings::kvm_vcpu) -> c_int {
    // SAFETY: `vcpu_enable`, from `kvm_timer_enable()` at the vCPU's first
    // `KVM_RUN`, which holds its mutex.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    States::with(op, EINVAL.to_errno(), |s, _| {
        match s.logic.enable(&Host(s)) {
            Ok(()) => 0,
            Err(Error::BadIrqs) => {
                kvm::warn_ratelimited(c_str!("timer PPIs are equal or already in use"), 0);
                EINVAL.to_errno()
            }
            Err(Error::Map(e)) => e,
            Err(Error::Invalid) => EINVAL.to_errno(),
        }
    })
}

unsafe extern "C" fn vcpu_load(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_load`, from `kvm_timer_vcpu_load()`: `vcpu_load()` of a vCPU
    // ioctl (which holds the vCPU's mutex), or that thread's preempt notifier.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    States::with(op, (), |s, _| s.logic.load(&Host(s)))
}

unsafe extern "C" fn vcpu_put(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_put`, from `kvm_timer_vcpu_put()`: `vcpu_put()` of a vCPU
    // ioctl (which holds the vCPU's mutex), or that thread's preempt notifier.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    States::with(op, (), |s, _| s.logic.put(&Host(s)))
}

unsafe extern "C" fn vcpu_pending(vcpu: *mut bindings::kvm_vcpu) -> bool {
    // SAFETY: `vcpu_pending`, from `kvm_vcpu_check_block()` in `KVM_RUN` (which
    // holds the vCPU's mutex).
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    States::with(op, false, |s, _| s.logic.pending(&Host(s)))
}

/// The timer KVM names by `enum kvm_arch_timers`; only the EL1 ones.
fn which(tmr: bindings::kvm_arch_timers) -> Option<Which> {
    match tmr {
        bindings::kvm_arch_timers_TIMER_VTIMER => Some(Which::Virt),
        bindings::kvm_arch_timers_TIMER_PTIMER => Some(Which::Phys),
        _ => None,
    }
}

/// The register KVM names by `enum kvm_arch_timer_regs`; not the nested
/// `CNTVOFF`.
fn timer_reg(treg: bindings::kvm_arch_timer_regs) -> Option<TimerReg> {
    match treg {
        bindings::kvm_arch_timer_regs_TIMER_REG_CNT => Some(TimerReg::Cnt),
        bindings::kvm_arch_timer_regs_TIMER_REG_CVAL => Some(TimerReg::Cval),
        bindings::kvm_arch_timer_regs_TIMER_REG_TVAL => Some(TimerReg::Tval),
        bindings::kvm_arch_timer_regs_TIMER_REG_CTL => Some(TimerReg::Ctl),
        _ => None,
    }
}

unsafe extern "C" fn host_irq(vcpu: *mut bindings::kvm_vcpu, tmr: bindings::kvm_arch_timers) {
    // SAFETY: `host_irq`, from `kvm_arch_timer_handler()` in hard interrupt
    // context, with the vCPU loaded on this CPU (`dev_id` is the CPU's
    // running vCPU): live, and not being destroyed.
    let vcpu = unsafe { Vcpu::from_raw(vcpu) };
    let Some(t) = which(tmr) else {
        return;
    };
    if let Some(s) = vcpu.and_then(States::get) {
        s.logic.host_irq(&Host(s), t);
    }
}

/// The vGIC's resample of a mapped timer line (shim/arm64.c).
///
/// # Safety
///
/// `priv_` is null or the backend state of the running vCPU.
#[no_mangle]
pub(crate) unsafe extern "C" fn kvt_rust_arm64_input_level(priv_: *mut c_void, phys: bool) -> bool {
    // SAFETY: by the function's contract; the running vCPU is not freed.
    let Some(s) = (unsafe { States::from_private(priv_) }) else {
        return false;
    };
    let t = if phys { Which::Phys } else { Which::Virt };
    s.logic.input_level(&Host(s), t)
}

unsafe extern "C" fn sync_user(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `sync_user`, from `KVM_RUN` (which holds the vCPU's mutex), after a
    // guest exit.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    States::with(op, (), |s, _| s.logic.sync_user(&Host(s)))
}

unsafe extern "C" fn should_notify_user(vcpu: *mut bindings::kvm_vcpu) -> bool {
    // SAFETY: `should_notify_user`, from `KVM_RUN` (which holds the vCPU's
    // mutex).
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    States::with(op, false, |s, _| {
        let (mut v, mut p) = (false, false);
        // SAFETY: KVM passes a live vCPU with its `kvm_run`; locals out.
        unsafe { bindings::kvt_arm64_user_lines(s.vcpu.get().as_ptr(), &mut v, &mut p) };
        s.logic.user_lines(&Host(s)) != [v, p]
    })
}

unsafe extern "C" fn update_run(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `update_run`, from `KVM_RUN` (which holds the vCPU's mutex).
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    States::with(op, (), |s, _| {
        let [v, p] = s.logic.user_lines(&Host(s));
        // SAFETY: KVM passes a live vCPU with its `kvm_run`, on its thread.
        unsafe { bindings::kvt_arm64_set_user_lines(s.vcpu.get().as_ptr(), v, p) };
    })
}

/// The timer and register of a ONE_REG id.
fn one_reg(regid: u64) -> Option<(Which, TimerReg)> {
    let (mut phys, mut treg) = (false, 0);
    // SAFETY: the out-pointers are locals.
    if unsafe { bindings::kvt_arm64_one_reg(regid, &mut phys, &mut treg) } != 0 {
        return None;
    }
    let t = if phys { Which::Phys } else { Which::Virt };
    Some((t, timer_reg(treg)?))
}

unsafe extern "C" fn get_reg(vcpu: *mut bindings::kvm_vcpu, regid: u64) -> u64 {
    // SAFETY: `get_reg`, from `KVM_GET_ONE_REG` or `kvm_handle_wfx()` in
    // `KVM_RUN`, which both hold the vCPU's mutex.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    let Some((t, r)) = one_reg(regid) else {
        return u64::MAX;
    };
    States::with(op, u64::MAX, |s, _| s.logic.read(&Host(s), t, r))
}

unsafe extern "C" fn set_reg(vcpu: *mut bindings::kvm_vcpu, regid: u64, val: u64) -> c_int {
    // SAFETY: `set_reg`, from `KVM_SET_ONE_REG`, which holds the vCPU's
    // mutex.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    let Some((t, r)) = one_reg(regid) else {
        return ENOENT.to_errno();
    };
    States::with(op, EINVAL.to_errno(), |s, _| {
        match s.logic.user_write(&Host(s), t, r, val) {
            Ok(()) => 0,
            Err(_) => {
                kvm::warn_ratelimited(c_str!("ONE_REG timer CTL with RES0 bits set"), val);
                EINVAL.to_errno()
            }
        }
    })
}

unsafe extern "C" fn sysreg_read(
    vcpu: *mut bindings::kvm_vcpu,
    tmr: bindings::kvm_arch_timers,
    treg: bindings::kvm_arch_timer_regs,
) -> u64 {
    // SAFETY: `sysreg_read`, from a trapped access in `KVM_RUN`, which
    // holds the vCPU's mutex.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    let (Some(t), Some(r)) = (which(tmr), timer_reg(treg)) else {
        return 0;
    };
    States::with(op, 0, |s, _| s.logic.read(&Host(s), t, r))
}

unsafe extern "C" fn sysreg_write(
    vcpu: *mut bindings::kvm_vcpu,
    tmr: bindings::kvm_arch_timers,
    treg: bindings::kvm_arch_timer_regs,
    val: u64,
) {
    // SAFETY: `sysreg_write`, from a trapped access in `KVM_RUN`, which
    // holds the vCPU's mutex.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    let (Some(t), Some(r)) = (which(tmr), timer_reg(treg)) else {
        return;
    };
    States::with(op, (), |s, _| s.logic.guest_write(&Host(s), t, r, val))
}

/// The statistics of one vCPU, for the debugfs file (shim/common.c).
///
/// # Safety
///
/// `priv_` is the backend state of a live vCPU of ours (its
/// `backend_priv`), whose deinit does not run during the call; `out` is
/// null or points to a writable `struct kvt_stats`.
#[no_mangle]
pub(crate) unsafe extern "C" fn kvt_rust_vcpu_stats(
    priv_: *mut c_void,
    out: *mut bindings::kvt_stats,
) {
    // SAFETY: by the function's contract.
    let (state, out) = unsafe { (States::from_private(priv_), out.as_mut()) };
    if let (Some(state), Some(out)) = (state, out) {
        *out = c_stats(&state.logic.stats().snapshot(), 0);
    }
}

static OPS: bindings::kvm_arch_timer_ops = bindings::kvm_arch_timer_ops {
    vm_accept: Some(vm_accept),
    vcpu_init: Some(vcpu_init),
    vcpu_deinit: Some(vcpu_deinit),
    vcpu_reset: Some(vcpu_reset),
    vcpu_enable: Some(vcpu_enable),
    vcpu_load: Some(vcpu_load),
    vcpu_put: Some(vcpu_put),
    vcpu_pending: Some(vcpu_pending),
    host_irq: Some(host_irq),
    sync_user: Some(sync_user),
    should_notify_user: Some(should_notify_user),
    update_run: Some(update_run),
    get_reg: Some(get_reg),
    set_reg: Some(set_reg),
    sysreg_read: Some(sysreg_read),
    sysreg_write: Some(sysreg_write),
};

/// The registered backend.
pub(crate) struct Backend(Registration);

impl Backend {
    /// Register with KVM: VMs created from now on use this timer.
    ///
    /// Not on a host whose interrupt controller cannot deactivate a
    /// forwarded interrupt: the vGIC would have to resample the timer lines
    /// in software (`VGIC_IRQ_SW_RESAMPLE`), which this backend does not ask
    /// for, and no emulated host can test.
    pub(crate) fn register() -> Result<Self> {
        // SAFETY: reads a property of the host fixed at KVM's init; no
        // preconditions.
        if !unsafe { bindings::kvt_arm64_has_hw_deactivation() } {
            pr_warn!(
                "not loaded: the host's interrupt controller cannot deactivate a forwarded timer interrupt (vGIC no_hw_deactivation); VMs keep KVM's built-in timer\n"
            );
            return Err(ENODEV);
        }
        Registration::new(&OPS).map(Self)
    }

    /// Where the physical timer runs on this host.
    fn phys_placement() -> Placement {
        // SAFETY: no preconditions.
        if unsafe { bindings::kvt_arm64_has_vhe() } {
            Placement::Direct
        } else {
            Placement::Emulated
        }
    }

    /// The host mode, for the load message.
    pub(crate) fn mode_name() -> &'static str {
        // SAFETY: no preconditions.
        let cntpoff = unsafe { bindings::kvt_arm64_has_cntpoff() };
        match (Self::phys_placement(), cntpoff) {
            (Placement::Direct, true) => "VHE, both timers direct, CNTPOFF",
            (Placement::Direct, false) => "VHE, both timers direct",
            (Placement::Emulated, _) => "nVHE, physical timer emulated",
        }
    }
}
