// SPDX-License-Identifier: GPL-2.0

//! What both architectures' backends do the same way: keep a per-vCPU state
//! behind KVM's `backend_priv` pointer, report its statistics, and register
//! the ops table with KVM.

use core::ffi::c_void;
use core::marker::PhantomData;

use kernel::init::PinInit;
use kernel::prelude::*;

use crate::bindings;
use crate::hrtimer::HasHrTimer;
use crate::kvm::{Vcpu, VcpuDeinit, VcpuHandle, VcpuInit, VcpuOp};
use crate::timer::stats::{Snapshot, LATE_BUCKETS};

// `struct kvt_stats` (shim) and `Snapshot` have the same histogram.
const _: () = assert!(bindings::KVT_LATE_BUCKETS as usize == LATE_BUCKETS);

/// The per-vCPU states of type `S`, one behind each vCPU's private pointer
/// from [`PerVcpu::install`] to [`PerVcpu::remove`].
///
/// # Invariants
///
/// A vCPU's private pointer is null or comes from `KBox::into_raw` of a
/// pinned `S` that `install` made for that vCPU, and only `remove` frees it,
/// after it cancelled the state's host timer.
pub(crate) struct PerVcpu<S>(PhantomData<S>);

impl<S: HasHrTimer<S> + Send + Sync> PerVcpu<S> {
    /// Allocate the state of the vCPU being created, as `make` builds it
    /// around the vCPU's [`VcpuHandle`], and hang it on the vCPU's private
    /// pointer; then give the VM its statistics file.
    ///
    /// `make` puts the handle into the state: the handle is valid only as
    /// long as the state is.
    pub(crate) fn install<E, I>(vcpu: VcpuInit<'_>, make: impl FnOnce(VcpuHandle) -> I) -> Result
    where
        I: PinInit<S, E>,
        Error: From<E>,
    {
        // SAFETY: the handle goes into the state made below, which stays on
        // the vCPU until `remove` drops it at the vCPU's deinit, and KVM
        // calls that deinit before it frees the vCPU (`VcpuInit`).
        let handle = unsafe { VcpuHandle::new(&vcpu) };
        let state = KBox::pin_init(make(handle), GFP_KERNEL)?;
        // SAFETY: the state is never moved: it is only reached through this
        // pointer until `remove` rebuilds the box to drop it.
        let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(state) });
        // SAFETY: `vcpu` is live, and no other op of it runs (`VcpuInit`).
        // INVARIANT: the pointer comes from `KBox::into_raw` of a pinned `S`
        // made for this vCPU.
        unsafe { bindings::kvt_vcpu_set_priv(vcpu.as_ptr(), raw.cast::<c_void>()) };
        // SAFETY: a live vCPU (`VcpuInit`), of a VM whose debugfs directory,
        // if any, exists until the VM is destroyed; process context.
        unsafe { bindings::kvt_debugfs_add_vm(vcpu.as_ptr()) };
        Ok(())
    }

    /// The state of `vcpu`; `None` if it has none (never expected in an op:
    /// KVM calls no timer op outside init..deinit, but no path may panic).
    pub(crate) fn get(vcpu: &Vcpu) -> Option<&S> {
        // SAFETY: by the type invariant a non-null private pointer is a
        // pinned `S`, and by `Vcpu`'s it is not freed while `vcpu` is in
        // use, which bounds the returned reference.  Only shared references
        // are made, and `S: Sync`.
        unsafe { vcpu.private().cast::<S>().as_ref() }
    }

    /// Take the state off the vCPU being destroyed, with its host timer
    /// cancelled; dropping it frees it.
    pub(crate) fn remove(vcpu: VcpuDeinit<'_>) -> Option<Pin<KBox<S>>> {
        let state = vcpu.private().cast::<S>();
        if state.is_null() {
            return None;
        }
        // SAFETY: `vcpu` is live and no op of it runs (`VcpuDeinit`).
        unsafe { bindings::kvt_vcpu_set_priv(vcpu.as_ptr(), core::ptr::null_mut()) };
        // SAFETY: by the type invariant a non-null private pointer is a
        // pinned `S`, not freed yet: only this function frees it.
        let s = unsafe { &*state };
        // The host timer's callback reaches the state without the private
        // pointer: stop it before the state can go, whatever the order of
        // the state's fields.
        s.hr_timer().cancel();
        // SAFETY: by the type invariant `state` came from `KBox::into_raw`
        // of a pinned `S` and nothing else frees it.  No other reference to
        // it remains: KVM runs no op of this vCPU now or later, nothing
        // outside the ops reaches the state any more (`VcpuDeinit`), and
        // the callback was cancelled just above.
        // INVARIANT: the private pointer is null from now on.
        Some(unsafe { Pin::new_unchecked(KBox::from_raw(state)) })
    }

    /// The state behind a vCPU's private pointer, for C callers.
    ///
    /// # Safety
    ///
    /// `ptr` is null or the private pointer of a live vCPU of ours, and the
    /// vCPU's deinit does not run during `'a`.
    pub(crate) unsafe fn from_private<'a>(ptr: *mut c_void) -> Option<&'a S> {
        // SAFETY: by the type invariant a non-null private pointer is a
        // pinned `S`; the caller keeps it alive for `'a`.  Only shared
        // references are made, and `S: Sync`.
        unsafe { ptr.cast::<S>().as_ref() }
    }

    /// Run `f` on the state of the vCPU of `op`, and the op; `default` if
    /// KVM passed no vCPU or it has no state (never expected).
    pub(crate) fn with<'a, R>(
        op: Option<VcpuOp<'a>>,
        default: R,
        f: impl FnOnce(&'a S, VcpuOp<'a>) -> R,
    ) -> R
    where
        S: 'a,
    {
        match op.and_then(|op| Some((Self::get(op.vcpu())?, op))) {
            Some((s, op)) => f(s, op),
            None => default,
        }
    }
}

/// The C statistics of a vCPU: `st` and the two advance estimates (a
/// blocked vCPU's wakeup, a running one's delivery).
pub(crate) fn c_stats(
    st: &Snapshot,
    advance_ns: u64,
    running_advance_ns: u64,
) -> bindings::kvt_stats {
    bindings::kvt_stats {
        irqs: st.irqs,
        early: st.early,
        wakeups: st.wakeups,
        ipis: st.ipis,
        starts: st.starts,
        cancels: st.cancels,
        migrations: st.migrations,
        advance_ns,
        running_advance_ns,
        spin_ns: st.spin_ns,
        untrapped: st.untrapped,
        untrapped_ns: st.untrapped_ns,
        late: st.late,
    }
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
