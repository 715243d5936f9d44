// SPDX-License-Identifier: GPL-2.0

//! The KVM objects the backend touches, as thin safe handles.

use core::ffi::c_void;
use core::ptr::NonNull;

use crate::bindings;
#[cfg(CONFIG_RISCV)]
use crate::timer::stats::Kick;

/// A `enum kvt_kick` from the C helpers.
#[cfg(CONFIG_RISCV)]
pub(crate) fn kick_kind(kind: bindings::kvt_kick) -> Kick {
    match kind {
        bindings::kvt_kick_KVT_KICK_WOKEN => Kick::Woken,
        bindings::kvt_kick_KVT_KICK_IPI => Kick::Ipi,
        _ => Kick::Quiet,
    }
}

/// A vCPU.
///
/// # Invariants
///
/// `ptr` points to a `struct kvm_vcpu` that outlives every use of the
/// handle: KVM creates the backend's per-vCPU state (the only holder of a
/// `Vcpu`) after the vCPU and destroys it before the vCPU.
#[derive(Clone, Copy)]
pub(crate) struct Vcpu(NonNull<bindings::kvm_vcpu>);

// SAFETY: every method calls a KVM function that may run on any CPU, in any
// context the callers below use (vCPU thread, hard interrupt).
unsafe impl Send for Vcpu {}
// SAFETY: as for `Send`; the handle itself is immutable.
unsafe impl Sync for Vcpu {}

impl Vcpu {
    /// A handle for the vCPU KVM passed to a callback.
    ///
    /// # Safety
    ///
    /// `ptr` is null or points to a vCPU that outlives the handle.
    pub(crate) unsafe fn from_raw(ptr: *mut bindings::kvm_vcpu) -> Option<Self> {
        // INVARIANT: the caller guarantees the lifetime.
        NonNull::new(ptr).map(Self)
    }

    /// The raw pointer, for the C helpers.
    pub(crate) fn as_ptr(self) -> *mut bindings::kvm_vcpu {
        self.0.as_ptr()
    }

    /// The backend's per-vCPU state pointer.
    pub(crate) fn private(self) -> *mut c_void {
        // SAFETY: by the type invariant the vCPU is alive.
        unsafe { bindings::kvt_vcpu_priv(self.as_ptr()) }
    }

    /// Set the backend's per-vCPU state pointer.
    pub(crate) fn set_private(self, ptr: *mut c_void) {
        // SAFETY: by the type invariant the vCPU is alive; KVM serialises
        // vCPU creation and destruction, the only callers.
        unsafe { bindings::kvt_vcpu_set_priv(self.as_ptr(), ptr) }
    }

    /// Kick the vCPU: wake it if blocked, make it exit if in the guest.
    #[cfg(CONFIG_RISCV)]
    pub(crate) fn kick(self) -> Kick {
        // SAFETY: by the type invariant the vCPU is alive; `kvm_vcpu_kick`
        // may be called from any context.
        kick_kind(unsafe { bindings::kvt_vcpu_kick(self.as_ptr()) })
    }

    /// Whether the vCPU is blocking (in WFI).
    pub(crate) fn is_blocking(self) -> bool {
        // SAFETY: by the type invariant the vCPU is alive.
        unsafe { bindings::kvt_vcpu_is_blocking(self.as_ptr()) }
    }
}

/// The CPU this runs on.
pub(crate) fn this_cpu() -> u32 {
    // SAFETY: no preconditions; a racy answer is fine for the callers, which
    // run with preemption disabled where it matters (load/put).
    unsafe { bindings::kvt_smp_processor_id() }
}

/// Pause in a busy-wait loop.
#[cfg(CONFIG_RISCV)]
pub(crate) fn relax() {
    // SAFETY: no preconditions.
    unsafe { bindings::kvt_cpu_relax() }
}

/// Monotonic time in ns (`ktime_get_ns`).
pub(crate) fn ktime_ns() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bindings::kvt_ktime_get_ns() }
}

/// Run `f` with preemption disabled.
#[cfg(CONFIG_RISCV)]
pub(crate) fn without_preemption<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: paired with the enable below; `f` does not sleep (callers
    // only write CSRs and atomics, and start the vCPU's hrtimer).
    unsafe { bindings::kvt_preempt_disable() };
    let r = f();
    // SAFETY: paired with the disable above.
    unsafe { bindings::kvt_preempt_enable() };
    r
}

/// Run `f` with interrupts disabled on this CPU.
#[cfg(CONFIG_ARM64)]
pub(crate) fn without_irqs<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: paired with the restore below; `f` does not sleep (callers
    // only access timer registers).
    let flags = unsafe { bindings::kvt_local_irq_save() };
    let r = f();
    // SAFETY: restores what the save above returned, on the same CPU.
    unsafe { bindings::kvt_local_irq_restore(flags) };
    r
}

/// Log a rejected guest or user value, rate-limited.
pub(crate) fn warn_ratelimited(what: &'static kernel::str::CStr, value: u64) {
    // SAFETY: `what` is a NUL-terminated string that lives forever.
    unsafe { bindings::kvt_pr_warn_ratelimited(what.as_char_ptr(), value) }
}
