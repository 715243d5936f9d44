// SPDX-License-Identifier: GPL-2.0

//! The arm64 backend: KVM's `struct kvm_arch_timer_ops` for the EL1 virtual
//! and physical timers of [`crate::timer::el1`], with the in-kernel vGICv3.
//!
//! The virtual timer is direct (the guest programs the hardware); the
//! physical timer is direct on VHE hosts (with CNTPOFF where the CPU has
//! it) and emulated with an hrtimer on nVHE hosts.  The timers' behaviour is
//! `El1Timers`'s, which the host tests run, in the per-vCPU skeleton of
//! `crate::vcpu_state`.  C is reached only through the wrappers ([`regs`], `crate::kvm`, `crate::hrtimer`, `crate::backend`):
//! each op's one `unsafe` call turns KVM's vCPU pointer into the type that
//! states the op's context.
//!
//! A VM without the in-kernel vGIC, or with nested virtualization, is
//! declined at its first vCPU run ([`el1::decline`]) and runs on KVM's
//! built-in timer.

use core::ffi::c_void;

use kernel::c_str;
use kernel::ffi::c_int;
use kernel::prelude::*;

use crate::backend::Registration;
use crate::bindings;
use crate::kvm::{self, Vcpu, VcpuDeinit, VcpuInit, VcpuOp};
use crate::timer::advance::Advance;
use crate::timer::el1::{self, Decline, El1Timers, Error, Placement, Platform, TimerReg, Which};
use crate::timer::stats::Stats;
use crate::vcpu_state::{self, States, TimerLogic, VcpuState};

#[path = "arm64/regs.rs"]
mod regs;

/// The logic the skeleton runs on this architecture.
pub(crate) type Logic = El1Timers;

/// The host as [`El1Timers`] sees it, for one vCPU.
type Host<'a> = vcpu_state::Host<'a, El1Timers>;

/// The vCPU's timer state.
type State = VcpuState<El1Timers>;

impl TimerLogic for El1Timers {
    /// Nothing: the wrappers need only the vCPU.
    type Hw = ();

    fn stats(&self) -> &Stats {
        El1Timers::stats(self)
    }

    fn advance(&self) -> &Advance {
        El1Timers::advance(self)
    }
}

impl Platform for Host<'_> {
    fn counter(&self) -> u64 {
        regs::counter()
    }

    fn offset(&self, t: Which) -> u64 {
        self.vcpu().offset(t)
    }

    fn guest_counter(&self, t: Which) -> u64 {
        self.vcpu().guest_counter(t)
    }

    fn set_offset(&self, t: Which, offset: u64) {
        self.vcpu().set_offset(t, offset)
    }

    fn offset_fixed(&self) -> bool {
        self.vcpu().offset_fixed()
    }

    fn ctl(&self, t: Which) -> u64 {
        self.vcpu().ctl(t)
    }

    fn cval(&self, t: Which) -> u64 {
        self.vcpu().cval(t)
    }

    fn set_ctl(&self, t: Which, ctl: u64) {
        match self.op() {
            Some(op) => op.set_ctl(t, ctl),
            // Not reached: `El1Timers` saves registers only in ops (load,
            // put, reset, register reads and writes), never in the callback
            // or an interrupt, which may not write them.
            None => kvm::warn_ratelimited(c_str!("bug: timer CTL saved outside an op"), ctl),
        }
    }

    fn set_cval(&self, t: Which, cval: u64) {
        match self.op() {
            Some(op) => op.set_cval(t, cval),
            // Not reached, as in `set_ctl`.
            None => kvm::warn_ratelimited(c_str!("bug: timer CVAL saved outside an op"), cval),
        }
    }

    fn cntpoff(&self) -> bool {
        regs::has_cntpoff()
    }

    fn hw_load(&self, t: Which, offset: u64, ctl: u64, cval: u64) {
        self.vcpu().hw_load(t, offset, ctl, cval)
    }

    fn hw_save(&self, t: Which) -> (u64, u64) {
        self.vcpu().hw_save(t)
    }

    fn hw_ctl(&self, t: Which) -> u64 {
        self.vcpu().hw_ctl(t)
    }

    fn hw_cval(&self, t: Which) -> u64 {
        self.vcpu().hw_cval(t)
    }

    fn set_traps(&self) {
        self.vcpu().set_traps()
    }

    fn irqchip_in_kernel(&self) -> bool {
        self.vcpu().irqchip_in_kernel()
    }

    fn irq_line(&self, t: Which, level: bool) {
        self.vcpu().irq_line(t, level)
    }

    fn irq_map_active(&self, t: Which) -> bool {
        self.vcpu().irq_map_active(t)
    }

    fn host_irq_set_active(&self, t: Which, active: bool) {
        self.vcpu().host_irq_set_active(t, active)
    }

    fn irq_map_reset(&self, t: Which) {
        self.vcpu().irq_map_reset(t)
    }

    fn irq_setup(&self, direct: &[Which]) -> Result<(), Error> {
        self.vcpu().irq_setup(direct)
    }

    fn wfit_deadline(&self) -> Option<u64> {
        self.vcpu().wfit_deadline()
    }

    fn wake(&self) {
        self.vcpu().wake_up()
    }

    fn is_blocking(&self) -> bool {
        self.vcpu().is_blocking()
    }

    fn atomic<R>(&self, f: impl FnOnce() -> R) -> R {
        kvm::without_irqs(f)
    }

    fn relax(&self) {
        kvm::relax()
    }
}

