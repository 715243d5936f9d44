// SPDX-License-Identifier: GPL-2.0

//! The per-vCPU skeleton both architectures' backends run their timer logic
//! in: [`VcpuState<L>`] holds the logic, the vCPU's host timer and the vCPU;
//! [`Host<'_, L>`] is the host as the logic sees it, with the host clock and
//! the host timer ([`HostClock`]) the same on both; the host timer's
//! callback, `vcpu_init`, `vcpu_deinit`, the ops both tables have
//! ([`vcpu_reset`], [`vcpu_load`], [`vcpu_put`], [`vcpu_pending`]), the
//! timer advance's bound and seed ([`new_advance`]) and the statistics
//! export are written once here.
//!
//! An architecture implements [`TimerLogic`] for its logic (`VcpuTimer`,
//! `El1Timers`) and the logic's `Platform` for `Host<'_, ItsLogic>`, with its
//! register wrappers (`rust/arch/*/regs.rs`).  Its own `extern "C"` ops turn
//! KVM's pointer into a context type (`crate::kvm`) with their one `unsafe`
//! call and hand it to [`VcpuState::with`].  The only `unsafe` here is that
//! same entry, in the shared ops and the C-called [`kvt_rust_vcpu_stats`].

use core::ffi::c_void;
use core::sync::atomic::{AtomicU64, Ordering};

use kernel::ffi::c_int;
use kernel::prelude::*;

use crate::backend::{c_stats, PerVcpu};
use crate::bindings;
use crate::hrtimer::{
    impl_has_hr_timer, HrTimer, HrTimerCallback, HrTimerCallbackContext, HrTimerRestart,
};
use crate::kvm::{self, Vcpu, VcpuDeinit, VcpuHandle, VcpuInit, VcpuOp};
use crate::timer::advance::Advance;
use crate::timer::clock::Clock;
use crate::timer::host_timer::HostClock;
use crate::timer::stats::Stats;
use crate::timer::VcpuLogic;

/// A per-vCPU timer logic of `rust/timer/`, as the skeleton keeps it.
pub(crate) trait TimerLogic: Sized + Send + Sync + 'static {
    /// What the architecture's register wrappers need besides the vCPU,
    /// for the state's whole life, and what it must match in the logic
    /// (the state's invariant).
    type Hw: Send + Sync;

    /// The vCPU's counters.
    fn stats(&self) -> &Stats;

    /// The vCPU's timer advance ([`new_advance`] made it).
    fn advance(&self) -> &Advance;

    /// The estimate of a running vCPU's delivery path, in ns (0 where the
    /// architecture has none).
    fn running_advance_ns(&self) -> u64 {
        0
    }
}

/// The timer advance estimate new vCPUs start from: the last one a
/// destroyed vCPU had reached, so that a VM's vCPUs need not learn it again
/// from nothing.
static ADVANCE_SEED: AtomicU64 = AtomicU64::new(0);

/// The timer advance of a new vCPU: from [`ADVANCE_SEED`], bounded by the
/// `advance_max_ns` module parameter as it is now.
pub(crate) fn new_advance() -> Advance {
    Advance::new(ADVANCE_SEED.load(Ordering::Relaxed), kvm::advance_max_ns())
}

/// A [`TimerLogic`] that runs on its [`Host`] ([`VcpuLogic`]): what the
/// skeleton's callback and ops call.
pub(crate) trait HostedLogic: TimerLogic + for<'a> VcpuLogic<Host<'a, Self>> {}

impl<L> HostedLogic for L where L: TimerLogic + for<'a> VcpuLogic<Host<'a, L>> {}

