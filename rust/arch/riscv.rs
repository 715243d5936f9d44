// SPDX-License-Identifier: GPL-2.0

//! The RISC-V backend: KVM's `struct kvm_arch_timer_ops` for the logic in
//! [`crate::timer::vcpu`], with Sstc (`vstimecmp`, `htimedelta`) or SBI TIME
//! `set_timer` emulated with an hrtimer.
//!
//! The timer's behaviour is `VcpuTimer`'s, which the host tests run, in the
//! per-vCPU skeleton of `crate::vcpu_state`.  C is reached only through the
//! wrappers ([`regs`], `crate::kvm`, `crate::hrtimer`, `crate::backend`):
//! each op's one `unsafe` call turns KVM's vCPU pointer into the type that
//! states the op's context.

use kernel::c_str;
use kernel::ffi::{c_int, c_ulong};
use kernel::prelude::*;

use crate::backend::Registration;
use crate::bindings;
use crate::kvm::{self, VcpuDeinit, VcpuInit, VcpuOp};
use crate::timer::advance::Advance;
use crate::timer::stats::{Kick, Stats};
use crate::timer::vcpu::{Mode, Platform, Reg, RegError, VcpuTimer};
use crate::vcpu_state::{self, TimerLogic, VcpuState};

#[path = "riscv/regs.rs"]
mod regs;

use regs::Sstc;

/// The logic the skeleton runs on this architecture.
pub(crate) type Logic = VcpuTimer;

/// The host as [`VcpuTimer`] sees it, for one vCPU.
type Host<'a> = vcpu_state::Host<'a, VcpuTimer>;

/// The vCPU's timer state.
type State = VcpuState<VcpuTimer>;

impl TimerLogic for VcpuTimer {
    /// The Sstc token: `Some` exactly when the logic runs in
    /// [`Mode::Sstc`].
    type Hw = Option<Sstc>;

    fn stats(&self) -> &Stats {
        VcpuTimer::stats(self)
    }

    fn advance(&self) -> &Advance {
        VcpuTimer::advance(self)
    }

    fn running_advance_ns(&self) -> u64 {
        self.running_advance().ns()
    }
}

impl Platform for Host<'_> {
    fn host_cycles(&self) -> u64 {
        regs::host_cycles()
    }

    fn time_delta(&self) -> u64 {
        self.vcpu().time_delta()
    }

    fn set_time_delta(&self, delta: u64) {
        self.vcpu().set_time_delta(delta)
    }

    fn guest_cycles(&self) -> u64 {
        self.vcpu().guest_cycles()
    }

    fn irq_raise(&self) -> Kick {
        self.vcpu().timer_irq_raise()
    }

    fn irq_raise_now(&self) {
        match self.op() {
            Some(op) => op.timer_irq_raise_now(),
            // Only `pre_enter`, an op, raises now.  Not on the vCPU's
            // thread, `hvip` is not ours to write: raise it the usual way,
            // for the next entry.
            None => {
                self.vcpu().timer_irq_raise();
            }
        }
    }

    fn irq_clear(&self) {
        self.vcpu().timer_irq_clear()
    }

    fn irq_pending(&self) -> bool {
        self.vcpu().timer_irq_pending()
    }

    fn irq_enabled(&self) -> bool {
        self.vcpu().timer_irq_enabled()
    }

    fn load_csrs(&self, time_delta: u64, compare: Option<u64>) {
        self.vcpu().load_htimedelta(time_delta);
        // `VcpuTimer` passes a compare value only in `Mode::Sstc`, where
        // the token is `Some` (`VcpuState`'s invariant).
        if let (Some(c), Some(sstc)) = (compare, *self.hw()) {
            self.vcpu().load_vstimecmp(sstc, c);
        }
    }

    fn read_compare(&self) -> u64 {
        // Called in `Mode::Sstc` only (as `load_csrs`).
        self.hw()
            .map_or(u64::MAX, |sstc| self.vcpu().read_vstimecmp(sstc))
    }

    fn atomic<R>(&self, f: impl FnOnce() -> R) -> R {
        kvm::without_preemption(f)
    }

    fn kick(&self) -> Kick {
        self.vcpu().kick()
    }

    fn is_blocking(&self) -> bool {
        self.vcpu().is_blocking()
    }

    fn running_here(&self) -> bool {
        self.vcpu().is_running_here()
    }

    fn relax(&self) {
        kvm::relax()
    }

    fn wfi_untrap_ok(&self) -> bool {
        kvm::direct_wfi()
    }

    fn set_wfi_trap(&self, trap: bool) {
        // Only `pre_enter` and `sync`, ops, change the trap: KVM's saved
        // `hstatus` is not ours to write from elsewhere.
        if let Some(op) = self.op() {
            op.set_wfi_trap(trap);
        }
    }
}

