// SPDX-License-Identifier: GPL-2.0

//! The KVM objects the backend touches, as thin safe handles.

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ops::Deref;
use core::ptr::NonNull;

use kernel::types::Opaque;

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

/// A KVM vCPU (`struct kvm_vcpu`), only ever seen by reference.
///
/// A raw vCPU pointer becomes a `Vcpu` once, where KVM hands it over: an op's
/// entry point in `rust/arch/` makes a [`VcpuOp`], [`VcpuInit`] or
/// [`VcpuDeinit`] (or, for a context that is none of these, a `&Vcpu`) with
/// the one `unsafe` call of that op, whose `SAFETY` comment states the
/// hook's contract for it.  The state a backend keeps per vCPU holds a
/// [`VcpuHandle`].  Everything else takes these types, not pointers.
///
/// # Invariants
///
/// A `&Vcpu` points to a live vCPU, and the backend state behind its private
/// pointer, if any, is not freed while the reference is in use, except by
/// `PerVcpu::remove`, which consumes the [`VcpuDeinit`] it comes from.
#[repr(transparent)]
pub(crate) struct Vcpu(Opaque<bindings::kvm_vcpu>);

// SAFETY: the methods of `&Vcpu` may run on any thread: they call KVM
// functions that synchronise themselves (locks, `READ_ONCE()` and
// `WRITE_ONCE()`), only read fields that KVM's own timer also reads from its
// hrtimer callback, or touch only this CPU's registers.  What only the
// thread that holds the vCPU may do is on `VcpuOp`.
unsafe impl Sync for Vcpu {}

impl Vcpu {
    /// The vCPU that KVM passed to a callback that runs neither on the thread
    /// that holds the vCPU nor at its creation or destruction.
    ///
    /// # Safety
    ///
    /// `ptr` is null or points to a vCPU that stays live for `'a`, and KVM
    /// does not run the vCPU's `vcpu_deinit` during `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::kvm_vcpu) -> Option<&'a Self> {
        // SAFETY: `Vcpu` is `repr(transparent)` over an `Opaque` of the C
        // struct, so C may change the vCPU under the reference; the caller
        // guarantees that it is live for `'a`.
        // INVARIANT: the caller guarantees that its state is not freed.
        unsafe { ptr.cast::<Self>().as_ref() }
    }

    /// The raw pointer, for the C helpers.
    pub(crate) fn as_ptr(&self) -> *mut bindings::kvm_vcpu {
        self.0.get()
    }

    /// The backend's per-vCPU state pointer (`backend_priv`).
    pub(crate) fn private(&self) -> *mut c_void {
        // SAFETY: by the type invariant the vCPU is live.  The helper reads
        // the pointer with `READ_ONCE()`, as init and deinit write it.
        unsafe { bindings::kvt_vcpu_priv(self.as_ptr()) }
    }

    /// Kick the vCPU: wake it if blocked, make it exit if in the guest.
    #[cfg(CONFIG_RISCV)]
    pub(crate) fn kick(&self) -> Kick {
        // SAFETY: by the type invariant the vCPU is live; `kvm_vcpu_kick()`
        // may be called from any context.
        kick_kind(unsafe { bindings::kvt_vcpu_kick(self.as_ptr()) })
    }

    /// Whether the vCPU is blocking (in WFI).
    pub(crate) fn is_blocking(&self) -> bool {
        // SAFETY: by the type invariant the vCPU is live;
        // `kvm_vcpu_is_blocking()` reads a flag (`rcuwait_active()`).
        unsafe { bindings::kvt_vcpu_is_blocking(self.as_ptr()) }
    }

    /// Whether the vCPU is loaded on this CPU, its thread the one running
    /// here (`kvm_get_running_vcpu()`).
    #[cfg(CONFIG_RISCV)]
    pub(crate) fn is_running_here(&self) -> bool {
        // SAFETY: by the type invariant the vCPU is live; the helper only
        // compares its address with this CPU's `kvm_running_vcpu`.
        unsafe { bindings::kvt_vcpu_running_here(self.as_ptr()) }
    }
}

