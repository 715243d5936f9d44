// SPDX-License-Identifier: GPL-2.0

//! The RISC-V backend: KVM's `struct kvm_arch_timer_ops` for the logic in
//! [`crate::timer::vcpu`], with Sstc (`vstimecmp`, `htimedelta`) or SBI TIME
//! `set_timer` emulated with an hrtimer.
//!
//! Everything that touches C lives here or in the wrappers; the timer's
//! behaviour is `VcpuTimer`'s, which the host tests run.

use core::ffi::c_void;
use core::sync::atomic::{AtomicU64, Ordering};

use kernel::c_str;
use kernel::ffi::{c_int, c_ulong};
use kernel::prelude::*;

use crate::backend::{write_stats, PerVcpu, Registration};
use crate::bindings;
use crate::hrtimer::{
    impl_has_hr_timer, HrTimer, HrTimerCallback, HrTimerCallbackContext, HrTimerRestart,
};
use crate::kvm::{self, VcpuDeinit, VcpuHandle, VcpuInit, VcpuOp};
use crate::timer::advance::Advance;
use crate::timer::clock::Clock;
use crate::timer::stats::Kick;
use crate::timer::vcpu::{Mode, Platform, Reg, RegError, VcpuTimer};

/// The timer advance estimate new vCPUs start from: the last one a vCPU
/// reached, so that a VM's vCPUs need not learn it again from nothing.
static ADVANCE_SEED: AtomicU64 = AtomicU64::new(0);

/// A vCPU's timer state, owned by KVM's `vcpu->arch.timer.backend_priv`
/// from `vcpu_init` to `vcpu_deinit`.
#[pin_data]
pub(crate) struct VcpuState {
    #[pin]
    timer: HrTimer<VcpuState>,
    logic: VcpuTimer,
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

/// The host as [`VcpuTimer`] sees it, for one vCPU.
struct Host<'a>(&'a VcpuState);

impl Platform for Host<'_> {
    fn host_cycles(&self) -> u64 {
        // SAFETY: reads the `time` CSR; no preconditions.
        unsafe { bindings::kvt_riscv_host_cycles() }
    }

    fn host_ns(&self) -> u64 {
        kvm::ktime_ns()
    }

    fn time_delta(&self) -> u64 {
        // SAFETY: the vCPU (and its VM) outlive its state (`Vcpu` invariant).
        unsafe { bindings::kvt_riscv_time_delta(self.0.vcpu.get().as_ptr()) }
    }

    fn set_time_delta(&self, delta: u64) {
        // SAFETY: as in `time_delta`.
        unsafe { bindings::kvt_riscv_set_time_delta(self.0.vcpu.get().as_ptr(), delta) }
    }

    fn cpu(&self) -> u32 {
        kvm::this_cpu()
    }

    fn timer_start(&self, expires_ns: u64) {
        self.0.timer.start(expires_ns)
    }

    fn timer_cancel(&self) -> bool {
        self.0.timer.cancel()
    }

    fn irq_raise(&self) -> Kick {
        // SAFETY: as in `time_delta`; takes a raw spinlock, fine in hard IRQ.
        kvm::kick_kind(unsafe { bindings::kvt_riscv_timer_irq_raise(self.0.vcpu.get().as_ptr()) })
    }

    fn irq_raise_now(&self) {
        // SAFETY: as in `time_delta`; only `pre_enter` calls this, with
        // interrupts off and this vCPU loaded on this CPU, so `hvip` is its.
        unsafe { bindings::kvt_riscv_timer_irq_raise_now(self.0.vcpu.get().as_ptr()) };
    }

    fn irq_clear(&self) {
        // SAFETY: as in `irq_raise`.
        unsafe { bindings::kvt_riscv_timer_irq_clear(self.0.vcpu.get().as_ptr()) };
    }

    fn irq_pending(&self) -> bool {
        // SAFETY: as in `time_delta`.
        unsafe { bindings::kvt_riscv_timer_irq_pending(self.0.vcpu.get().as_ptr()) }
    }

    fn irq_enabled(&self) -> bool {
        // SAFETY: as in `time_delta`.
        unsafe { bindings::kvt_riscv_timer_irq_enabled(self.0.vcpu.get().as_ptr()) }
    }

    fn load_csrs(&self, time_delta: u64, compare: Option<u64>) {
        // SAFETY: called from load (preemption disabled) or within
        // `atomic`, with this vCPU loaded on this CPU: the H-extension CSRs
        // are this vCPU's.
        unsafe { bindings::kvt_riscv_write_htimedelta(time_delta) };
        if let Some(c) = compare {
            // SAFETY: as above; only used with Sstc.
            unsafe { bindings::kvt_riscv_write_vstimecmp(c) };
        }
    }

    fn read_compare(&self) -> u64 {
        // SAFETY: called from sync, after a guest exit with interrupts off
        // and this vCPU loaded; Sstc only.
        unsafe { bindings::kvt_riscv_read_vstimecmp() }
    }

    fn atomic<R>(&self, f: impl FnOnce() -> R) -> R {
        kvm::without_preemption(f)
    }

    fn kick(&self) -> Kick {
        self.0.vcpu.get().kick()
    }

    fn is_blocking(&self) -> bool {
        self.0.vcpu.get().is_blocking()
    }

    fn relax(&self) {
        kvm::relax()
    }
}

