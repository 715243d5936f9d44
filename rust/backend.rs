// SPDX-License-Identifier: GPL-2.0

//! What both architectures' backends do the same way: keep a per-vCPU state
//! behind KVM's `backend_priv` pointer, report its statistics, and register
//! the ops table with KVM.

use core::ffi::c_void;
use core::marker::PhantomData;

use kernel::init::PinInit;
use kernel::prelude::*;

use crate::bindings;
use crate::kvm::Vcpu;
use crate::timer::stats::{Snapshot, LATE_BUCKETS};

// `struct kvt_stats` (shim) and `Snapshot` have the same histogram.
const _: () = assert!(bindings::KVT_LATE_BUCKETS as usize == LATE_BUCKETS);

/// The per-vCPU states of type `S`, one behind each vCPU's private pointer
/// from [`PerVcpu::install`] to [`PerVcpu::remove`].
///
/// # Invariants
///
/// A vCPU's private pointer is null or comes from `KBox::into_raw` of a
/// pinned `S` made by `install`, freed only by `remove`; KVM runs no other
/// op of a vCPU concurrently with its init or deinit.
pub(crate) struct PerVcpu<S>(PhantomData<S>);

impl<S> PerVcpu<S> {
    /// Allocate the state of a new `vcpu` and hang it on its private
    /// pointer; then give the VM its statistics file.
    pub(crate) fn install<E>(vcpu: Vcpu, init: impl PinInit<S, E>) -> Result
    where
        Error: From<E>,
    {
        let state = KBox::pin_init(init, GFP_KERNEL)?;
        // SAFETY: the state is never moved: it is only reached through this
        // pointer until `remove` rebuilds the box to drop it.
        let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(state) });
        // INVARIANT: the pointer comes from `KBox::into_raw` of a pinned `S`.
        vcpu.set_private(raw.cast::<c_void>());
        // SAFETY: KVM passes a vCPU of a VM whose debugfs directory, if any,
        // exists until the VM is destroyed.
        unsafe { bindings::kvt_debugfs_add_vm(vcpu.as_ptr()) };
        Ok(())
    }

    /// Take the state off `vcpu` (its deinit); dropping it frees it.
    pub(crate) fn remove(vcpu: Vcpu) -> Option<Pin<KBox<S>>> {
        let state = vcpu.private().cast::<S>();
        if state.is_null() {
            return None;
        }
        vcpu.set_private(core::ptr::null_mut());
        // SAFETY: by the type invariant `state` came from `KBox::into_raw`
        // of a pinned `S` and nothing else frees it; no other reference to
        // it remains (KVM runs no other op of this vCPU now, and the users
        // outside KVM's ops, the debugfs file and the vGIC, are gone before
        // the vCPUs).
        Some(unsafe { Pin::new_unchecked(KBox::from_raw(state)) })
    }

    /// The state behind a private pointer.
    ///
    /// # Safety
    ///
    /// `ptr` is null or the private pointer of a live vCPU of ours, and the
    /// vCPU's deinit does not run while the reference is used.
    pub(crate) unsafe fn from_private<'a>(ptr: *mut c_void) -> Option<&'a S> {
        // SAFETY: by the type invariant a non-null private pointer is a
        // live `S`; the caller keeps it alive.  Only shared references are
        // made.
        unsafe { ptr.cast::<S>().as_ref() }
    }

    /// Run `f` on the state of the vCPU KVM passed to an op; `default` if
    /// it has none (never expected: KVM calls no timer op outside
    /// init..deinit, but no path may panic).
    pub(crate) fn with<R>(vcpu: *mut bindings::kvm_vcpu, default: R, f: impl FnOnce(&S) -> R) -> R {
        // SAFETY: KVM passes a live vCPU to every op.
        let Some(vcpu) = (unsafe { Vcpu::from_raw(vcpu) }) else {
            return default;
        };
        // SAFETY: the private pointer of a live vCPU; KVM does not run its
        // deinit concurrently with an op.
        match unsafe { Self::from_private(vcpu.private()) } {
            Some(s) => f(s),
            None => default,
        }
    }
}

/// Copy `st` (and the advance estimate) into the C statistics of a vCPU.
///
/// # Safety
///
/// `out` is null or points to a writable `struct kvt_stats`.
pub(crate) unsafe fn write_stats(st: &Snapshot, advance_ns: u64, out: *mut bindings::kvt_stats) {
    if out.is_null() {
        return;
    }
    let stats = bindings::kvt_stats {
        irqs: st.irqs,
        early: st.early,
        wakeups: st.wakeups,
        ipis: st.ipis,
        starts: st.starts,
        cancels: st.cancels,
        migrations: st.migrations,
        advance_ns,
        spin_ns: st.spin_ns,
        late: st.late,
    };
    // SAFETY: the caller passes a writable `struct kvt_stats`.
    unsafe { out.write(stats) };
}

/// The registered backend; unregistered on drop.
///
/// # Invariants
///
/// While it exists, its ops table is KVM's registered timer backend.
pub(crate) struct Registration(());

impl Registration {
    /// Register `ops` with KVM: VMs created from now on use them.
    pub(crate) fn new(ops: &'static bindings::kvm_arch_timer_ops) -> Result<Self> {
        // SAFETY: `ops` lives forever; the registry keeps the pointer until
        // `drop` unregisters it.
        kernel::error::to_result(unsafe { bindings::kvt_backend_register(ops) })?;
        // INVARIANT: registered just above.
        Ok(Self(()))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // SAFETY: registered by `new` (type invariant).  Module exit runs
        // only when no VM holds the module, so no VM uses the ops.
        unsafe { bindings::kvt_backend_unregister() }
    }
}
