// SPDX-License-Identifier: GPL-2.0

//! The RISC-V backend: KVM's `struct kvm_arch_timer_ops` for the logic in
//! [`crate::timer::vcpu`], with Sstc (`vstimecmp`, `htimedelta`) or SBI TIME
//! `set_timer` emulated with an hrtimer.
//!
//! The timer's behaviour is `VcpuTimer`'s, which the host tests run.  C is
//! reached only through the wrappers ([`regs`], `crate::kvm`,
//! `crate::hrtimer`, `crate::backend`): each op's one `unsafe` call turns
//! KVM's vCPU pointer into the type that states the op's context.

use core::ffi::c_void;
use core::sync::atomic::{AtomicU64, Ordering};

use kernel::c_str;
use kernel::ffi::{c_int, c_ulong};
use kernel::prelude::*;

use crate::backend::{c_stats, PerVcpu, Registration};
use crate::bindings;
use crate::hrtimer::{
    impl_has_hr_timer, HrTimer, HrTimerCallback, HrTimerCallbackContext, HrTimerRestart,
};
use crate::kvm::{self, Vcpu, VcpuDeinit, VcpuHandle, VcpuInit, VcpuOp};
use crate::timer::advance::Advance;
use crate::timer::clock::Clock;
use crate::timer::host_timer::HostClock;
use crate::timer::stats::Kick;
use crate::timer::vcpu::{Mode, Platform, Reg, RegError, VcpuTimer};
use crate::timer::VcpuLogic;

#[path = "riscv/regs.rs"]
mod regs;

use regs::Sstc;

/// The timer advance estimate new vCPUs start from: the last one a vCPU
/// reached, so that a VM's vCPUs need not learn it again from nothing.
static ADVANCE_SEED: AtomicU64 = AtomicU64::new(0);

/// A vCPU's timer state, owned by KVM's `vcpu->arch.timer.backend_priv`
/// from `vcpu_init` to `vcpu_deinit`.
///
/// # Invariants
///
/// `sstc` is `Some` exactly when `logic` runs in [`Mode::Sstc`].
#[pin_data]
pub(crate) struct VcpuState {
    #[pin]
    timer: HrTimer<VcpuState>,
    logic: VcpuTimer,
    vcpu: VcpuHandle,
    sstc: Option<Sstc>,
}

impl_has_hr_timer! {
    impl HasHrTimer<VcpuState> for VcpuState { self.timer }
}

impl HrTimerCallback for VcpuState {
    fn run(this: &Self, ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        ctx.restart_for(this.logic.expired(&Host::callback(this)))
    }
}

/// The host as [`VcpuTimer`] sees it, for one vCPU.
struct Host<'a> {
    state: &'a VcpuState,
    vcpu: &'a Vcpu,
    /// The op KVM runs on the thread that holds the vCPU; `None` in the
    /// host timer's callback.
    op: Option<VcpuOp<'a>>,
}

impl<'a> Host<'a> {
    /// For op `op` on `state`.
    fn op(state: &'a VcpuState, op: VcpuOp<'a>) -> Self {
        Self {
            state,
            vcpu: op.vcpu(),
            op: Some(op),
        }
    }

    /// For the host timer's callback on `state`.
    fn callback(state: &'a VcpuState) -> Self {
        Self {
            state,
            vcpu: state.vcpu.get(),
            op: None,
        }
    }
}

impl HostClock for Host<'_> {
    fn host_ns(&self) -> u64 {
        kvm::ktime_ns()
    }

    fn cpu(&self) -> u32 {
        kvm::this_cpu()
    }

    fn timer_start(&self, expires_ns: u64) {
        self.state.timer.start(expires_ns)
    }

    fn timer_cancel(&self) -> bool {
        self.state.timer.cancel()
    }
}

impl Platform for Host<'_> {
    fn host_cycles(&self) -> u64 {
        regs::host_cycles()
    }

    fn time_delta(&self) -> u64 {
        self.vcpu.time_delta()
    }

    fn set_time_delta(&self, delta: u64) {
        self.vcpu.set_time_delta(delta)
    }

    fn irq_raise(&self) -> Kick {
        self.vcpu.timer_irq_raise()
    }

    fn irq_raise_now(&self) {
        match self.op {
            Some(op) => op.timer_irq_raise_now(),
            // Only `pre_enter`, an op, raises now.  Not on the vCPU's
            // thread, `hvip` is not ours to write: raise it the usual way,
            // for the next entry.
            None => {
                self.vcpu.timer_irq_raise();
            }
        }
    }

    fn irq_clear(&self) {
        self.vcpu.timer_irq_clear()
    }

    fn irq_pending(&self) -> bool {
        self.vcpu.timer_irq_pending()
    }

    fn irq_enabled(&self) -> bool {
        self.vcpu.timer_irq_enabled()
    }

    fn load_csrs(&self, time_delta: u64, compare: Option<u64>) {
        self.vcpu.load_htimedelta(time_delta);
        // `VcpuTimer` passes a compare value only in `Mode::Sstc`, where
        // `sstc` is `Some` (type invariant).
        if let (Some(c), Some(sstc)) = (compare, self.state.sstc) {
            self.vcpu.load_vstimecmp(sstc, c);
        }
    }

    fn read_compare(&self) -> u64 {
        // Called in `Mode::Sstc` only (as `load_csrs`).
        self.state
            .sstc
            .map_or(u64::MAX, |sstc| self.vcpu.read_vstimecmp(sstc))
    }

    fn atomic<R>(&self, f: impl FnOnce() -> R) -> R {
        kvm::without_preemption(f)
    }

    fn kick(&self) -> Kick {
        self.vcpu.kick()
    }

    fn is_blocking(&self) -> bool {
        self.vcpu.is_blocking()
    }

    fn relax(&self) {
        kvm::relax()
    }
}