/// The vCPUs' states.
type States = PerVcpu<VcpuState>;

unsafe extern "C" fn vcpu_init(vcpu: *mut bindings::kvm_vcpu) -> c_int {
    // SAFETY: `vcpu_init`, from `kvm_arch_vcpu_create()`: the vCPU being
    // created, which no one else reaches yet; KVM calls `vcpu_deinit`
    // before it frees it, also on the creation's error path.
    let Some(vcpu) = (unsafe { VcpuInit::from_raw(vcpu) }) else {
        return EINVAL.to_errno();
    };
    // SAFETY: no preconditions.
    let hz = unsafe { bindings::kvt_riscv_timebase() };
    let Some(clock) = Clock::new(hz) else {
        kvm::warn_ratelimited(c_str!("unusable timebase frequency"), hz);
        return EINVAL.to_errno();
    };
    // SAFETY: no preconditions.
    let mode = if unsafe { bindings::kvt_riscv_has_sstc() } {
        Mode::Sstc
    } else {
        Mode::Sbi
    };
    // SAFETY: no preconditions.
    let max_ns = u64::from(unsafe { bindings::kvt_advance_max_ns() });
    let advance = Advance::new(ADVANCE_SEED.load(Ordering::Relaxed), max_ns);
    let installed = States::install(vcpu, |vcpu| {
        pin_init!(VcpuState {
            timer <- HrTimer::new(),
            logic: VcpuTimer::new(mode, clock, advance),
            vcpu,
        })
    });
    match installed {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

unsafe extern "C" fn vcpu_deinit(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_deinit`, from `kvm_arch_vcpu_destroy()` or the creation's
    // error path: no op of the vCPU runs now or later, and the VM's debugfs
    // file no longer lists it.
    let Some(vcpu) = (unsafe { VcpuDeinit::from_raw(vcpu) }) else {
        return;
    };
    // The state comes back with its host timer cancelled.
    let Some(state) = States::remove(vcpu) else {
        return;
    };
    let learnt = state.logic.advance().ns();
    if learnt != 0 {
        ADVANCE_SEED.store(learnt, Ordering::Relaxed);
    }
}

unsafe extern "C" fn vcpu_pre_enter(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_pre_enter`, from `KVM_RUN` (which holds the vCPU's
    // mutex), just before guest entry.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    States::with(op, (), |s, _| s.logic.pre_enter(&Host(s)))
}

/// The statistics of one vCPU, for the debugfs file (shim/riscv.c).
///
/// # Safety
///
/// `priv_` is the backend state of a live vCPU of ours (its
/// `backend_priv`), `out` points to a writable `struct kvt_stats`.
#[no_mangle]
pub(crate) unsafe extern "C" fn kvt_rust_vcpu_stats(
    priv_: *mut c_void,
    out: *mut bindings::kvt_stats,
) {
    // SAFETY: by the function's contract.
    if let Some(state) = unsafe { States::from_private(priv_) } {
        let st = state.logic.stats().snapshot();
        // SAFETY: the caller passes a writable `struct kvt_stats`.
        unsafe { write_stats(&st, state.logic.advance().ns(), out) };
    }
}

unsafe extern "C" fn vcpu_reset(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_reset`, from `kvm_riscv_reset_vcpu()`: at the vCPU's creation, or
    // for `KVM_REQ_VCPU_RESET` in `KVM_RUN` (which holds the vCPU's mutex).
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    States::with(op, (), |s, _| s.logic.reset(&Host(s)))
}

unsafe extern "C" fn vcpu_load(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_load`, from `kvm_arch_vcpu_load()`: `vcpu_load()` of a vCPU ioctl
    // (which holds the vCPU's mutex), or that thread's preempt notifier.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    States::with(op, (), |s, _| s.logic.load(&Host(s)))
}

unsafe extern "C" fn vcpu_put(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_put`, from `kvm_arch_vcpu_put()`: `vcpu_put()` of a vCPU ioctl
    // (which holds the vCPU's mutex), or that thread's preempt notifier.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    States::with(op, (), |s, _| s.logic.put(&Host(s)))
}

unsafe extern "C" fn vcpu_sync(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_sync`, from `KVM_RUN` (which holds the vCPU's mutex), after a
    // guest exit.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    States::with(op, (), |s, _| s.logic.sync(&Host(s)))
}

unsafe extern "C" fn vcpu_pending(vcpu: *mut bindings::kvm_vcpu) -> bool {
    // SAFETY: `vcpu_pending`, from `kvm_vcpu_check_block()` in `KVM_RUN` (which
    // holds the vCPU's mutex).
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    States::with(op, false, |s, _| s.logic.pending(&Host(s)))
}

unsafe extern "C" fn next_event(vcpu: *mut bindings::kvm_vcpu, ncycles: u64) -> c_int {
    // SAFETY: `next_event`, from the SBI TIME handler in `KVM_RUN` (which
    // holds the vCPU's mutex).
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    States::with(op, EINVAL.to_errno(), |s, _| {
        s.logic.set_timer(&Host(s), ncycles);
        0
    })
}

unsafe extern "C" fn get_reg(vcpu: *mut bindings::kvm_vcpu, num: c_ulong, val: *mut u64) -> c_int {
    // SAFETY: `get_reg`, from `KVM_GET_ONE_REG` (which holds the vCPU's
    // mutex); `val` points to the ioctl's local `u64`, ours for the call.
    let (op, val) = unsafe { (VcpuOp::from_raw(vcpu), val.as_mut()) };
    let Some(reg) = Reg::from_num(num as u64) else {
        return ENOENT.to_errno();
    };
    let Some(val) = val else {
        return EINVAL.to_errno();
    };
    States::with(op, EINVAL.to_errno(), |s, _| {
        *val = s.logic.get_reg(&Host(s), reg);
        0
    })
}

unsafe extern "C" fn set_reg(vcpu: *mut bindings::kvm_vcpu, num: c_ulong, val: u64) -> c_int {
    // SAFETY: `set_reg`, from `KVM_SET_ONE_REG` (which holds the vCPU's
    // mutex).
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    let Some(reg) = Reg::from_num(num as u64) else {
        return ENOENT.to_errno();
    };
    States::with(op, EINVAL.to_errno(), |s, _| {
        match s.logic.set_reg(&Host(s), reg, val) {
            Ok(()) => 0,
            Err(RegError::Invalid) => {
                let what = match reg {
                    Reg::Frequency => c_str!("ONE_REG timer frequency differs from the host's"),
                    _ => c_str!("ONE_REG timer state is neither ON nor OFF"),
                };
                kvm::warn_ratelimited(what, val);
                EINVAL.to_errno()
            }
        }
    })
}

static OPS: bindings::kvm_arch_timer_ops = bindings::kvm_arch_timer_ops {
    vcpu_init: Some(vcpu_init),
    vcpu_deinit: Some(vcpu_deinit),
    vcpu_reset: Some(vcpu_reset),
    vcpu_load: Some(vcpu_load),
    vcpu_put: Some(vcpu_put),
    vcpu_sync: Some(vcpu_sync),
    vcpu_pre_enter: Some(vcpu_pre_enter),
    vcpu_pending: Some(vcpu_pending),
    next_event: Some(next_event),
    get_reg: Some(get_reg),
    set_reg: Some(set_reg),
};

/// The registered backend.
pub(crate) struct Backend(Registration);

impl Backend {
    /// Register with KVM: VMs created from now on use this timer.
    pub(crate) fn register() -> Result<Self> {
        Registration::new(&OPS).map(Self)
    }

    /// Which mode new vCPUs use on this host.
    pub(crate) fn mode_name() -> &'static str {
        // SAFETY: no preconditions.
        if unsafe { bindings::kvt_riscv_has_sstc() } {
            "Sstc"
        } else {
            "SBI set_timer + hrtimer"
        }
    }
}