/// A vCPU's timer state, owned by KVM's per-vCPU `backend_priv` from
/// `vcpu_init` to `vcpu_deinit` ([`PerVcpu`]).
///
/// # Invariants
///
/// - `vcpu` is the vCPU whose `backend_priv` holds this state.
/// - `hw` matches `logic` as [`TimerLogic::Hw`] of `L` says.
#[pin_data]
pub(crate) struct VcpuState<L: TimerLogic> {
    #[pin]
    timer: HrTimer<VcpuState<L>>,
    logic: L,
    vcpu: VcpuHandle,
    hw: L::Hw,
}

impl_has_hr_timer! {
    impl<L: TimerLogic> HasHrTimer<VcpuState<L>> for VcpuState<L> { self.timer }
}

impl<L: HostedLogic> HrTimerCallback for VcpuState<L> {
    fn run(this: &Self, ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        ctx.restart_for(this.remote(|logic, host| logic.expired(host)))
    }
}

/// The states of the vCPUs, behind their private pointers.
pub(crate) type States<L> = PerVcpu<VcpuState<L>>;

impl<L: HostedLogic> VcpuState<L> {
    /// `vcpu_init`: give the vCPU being created its state, around the logic
    /// and hardware token that `make` builds for a counter of `hz`.  An
    /// errno if `vcpu` is `None`, `hz` is unusable (warned as `what`), or
    /// the allocation fails.
    pub(crate) fn init(
        vcpu: Option<VcpuInit<'_>>,
        hz: u64,
        what: &'static CStr,
        make: impl FnOnce(Clock) -> (L, L::Hw),
    ) -> c_int {
        let Some(vcpu) = vcpu else {
            return EINVAL.to_errno();
        };
        let Some(clock) = Clock::new(hz) else {
            kvm::warn_ratelimited(what, hz);
            return EINVAL.to_errno();
        };
        // INVARIANT: `make` builds the logic and its token together.
        let (logic, hw) = make(clock);
        let installed = States::<L>::install(vcpu, |vcpu| {
            // INVARIANT: `install` passes the handle of the vCPU it hangs
            // the state on.
            pin_init!(Self {
                timer <- HrTimer::new(),
                logic,
                vcpu,
                hw,
            })
        });
        match installed {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// `vcpu_deinit`: take the state off the vCPU being destroyed, with its
    /// host timer cancelled, leave the advance estimate it learnt, if any,
    /// to the next vCPUs ([`ADVANCE_SEED`]), and free it.
    pub(crate) fn deinit(vcpu: Option<VcpuDeinit<'_>>) {
        if let Some(state) = vcpu.and_then(States::<L>::remove) {
            let learnt = state.logic.advance().ns();
            if learnt != 0 {
                ADVANCE_SEED.store(learnt, Ordering::Relaxed);
            }
        }
    }

    /// The statistics, as the C `struct kvt_stats`.
    fn c_stats(&self) -> bindings::kvt_stats {
        c_stats(
            &self.logic.stats().snapshot(),
            self.logic.advance().ns(),
            self.logic.running_advance_ns(),
        )
    }

    /// Run `f` on the logic of the vCPU of `op`, with its [`Host`];
    /// `default` if there is none (never expected).
    pub(crate) fn with<'a, R>(
        op: Option<VcpuOp<'a>>,
        default: R,
        f: impl FnOnce(&'a L, &Host<'a, L>) -> R,
    ) -> R {
        States::<L>::with(op, default, |s, op| f(&s.logic, &Host::for_op(s, op)))
    }

    /// Run `f` on the logic, with a [`Host`] for a context that is not an
    /// op on the vCPU's thread: the host timer's callback, and on arm64 the
    /// host interrupt and the vGIC's resample.
    pub(crate) fn remote<R>(&self, f: impl FnOnce(&L, &Host<'_, L>) -> R) -> R {
        f(&self.logic, &Host::remote(self))
    }
}

/// The host as a timer logic `L` sees it, for one vCPU: the logic's
/// `Platform` is implemented for it by the architecture.
pub(crate) struct Host<'a, L: TimerLogic> {
    state: &'a VcpuState<L>,
    vcpu: &'a Vcpu,
    /// The op KVM runs on the thread that holds the vCPU; `None` in the
    /// host timer's callback, and on arm64 the host interrupt and the
    /// vGIC's resample.
    op: Option<VcpuOp<'a>>,
}

impl<'a, L: TimerLogic> Host<'a, L> {
    /// For op `op` on `state`.
    fn for_op(state: &'a VcpuState<L>, op: VcpuOp<'a>) -> Self {
        Self {
            state,
            vcpu: op.vcpu(),
            op: Some(op),
        }
    }