/// Why a VM is left to KVM's timer, for the kernel log.
fn decline_reason(d: Decline) -> &'static CStr {
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
    // The VM's vGIC and the vCPU's features are final by now.
    let Some(d) = el1::decline(vcpu.irqchip_in_kernel(), vcpu.nested()) else {
        return true;
    };
    vcpu.warn_declined(decline_reason(d));
    false
}

unsafe extern "C" fn vcpu_init(vcpu: *mut bindings::kvm_vcpu) -> c_int {
    // SAFETY: `vcpu_init`, from `kvm_timer_vcpu_init()` in
    // `kvm_arch_vcpu_create()`: the vCPU being created, which no one else
    // reaches yet; KVM calls `vcpu_deinit` before it frees it, also on the
    // creation's error path.
    let vcpu = unsafe { VcpuInit::from_raw(vcpu) };
    let hz = regs::counter_hz();
    State::init(vcpu, hz, c_str!("unusable counter frequency"), |clock| {
        let phys = Backend::phys_placement();
        (El1Timers::new(clock, phys, vcpu_state::new_advance()), ())
    })
}

unsafe extern "C" fn vcpu_deinit(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_deinit`, from `kvm_timer_vcpu_terminate()` in
    // `kvm_arch_vcpu_destroy()` or the creation's error path: no op of the
    // vCPU runs now or later, the VM's debugfs file no longer lists it, and
    // the vGIC asks only about a running vCPU.
    let vcpu = unsafe { VcpuDeinit::from_raw(vcpu) };
    State::deinit(vcpu)
}

unsafe extern "C" fn vcpu_enable(vcpu: *mut bindings::kvm_vcpu) -> c_int {
    // SAFETY: `vcpu_enable`, from `kvm_timer_enable()` at the vCPU's first
    // `KVM_RUN`, which holds its mutex.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    State::with(op, EINVAL.to_errno(), |t, h| match t.enable(h) {
        Ok(()) => 0,
        Err(Error::BadIrqs) => {
            kvm::warn_ratelimited(c_str!("timer PPIs are equal or already in use"), 0);
            EINVAL.to_errno()
        }
        Err(Error::Map(e)) => e,
        Err(Error::Invalid) => EINVAL.to_errno(),
    })
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

unsafe extern "C" fn vcpu_wfi_done(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_wfi_done`, from `kvm_vcpu_wfi()` in `KVM_RUN` (which
    // holds the vCPU's mutex), the vCPU loaded.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    State::with(op, (), |t, h| t.wfi_done(h))
}

unsafe extern "C" fn host_irq(vcpu: *mut bindings::kvm_vcpu, tmr: bindings::kvm_arch_timers) {
    // SAFETY: `host_irq`, from `kvm_arch_timer_handler()` in hard interrupt
    // context, with the vCPU loaded on this CPU (`dev_id` is the CPU's
    // running vCPU): live, and not being destroyed.
    let vcpu = unsafe { Vcpu::from_raw(vcpu) };
    let Some(t) = which(tmr) else {
        return;
    };
    if let Some(s) = vcpu.and_then(States::<El1Timers>::get) {
        s.remote(|tm, h| tm.host_irq(h, t));
    }
}

/// The vGIC's resample of a mapped timer line (shim/arm64.c).
///
/// # Safety
///
/// `priv_` is null or the backend state of the vCPU running on this CPU
/// (`kvm_get_running_vcpu()`), which is not destroyed while it runs.
#[no_mangle]
pub(crate) unsafe extern "C" fn kvt_rust_arm64_input_level(priv_: *mut c_void, phys: bool) -> bool {
    // SAFETY: by the function's contract.
    let Some(s) = (unsafe { States::<El1Timers>::from_private(priv_) }) else {
        return false;
    };
    let t = if phys { Which::Phys } else { Which::Virt };
    s.remote(|tm, h| tm.input_level(h, t))
}

unsafe extern "C" fn sync_user(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `sync_user`, from `KVM_RUN` (which holds the vCPU's mutex),
    // after a guest exit.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    State::with(op, (), |t, h| t.sync_user(h))
}

unsafe extern "C" fn should_notify_user(vcpu: *mut bindings::kvm_vcpu) -> bool {
    // SAFETY: `should_notify_user`, from `KVM_RUN` (which holds the vCPU's
    // mutex).
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    State::with(op, false, |t, h| {
        let told = h.vcpu().user_lines();
        t.user_lines(h) != told
    })
}

unsafe extern "C" fn update_run(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `update_run`, from `KVM_RUN` (which holds the vCPU's mutex).
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    State::with(op, (), |t, h| {
        if let Some(op) = h.op() {
            op.set_user_lines(t.user_lines(h))
        }
    })
}

/// The timer and register of a ONE_REG id.
fn one_reg(regid: u64) -> Option<(Which, TimerReg)> {
    let (t, treg) = regs::one_reg(regid)?;
    Some((t, timer_reg(treg)?))
}

unsafe extern "C" fn get_reg(vcpu: *mut bindings::kvm_vcpu, regid: u64) -> u64 {
    // SAFETY: `get_reg`, from `KVM_GET_ONE_REG` or `kvm_handle_wfx()` in
    // `KVM_RUN`, which both hold the vCPU's mutex.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    let Some((t, r)) = one_reg(regid) else {
        return u64::MAX;
    };
    State::with(op, u64::MAX, |tm, h| tm.read(h, t, r))
}

unsafe extern "C" fn set_reg(vcpu: *mut bindings::kvm_vcpu, regid: u64, val: u64) -> c_int {
    // SAFETY: `set_reg`, from `KVM_SET_ONE_REG`, which holds the vCPU's
    // mutex.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    let Some((t, r)) = one_reg(regid) else {
        return ENOENT.to_errno();
    };
    State::with(op, EINVAL.to_errno(), |tm, h| {
        match tm.user_write(h, t, r, val) {
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
    State::with(op, 0, |tm, h| tm.read(h, t, r))
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
    State::with(op, (), |tm, h| tm.guest_write(h, t, r, val))
}

static OPS: bindings::kvm_arch_timer_ops = bindings::kvm_arch_timer_ops {
    vm_accept: Some(vm_accept),
    vcpu_init: Some(vcpu_init),
    vcpu_deinit: Some(vcpu_deinit),
    vcpu_reset: Some(vcpu_state::vcpu_reset::<El1Timers>),
    vcpu_enable: Some(vcpu_enable),
    vcpu_load: Some(vcpu_state::vcpu_load::<El1Timers>),
    vcpu_put: Some(vcpu_state::vcpu_put::<El1Timers>),
    vcpu_pending: Some(vcpu_state::vcpu_pending::<El1Timers>),
    vcpu_wfi_done: Some(vcpu_wfi_done),
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
        if !regs::has_hw_deactivation() {
            pr_warn!(
                "not loaded: the host's interrupt controller cannot deactivate a forwarded timer interrupt (vGIC no_hw_deactivation); VMs keep KVM's built-in timer\n"
            );
            return Err(ENODEV);
        }
        Registration::new(&OPS).map(Self)
    }

    /// Where the physical timer runs on this host.
    fn phys_placement() -> Placement {
        if regs::has_vhe() {
            Placement::Direct
        } else {
            Placement::Emulated
        }
    }

    /// The host mode, for the load message.
    pub(crate) fn mode_name() -> &'static str {
        match (Self::phys_placement(), regs::has_cntpoff()) {
            (Placement::Direct, true) => "VHE, both timers direct, CNTPOFF",
            (Placement::Direct, false) => "VHE, both timers direct",
            (Placement::Emulated, _) => "nVHE, physical timer emulated",
        }
    }
}