unsafe extern "C" fn vcpu_init(vcpu: *mut bindings::kvm_vcpu) -> c_int {
    // SAFETY: `vcpu_init`, from `kvm_arch_vcpu_create()`: the vCPU being
    // created, which no one else reaches yet; KVM calls `vcpu_deinit`
    // before it frees it, also on the creation's error path.
    let vcpu = unsafe { VcpuInit::from_raw(vcpu) };
    let hz = regs::timebase();
    State::init(vcpu, hz, c_str!("unusable timebase frequency"), |clock| {
        let sstc = Sstc::probe();
        let mode = if sstc.is_some() {
            Mode::Sstc
        } else {
            Mode::Sbi
        };
        // INVARIANT: `sstc` is `Some` exactly in `Mode::Sstc`.
        (VcpuTimer::new(mode, clock, vcpu_state::new_advance()), sstc)
    })
}

unsafe extern "C" fn vcpu_deinit(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_deinit`, from `kvm_arch_vcpu_destroy()` or the
    // creation's error path: no op of the vCPU runs now or later, and the
    // VM's debugfs file no longer lists it.
    let vcpu = unsafe { VcpuDeinit::from_raw(vcpu) };
    State::deinit(vcpu)
}

unsafe extern "C" fn vcpu_pre_enter(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_pre_enter`, from `KVM_RUN` (which holds the vCPU's
    // mutex), just before guest entry.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    State::with(op, (), |t, h| t.pre_enter(h))
}

unsafe extern "C" fn vcpu_sync(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_sync`, from `KVM_RUN` (which holds the vCPU's mutex),
    // after a guest exit.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    State::with(op, (), |t, h| t.sync(h))
}

unsafe extern "C" fn next_event(vcpu: *mut bindings::kvm_vcpu, ncycles: u64) -> c_int {
    // SAFETY: `next_event`, from the SBI TIME handler in `KVM_RUN` (which
    // holds the vCPU's mutex).
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    State::with(op, EINVAL.to_errno(), |t, h| {
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
    State::with(op, EINVAL.to_errno(), |t, h| {
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
    State::with(op, EINVAL.to_errno(), |t, h| match t.set_reg(h, reg, val) {
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

/// The ops, with `vcpu_sync` or without.
const fn ops(sync: bool) -> bindings::kvm_arch_timer_ops {
    bindings::kvm_arch_timer_ops {
        vcpu_init: Some(vcpu_init),
        vcpu_deinit: Some(vcpu_deinit),
        vcpu_reset: Some(vcpu_state::vcpu_reset::<VcpuTimer>),
        vcpu_load: Some(vcpu_state::vcpu_load::<VcpuTimer>),
        vcpu_put: Some(vcpu_state::vcpu_put::<VcpuTimer>),
        vcpu_sync: if sync { Some(vcpu_sync) } else { None },
        vcpu_pre_enter: Some(vcpu_pre_enter),
        vcpu_pending: Some(vcpu_state::vcpu_pending::<VcpuTimer>),
        next_event: Some(next_event),
        get_reg: Some(get_reg),
        set_reg: Some(set_reg),
    }
}

/// With Sstc: `vcpu_sync` saves `vstimecmp` after every exit.
static OPS_SSTC: bindings::kvm_arch_timer_ops = ops(true);

/// Without Sstc every vCPU is in [`Mode::Sbi`], whose `sync` does nothing:
/// no `vcpu_sync` (optional in the patch series), so no call on the exit
/// path.  The host's Sstc, which decides every vCPU's mode, is fixed at
/// boot.
static OPS_SBI: bindings::kvm_arch_timer_ops = ops(false);

/// The registered backend.
pub(crate) struct Backend(Registration);

impl Backend {
    /// Register with KVM: VMs created from now on use this timer.
    pub(crate) fn register() -> Result<Self> {
        let ops = if Sstc::probe().is_some() {
            &OPS_SSTC
        } else {
            &OPS_SBI
        };
        Registration::new(ops).map(Self)
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