    /// For a context that is not an op on the vCPU's thread.
    fn remote(state: &'a VcpuState<L>) -> Self {
        Self {
            state,
            vcpu: state.vcpu.get(),
            op: None,
        }
    }

    /// The vCPU.
    pub(crate) fn vcpu(&self) -> &'a Vcpu {
        self.vcpu
    }

    /// The op on the vCPU's thread, if this runs in one.
    pub(crate) fn op(&self) -> Option<VcpuOp<'a>> {
        self.op
    }

    /// The state's hardware token, as [`TimerLogic::Hw`] says.
    #[cfg_attr(CONFIG_ARM64, expect(dead_code, reason = "arm64 has no token"))]
    pub(crate) fn hw(&self) -> &'a L::Hw {
        &self.state.hw
    }
}

impl<L: TimerLogic> HostClock for Host<'_, L> {
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
    let (state, out) = unsafe {
        (
            States::<crate::arch::Logic>::from_private(priv_),
            out.as_mut(),
        )
    };
    if let (Some(state), Some(out)) = (state, out) {
        *out = state.c_stats();
    }
}

// The ops both tables have, for either logic.  Each holds the one `unsafe`
// call that turns KVM's pointer into a `VcpuOp`; KVM reaches them, on both
// architectures, from `kvm_arch_vcpu_load()`, `kvm_arch_vcpu_put()`, its
// vCPU reset and `kvm_cpu_has_pending_timer()` (Documentation/design.rst,
// "RISC-V ops" and "arm64 ops").

/// `vcpu_reset`.
pub(crate) unsafe extern "C" fn vcpu_reset<L: HostedLogic>(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_reset`, from `kvm_riscv_reset_vcpu()` (at the vCPU's
    // creation, which no one else reaches yet) or `kvm_reset_vcpu()`
    // (`KVM_ARM_VCPU_INIT`), or for `KVM_REQ_VCPU_RESET` in `KVM_RUN`; the
    // ioctls hold the vCPU's mutex.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    VcpuState::<L>::with(op, (), |t, h| t.reset(h))
}

/// `vcpu_load`.
pub(crate) unsafe extern "C" fn vcpu_load<L: HostedLogic>(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_load`, from `kvm_arch_vcpu_load()`: `vcpu_load()` of a
    // vCPU ioctl (which holds the vCPU's mutex), or that thread's preempt
    // notifier.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    VcpuState::<L>::with(op, (), |t, h| t.load(h))
}

/// `vcpu_put`.
pub(crate) unsafe extern "C" fn vcpu_put<L: HostedLogic>(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: `vcpu_put`, from `kvm_arch_vcpu_put()`: `vcpu_put()` of a
    // vCPU ioctl (which holds the vCPU's mutex), or that thread's preempt
    // notifier.
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    VcpuState::<L>::with(op, (), |t, h| t.put(h))
}

/// `vcpu_pending`.
pub(crate) unsafe extern "C" fn vcpu_pending<L: HostedLogic>(
    vcpu: *mut bindings::kvm_vcpu,
) -> bool {
    // SAFETY: `vcpu_pending`, from `kvm_vcpu_check_block()` in `KVM_RUN`
    // (which holds the vCPU's mutex).
    let op = unsafe { VcpuOp::from_raw(vcpu) };
    VcpuState::<L>::with(op, false, |t, h| t.pending(h) || t.keep_running(h))
}