/// The vCPU of an op that KVM runs on the thread that holds the vCPU.
///
/// # Invariants
///
/// For `'a`, `vcpu` is live, KVM does not run its `vcpu_deinit`, and the
/// current thread holds the vCPU: it holds `vcpu->mutex` (every vCPU ioctl
/// does, `KVM_RUN` included, and so does the thread whose preempt notifiers
/// load and put the vCPU), or it is creating the vCPU, which no other
/// thread reaches yet.  So no other op of the vCPU runs concurrently (the
/// arm64 `host_irq` may interrupt this thread on its CPU, and the host
/// timer's callback, not an op, may run on any CPU), and no other thread
/// writes the vCPU's own state (its saved registers, `kvm_run`).  Not
/// `Send`: the token belongs to this thread.
#[derive(Clone, Copy)]
pub(crate) struct VcpuOp<'a> {
    vcpu: &'a Vcpu,
    _thread: PhantomData<*mut ()>,
}

impl<'a> VcpuOp<'a> {
    /// The vCPU that KVM passed to an op it runs on the thread that holds
    /// the vCPU.
    ///
    /// # Safety
    ///
    /// `ptr` is null or that vCPU, for the duration `'a` of the op, as the
    /// type's invariants describe.
    pub(crate) unsafe fn from_raw(ptr: *mut bindings::kvm_vcpu) -> Option<Self> {
        // SAFETY: the caller's guarantee covers `Vcpu::from_raw`'s.
        let vcpu = unsafe { Vcpu::from_raw(ptr) }?;
        // INVARIANT: the caller guarantees the context.
        Some(Self {
            vcpu,
            _thread: PhantomData,
        })
    }

    /// The vCPU, for the whole op.
    pub(crate) fn vcpu(self) -> &'a Vcpu {
        self.vcpu
    }
}

impl Deref for VcpuOp<'_> {
    type Target = Vcpu;

    fn deref(&self) -> &Vcpu {
        self.vcpu
    }
}

/// The vCPU that KVM is creating: the backend's `vcpu_init`.
///
/// # Invariants
///
/// For `'a`, `vcpu` is live and no other op of it runs; its private pointer
/// is null and nothing but the backend reads it; and KVM calls `vcpu_deinit`
/// before it frees the vCPU, also when a later step of the creation fails.
/// Not `Send`, as [`VcpuOp`].
pub(crate) struct VcpuInit<'a> {
    vcpu: &'a Vcpu,
    _thread: PhantomData<*mut ()>,
}

impl VcpuInit<'_> {
    /// The vCPU that KVM passed to `vcpu_init`.
    ///
    /// # Safety
    ///
    /// `ptr` is null or that vCPU, for the duration of the op, as the type's
    /// invariants describe.
    pub(crate) unsafe fn from_raw(ptr: *mut bindings::kvm_vcpu) -> Option<Self> {
        // SAFETY: the caller's guarantee covers `Vcpu::from_raw`'s (the vCPU
        // has no state to free yet).
        let vcpu = unsafe { Vcpu::from_raw(ptr) }?;
        // INVARIANT: the caller guarantees the context.
        Some(Self {
            vcpu,
            _thread: PhantomData,
        })
    }
}

impl Deref for VcpuInit<'_> {
    type Target = Vcpu;

    fn deref(&self) -> &Vcpu {
        self.vcpu
    }
}

/// The vCPU that KVM is destroying: the backend's `vcpu_deinit`.
///
/// # Invariants
///
/// For `'a`, `vcpu` is live; no op of it runs now or later, and nothing
/// outside the ops reaches its backend state any more (the VM's debugfs
/// file lists only online vCPUs under `kvm->lock` and is removed before the
/// vCPUs; the vGIC asks only about a running vCPU).  Not `Send`, as
/// [`VcpuOp`].
pub(crate) struct VcpuDeinit<'a> {
    vcpu: &'a Vcpu,
    _thread: PhantomData<*mut ()>,
}

