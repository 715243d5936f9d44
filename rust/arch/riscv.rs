// SPDX-License-Identifier: GPL-2.0

//! The RISC-V backend: KVM's `struct kvm_arch_timer_ops` for the logic in
//! [`crate::timer::vcpu`], with Sstc (`vstimecmp`, `htimedelta`) or SBI TIME
//! `set_timer` emulated with an hrtimer.
//!
//! Everything that touches C lives here or in the wrappers; the timer's
//! behaviour is `VcpuTimer`'s, which the host tests run.

use core::ffi::c_void;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, Ordering};

use kernel::c_str;
use kernel::ffi::{c_int, c_ulong};
use kernel::prelude::*;

use crate::bindings;
use crate::hrtimer::{HasHrTimer, HrTimer, HrTimerCallback, HrTimerRestart};
use crate::kvm::{self, Vcpu};
use crate::timer::advance::Advance;
use crate::timer::clock::Clock;
use crate::timer::stats::{Kick, LATE_BUCKETS};
use crate::timer::vcpu::{Expiry, Mode, Platform, Reg, RegError, VcpuTimer};

/// The timer advance estimate new vCPUs start from: the last one a vCPU
/// reached, so that a VM's vCPUs need not learn it again from nothing.
static ADVANCE_SEED: AtomicU64 = AtomicU64::new(0);

// `struct kvt_stats` (shim) and `Snapshot` have the same histogram.
const _: () = assert!(bindings::KVT_LATE_BUCKETS as usize == LATE_BUCKETS);

/// A vCPU's timer state, owned by KVM's `vcpu->arch.timer.backend_priv`
/// from `vcpu_init` to `vcpu_deinit`.
#[pin_data]
pub(crate) struct VcpuState {
    #[pin]
    timer: HrTimer<VcpuState>,
    logic: VcpuTimer,
    vcpu: Vcpu,
}

// SAFETY: `timer_container_of` steps back from the `timer` field by its
// offset, to the `VcpuState` that embeds it.
unsafe impl HasHrTimer<VcpuState> for VcpuState {
    unsafe fn timer_container_of(timer: *mut HrTimer<Self>) -> *mut Self {
        // SAFETY: the caller passes the timer embedded in a `VcpuState`, so
        // stepping back by its offset stays inside that allocation.
        unsafe { timer.byte_sub(offset_of!(Self, timer)).cast::<Self>() }
    }
}

impl HrTimerCallback for VcpuState {
    fn run(this: &Self) -> HrTimerRestart {
        match this.logic.expired(&Host(this)) {
            Expiry::Done => HrTimerRestart::NoRestart,
            Expiry::Again(ns) => {
                this.timer.set_expires(ns);
                HrTimerRestart::Restart
            }
        }
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
        unsafe { bindings::kvt_riscv_time_delta(self.0.vcpu.as_ptr()) }
    }

    fn set_time_delta(&self, delta: u64) {
        // SAFETY: as in `time_delta`.
        unsafe { bindings::kvt_riscv_set_time_delta(self.0.vcpu.as_ptr(), delta) }
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
        kvm::kick_kind(unsafe { bindings::kvt_riscv_timer_irq_raise(self.0.vcpu.as_ptr()) })
    }

    fn irq_raise_now(&self) {
        // SAFETY: as in `time_delta`; only `pre_enter` calls this, with
        // interrupts off and this vCPU loaded on this CPU, so `hvip` is its.
        unsafe { bindings::kvt_riscv_timer_irq_raise_now(self.0.vcpu.as_ptr()) };
    }

    fn irq_clear(&self) {
        // SAFETY: as in `irq_raise`.
        unsafe { bindings::kvt_riscv_timer_irq_clear(self.0.vcpu.as_ptr()) };
    }

    fn irq_pending(&self) -> bool {
        // SAFETY: as in `time_delta`.
        unsafe { bindings::kvt_riscv_timer_irq_pending(self.0.vcpu.as_ptr()) }
    }

    fn irq_enabled(&self) -> bool {
        // SAFETY: as in `time_delta`.
        unsafe { bindings::kvt_riscv_timer_irq_enabled(self.0.vcpu.as_ptr()) }
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
        self.0.vcpu.kick()
    }

    fn is_blocking(&self) -> bool {
        self.0.vcpu.is_blocking()
    }

    fn relax(&self) {
        kvm::relax()
    }
}

/// Run `f` on the state of `vcpu`; `default` if it has none (never expected:
/// KVM calls no timer op outside init..deinit, but no path may panic).
fn with_state<R>(vcpu: *mut bindings::kvm_vcpu, default: R, f: impl FnOnce(&VcpuState) -> R) -> R {
    // SAFETY: KVM passes a live vCPU to every op.
    let Some(vcpu) = (unsafe { Vcpu::from_raw(vcpu) }) else {
        return default;
    };
    let state = vcpu.private().cast::<VcpuState>();
    if state.is_null() {
        return default;
    }
    // SAFETY: a non-null private pointer is the `VcpuState` that `vcpu_init`
    // leaked and `vcpu_deinit` frees; KVM does not call another op of this
    // vCPU concurrently with deinit.  Only shared references are made.
    f(unsafe { &*state })
}