/// The vCPUs' states.
type States = PerVcpu<VcpuState>;

/// Run `f` on the state of the vCPU of `op`, with its [`Host`]; `default`
/// if there is none (never expected).
fn with<'a, R>(
    op: Option<VcpuOp<'a>>,
    default: R,
    f: impl FnOnce(&'a VcpuTimer, &Host<'a>) -> R,
) -> R {
    States::with(op, default, |s, op| f(&s.logic, &Host::op(s, op)))
}

unsafe extern "C" fn vcpu_init(vcpu: *mut bindings::kvm_vcpu) -> c_int {
    // SAFETY: `vcpu_init`, from `kvm_arch_vcpu_create()`: the vCPU being
    // created, which no one else reaches yet; KVM calls `vcpu_deinit`
    // before it frees it, also on the creation's error path.
    let Some(vcpu) = (unsafe { VcpuInit::from_raw(vcpu) }) else {
        return EINVAL.to_errno();
    };
    let hz = regs::timebase();
    let Some(clock) = Clock::new(hz) else {
        kvm::warn_ratelimited(c_str!("unusable timebase frequency"), hz);
        return EINVAL.to_errno();
    };
    let sstc = Sstc::probe();
    let mode = if sstc.is_some() {
        Mode::Sstc
    } else {
        Mode::Sbi
    };
    let advance = Advance::new(ADVANCE_SEED.load(Ordering::Relaxed), regs::advance_max_ns());
    let installed = States::install(vcpu, |vcpu| {
        // INVARIANT: `sstc` is `Some` exactly in `Mode::Sstc`.
        pin_init!(VcpuState {
            timer <- HrTimer::new(),
            logic: VcpuTimer::new(mode, clock, advance),
            vcpu,
            sstc,
        })
    });
    match installed {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

unsafe extern "C" fn vcpu_deinit(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_deinit`, from `kvm_arch_vcpu_destroy()` or the
    // creation's error path: no op of the vCPU runs now or later, and the
    // VM's debugfs file no longer lists it.
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
    with(op, (), |t, h| t.pre_enter(h))
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
        let st = state.logic.stats().snapshot();
        *out = c_stats(&st, state.logic.advance().ns());
    }
}

unsafe extern "C" fn vcpu_reset(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_reset`, from `kvm_riscv_reset_vcpu()`: at the vCPU's
    // creation, or for `KVM_REQ_VCPU_RESET` in `KVM_RUN` (which holds the
    // vCPU's mutex).
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    with(op, (), |t, h| t.reset(h))
}

unsafe extern "C" fn vcpu_load(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_load`, from `kvm_arch_vcpu_load()`: `vcpu_load()` of a
    // vCPU ioctl (which holds the vCPU's mutex), or that thread's preempt
    // notifier.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    with(op, (), |t, h| t.load(h))
}

unsafe extern "C" fn vcpu_put(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_put`, from `kvm_arch_vcpu_put()`: `vcpu_put()` of a
    // vCPU ioctl (which holds the vCPU's mutex), or that thread's preempt
    // notifier.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    with(op, (), |t, h| t.put(h))
}

unsafe extern "C" fn vcpu_sync(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_sync`, from `KVM_RUN` (which holds the vCPU's mutex),
    // after a guest exit.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    with(op, (), |t, h| t.sync(h))
}

unsafe extern "C" fn vcpu_pending(vcpu: *mut bindings::kvm_vcpu) -> bool {
    // SAFETY: `vcpu_pending`, from `kvm_vcpu_check_block()` in `KVM_RUN`
    // (which holds the vCPU's mutex).
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    with(op, false, |t, h| t.pending(h))
}

unsafe extern "C" fn next_event(vcpu: *mut bindings::kvm_vcpu, ncycles: u64) -> c_int {
    // SAFETY: `next_event`, from the SBI TIME handler in `KVM_RUN` (which
    // holds the vCPU's mutex).
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    with(op, EINVAL.to_errno(), |t, h| {
        t.set_timer(h, ncycles);
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
    with(op, EINVAL.to_errno(), |t, h| {
        *val = t.get_reg(h, reg);
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
    with(op, EINVAL.to_errno(), |t, h| match t.set_reg(h, reg, val) {
        Ok(()) => 0,
        Err(RegError::Invalid) => {
            let what = match reg {
                Reg::Frequency => c_str!("ONE_REG timer frequency differs from the host's"),
                _ => c_str!("ONE_REG timer state is neither ON nor OFF"),
            };
            kvm::warn_ratelimited(what, val);
            EINVAL.to_errno()
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
        if Sstc::probe().is_some() {
            "Sstc"
        } else {
            "SBI set_timer + hrtimer"
        }
    }
}