impl VcpuDeinit<'_> {
    /// The vCPU that KVM passed to `vcpu_deinit`.
    ///
    /// # Safety
    ///
    /// `ptr` is null or that vCPU, for the duration of the op, as the type's
    /// invariants describe.
    pub(crate) unsafe fn from_raw(ptr: *mut bindings::kvm_vcpu) -> Option<Self> {
        // SAFETY: the caller guarantees that the vCPU is live; only
        // `PerVcpu::remove`, which consumes `Self`, frees its state.
        let vcpu = unsafe { Vcpu::from_raw(ptr) }?;
        // INVARIANT: the caller guarantees the context.
        Some(Self {
            vcpu,
            _thread: PhantomData,
        })
    }
}

impl Deref for VcpuDeinit<'_> {
    type Target = Vcpu;

    fn deref(&self) -> &Vcpu {
        self.vcpu
    }
}

/// The vCPU a backend state belongs to, kept in that state for the host
/// timer's callback, which KVM does not pass a vCPU.
///
/// # Invariants
///
/// `vcpu` points to a vCPU that outlives the handle: only
/// `PerVcpu::install` makes one, for the state it installs on that vCPU,
/// which `PerVcpu::remove` drops at the vCPU's deinit, before KVM frees the
/// vCPU.  Not `Clone`: there is one handle per state.
pub(crate) struct VcpuHandle {
    vcpu: NonNull<bindings::kvm_vcpu>,
}

// SAFETY: a handle only gives out `&Vcpu`, which any thread may use
// (`Vcpu: Sync`), and has no tie to the thread that made it.
unsafe impl Send for VcpuHandle {}
// SAFETY: as for `Send`.
unsafe impl Sync for VcpuHandle {}

impl VcpuHandle {
    /// A handle of `vcpu`, for its backend state.
    ///
    /// # Safety
    ///
    /// The vCPU outlives the handle, and its backend state is not freed
    /// while the handle is in use (it holds the handle).
    pub(crate) unsafe fn new(vcpu: &Vcpu) -> Self {
        // INVARIANT: the caller guarantees the lifetime.
        Self {
            vcpu: NonNull::from(vcpu).cast(),
        }
    }

    /// The vCPU.
    pub(crate) fn get(&self) -> &Vcpu {
        // SAFETY: by the type invariant the vCPU outlives `self`, and the
        // state that holds `self` is not freed while `self` is borrowed, so
        // `Vcpu`'s invariant holds for the reference.
        unsafe { self.vcpu.cast::<Vcpu>().as_ref() }
    }
}

/// The CPU this runs on.
pub(crate) fn this_cpu() -> u32 {
    // SAFETY: no preconditions; a racy answer is fine for the callers, which
    // run with preemption disabled where it matters (load/put).
    unsafe { bindings::kvt_smp_processor_id() }
}

/// Pause in a busy-wait loop.
pub(crate) fn relax() {
    // SAFETY: no preconditions.
    unsafe { bindings::kvt_cpu_relax() }
}

/// The bound of the timer advance, in ns (the `advance_max_ns` module
/// parameter).
pub(crate) fn advance_max_ns() -> u64 {
    // SAFETY: reads the parameter with `READ_ONCE()`; no preconditions.
    u64::from(unsafe { bindings::kvt_advance_max_ns() })
}

/// Whether a vCPU woken before its deadline may enter with WFI untrapped:
/// the `direct_wfi` module parameter, and no other task runnable on this
/// CPU.
#[cfg(CONFIG_RISCV)]
pub(crate) fn direct_wfi() -> bool {
    // SAFETY: reads the parameter with `READ_ONCE()` and this CPU's run
    // queue length (`single_task_running()`); no preconditions.
    unsafe { bindings::kvt_direct_wfi() }
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