unsafe extern "C" fn vcpu_init(vcpu: *mut bindings::kvm_vcpu) -> c_int {
    // SAFETY: KVM passes the vCPU being created; it outlives its state,
    // which `vcpu_deinit` frees before the vCPU goes.
    let Some(vcpu) = (unsafe { Vcpu::from_raw(vcpu) }) else {
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
    let init = pin_init!(VcpuState {
        timer <- HrTimer::new(),
        logic: VcpuTimer::new(mode, clock, advance),
        vcpu,
    });
    match KBox::pin_init(init, GFP_KERNEL) {
        Ok(state) => {
            // SAFETY: the state is never moved: it is only reached through
            // this pointer until `vcpu_deinit` rebuilds the box to drop it.
            let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(state) });
            vcpu.set_private(raw.cast::<c_void>());
            // SAFETY: KVM passes a vCPU of a VM whose debugfs directory, if
            // any, exists until the VM is destroyed.
            unsafe { bindings::kvt_debugfs_add_vm(vcpu.as_ptr()) };
            0
        }
        Err(e) => e.to_errno(),
    }
}

unsafe extern "C" fn vcpu_deinit(vcpu: *mut bindings::kvm_vcpu) {
    // SAFETY: KVM passes a live vCPU.
    let Some(vcpu) = (unsafe { Vcpu::from_raw(vcpu) }) else {
        return;
    };
    let state = vcpu.private().cast::<VcpuState>();
    if state.is_null() {
        return;
    }
    vcpu.set_private(core::ptr::null_mut());
    // SAFETY: `state` came from `KBox::into_raw` in `vcpu_init` and no other
    // reference to it remains (KVM runs no other op of this vCPU now, and
    // the VM's debugfs file, which reads it, is gone before its vCPUs).
    // Dropping it cancels the hrtimer before freeing.
    let state = unsafe { KBox::from_raw(state) };
    let learnt = state.logic.advance().ns();
    if learnt != 0 {
        ADVANCE_SEED.store(learnt, Ordering::Relaxed);
    }
    drop(state);
}

unsafe extern "C" fn vcpu_pre_enter(vcpu: *mut bindings::kvm_vcpu) {
    with_state(vcpu, (), |s| s.logic.pre_enter(&Host(s)))
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
    if priv_.is_null() || out.is_null() {
        return;
    }
    // SAFETY: the caller passes the `VcpuState` of a live vCPU; only a
    // shared reference is made.
    let state = unsafe { &*priv_.cast::<VcpuState>() };
    let st = state.logic.stats().snapshot();
    let stats = bindings::kvt_stats {
        irqs: st.irqs,
        early: st.early,
        wakeups: st.wakeups,
        ipis: st.ipis,
        starts: st.starts,
        cancels: st.cancels,
        migrations: st.migrations,
        advance_ns: state.logic.advance().ns(),
        late: st.late,
    };
    // SAFETY: the caller passes a writable `struct kvt_stats`.
    unsafe { out.write(stats) };
}

unsafe extern "C" fn vcpu_reset(vcpu: *mut bindings::kvm_vcpu) {
    with_state(vcpu, (), |s| s.logic.reset(&Host(s)))
}

unsafe extern "C" fn vcpu_load(vcpu: *mut bindings::kvm_vcpu) {
    with_state(vcpu, (), |s| s.logic.load(&Host(s)))
}

unsafe extern "C" fn vcpu_put(vcpu: *mut bindings::kvm_vcpu) {
    with_state(vcpu, (), |s| s.logic.put(&Host(s)))
}

unsafe extern "C" fn vcpu_sync(vcpu: *mut bindings::kvm_vcpu) {
    with_state(vcpu, (), |s| s.logic.sync(&Host(s)))
}

unsafe extern "C" fn vcpu_pending(vcpu: *mut bindings::kvm_vcpu) -> bool {
    with_state(vcpu, false, |s| s.logic.pending(&Host(s)))
}

unsafe extern "C" fn next_event(vcpu: *mut bindings::kvm_vcpu, ncycles: u64) -> c_int {
    with_state(vcpu, EINVAL.to_errno(), |s| {
        s.logic.set_timer(&Host(s), ncycles);
        0
    })
}

unsafe extern "C" fn get_reg(vcpu: *mut bindings::kvm_vcpu, num: c_ulong, val: *mut u64) -> c_int {
    let Some(reg) = Reg::from_num(num as u64) else {
        return ENOENT.to_errno();
    };
    with_state(vcpu, EINVAL.to_errno(), |s| {
        let v = s.logic.get_reg(&Host(s), reg);
        // SAFETY: KVM passes a pointer to its local `u64`.
        unsafe { val.write(v) };
        0
    })
}

unsafe extern "C" fn set_reg(vcpu: *mut bindings::kvm_vcpu, num: c_ulong, val: u64) -> c_int {
    let Some(reg) = Reg::from_num(num as u64) else {
        return ENOENT.to_errno();
    };
    with_state(vcpu, EINVAL.to_errno(), |s| {
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

/// The registered backend; unregistered on drop.
///
/// # Invariants
///
/// While it exists, `OPS` is KVM's registered timer backend.
pub(crate) struct Backend(());

impl Backend {
    /// Register with KVM: VMs created from now on use this timer.
    pub(crate) fn register() -> Result<Self> {
        // SAFETY: `OPS` is a static; the registry keeps the pointer until
        // `Backend::drop` unregisters it.
        kernel::error::to_result(unsafe { bindings::kvt_backend_register(&OPS) })?;
        // INVARIANT: registered just above.
        Ok(Self(()))
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

impl Drop for Backend {
    fn drop(&mut self) {
        // SAFETY: registered by `register` (type invariant).  Module exit
        // runs only when no VM holds the module, so no VM uses `OPS`.
        unsafe { bindings::kvt_backend_unregister() }
    }
}
