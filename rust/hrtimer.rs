// SPDX-License-Identifier: GPL-2.0

//! Hard, absolute, CPU-pinned hrtimers.
//!
//! 6.12's kernel crate has no hrtimer abstraction.  This thin wrapper follows
//! the shape of `kernel::time::hrtimer` in later kernels (an [`HrTimer<T>`]
//! embedded in `T`, [`HasHrTimer`] to get from the timer back to `T`,
//! [`HrTimerCallback`] for the expiry, cancel on drop), so that moving to a
//! newer kernel means deleting this module rather than rewriting callers.

use core::marker::PhantomData;

use kernel::init::PinInit;
use kernel::prelude::*;
use kernel::types::Opaque;

use crate::bindings;
use crate::timer::Expiry;

/// What an expiry asks of the hrtimer core.
pub(crate) enum HrTimerRestart {
    /// The timer stays stopped.
    NoRestart,
    /// Run again at the expiry just set with [`HrTimer::set_expires`].
    Restart,
}

/// The expiry handler of a `T` that embeds an [`HrTimer<T>`].
pub(crate) trait HrTimerCallback {
    /// Runs in hard interrupt context on the CPU the timer was started on.
    fn run(this: &Self) -> HrTimerRestart;
}

/// A `T` that embeds an [`HrTimer<T>`].
///
/// # Safety
///
/// `timer_container_of` must return the `T` that `timer` points into, for
/// the timer embedded in every `T`.
pub(crate) unsafe trait HasHrTimer<T> {
    /// The `T` that embeds `timer`.
    ///
    /// # Safety
    ///
    /// `timer` points to the timer embedded in a valid `T`.
    unsafe fn timer_container_of(timer: *mut HrTimer<T>) -> *mut T;
}

/// An hrtimer on `CLOCK_MONOTONIC` that expires in hard interrupt context
/// (also on PREEMPT_RT), with absolute expiries, started on the current CPU.
///
/// # Invariants
///
/// `timer` was initialised by `kvt_hrtimer_init` with [`HrTimer::run`] of
/// `T` as its function, and does not move (it is pinned) until dropped; drop
/// cancels it.
#[repr(transparent)]
#[pin_data(PinnedDrop)]
pub(crate) struct HrTimer<T> {
    #[pin]
    timer: Opaque<bindings::hrtimer>,
    _t: PhantomData<T>,
}

// SAFETY: the C hrtimer is protected by its clock base's lock; every method
// here may be called from any thread or CPU.
unsafe impl<T> Send for HrTimer<T> {}
// SAFETY: as for `Send`: shared references only reach the locked C API.
unsafe impl<T> Sync for HrTimer<T> {}

impl<T: HasHrTimer<T> + HrTimerCallback> HrTimer<T> {
    /// An initialiser of a stopped timer.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes and pinned by `Opaque::ffi_init`'s
            // contract; `kvt_hrtimer_init` fully initialises it.
            timer <- Opaque::ffi_init(|slot: *mut bindings::hrtimer| unsafe {
                bindings::kvt_hrtimer_init(slot, Some(Self::run))
            }),
            _t: PhantomData,
        })
    }

    fn raw(&self) -> *mut bindings::hrtimer {
        self.timer.get()
    }

    /// Start (or restart) the timer at absolute `expires_ns` of
    /// `CLOCK_MONOTONIC`, on this CPU.
    pub(crate) fn start(&self, expires_ns: u64) {
        // SAFETY: by the type invariant the timer is initialised and pinned.
        unsafe { bindings::kvt_hrtimer_start(self.raw(), expires_ns) }
    }

    /// Set the next expiry, for a callback that returns
    /// [`HrTimerRestart::Restart`].
    pub(crate) fn set_expires(&self, expires_ns: u64) {
        // SAFETY: by the type invariant the timer is initialised; only the
        // callback calls this, when the core expects a new expiry.
        unsafe { bindings::kvt_hrtimer_set_expires(self.raw(), expires_ns) }
    }

    /// What a callback returns for `expiry`: stop, or run again at its
    /// time.
    pub(crate) fn restart_for(&self, expiry: Expiry) -> HrTimerRestart {
        match expiry {
            Expiry::Done => HrTimerRestart::NoRestart,
            Expiry::Again(ns) => {
                self.set_expires(ns);
                HrTimerRestart::Restart
            }
        }
    }

    /// Stop the timer; if its callback is running on another CPU, wait for
    /// it.  Never sleeps: the timer is a hard one.  Whether it was active.
    pub(crate) fn cancel(&self) -> bool {
        // SAFETY: by the type invariant the timer is initialised.
        unsafe { bindings::hrtimer_cancel(self.raw()) != 0 }
    }

    /// The C callback: find the `T` and run its handler.
    ///
    /// # Safety
    ///
    /// Called by the hrtimer core with the timer this `HrTimer<T>` set up.
    unsafe extern "C" fn run(ptr: *mut bindings::hrtimer) -> bindings::hrtimer_restart {
        // `HrTimer<T>` is `repr(transparent)` over the C timer.
        let timer = ptr.cast::<HrTimer<T>>();
        // SAFETY: the core passes the timer we initialised, which is embedded
        // in a live `T` (drop cancels the timer before `T` goes away).
        let this = unsafe { &*T::timer_container_of(timer) };
        match T::run(this) {
            HrTimerRestart::NoRestart => bindings::hrtimer_restart_HRTIMER_NORESTART,
            HrTimerRestart::Restart => bindings::hrtimer_restart_HRTIMER_RESTART,
        }
    }
}

#[pinned_drop]
impl<T> PinnedDrop for HrTimer<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: by the type invariant the timer is initialised; after this
        // the callback no longer runs, so the memory may go.
        unsafe { bindings::hrtimer_cancel(self.timer.get()) };
    }
}

/// Implement [`HasHrTimer`] for a struct with an [`HrTimer`] field, as
/// `kernel::time::hrtimer::impl_has_hr_timer!` does in later kernels:
///
/// ```ignore
/// impl_has_hr_timer! {
///     impl HasHrTimer<VcpuState> for VcpuState { self.timer }
/// }
/// ```
macro_rules! impl_has_hr_timer {
    (impl HasHrTimer<$t:ty> for $s:ty { self.$field:ident }) => {
        // The field is the `HrTimer<$t>` the offset below is taken of.
        const _: fn(&$s) -> &$crate::hrtimer::HrTimer<$t> = |s| &s.$field;

        // SAFETY: `timer_container_of` steps back from the `$field` field,
        // an `HrTimer<$t>` (checked just above), by its offset, to the
        // struct that embeds it.
        unsafe impl $crate::hrtimer::HasHrTimer<$t> for $s {
            unsafe fn timer_container_of(timer: *mut $crate::hrtimer::HrTimer<$t>) -> *mut Self {
                // SAFETY: the caller passes the timer embedded in a `$s`, so
                // stepping back by its offset stays inside that allocation.
                unsafe {
                    timer
                        .byte_sub(::core::mem::offset_of!(Self, $field))
                        .cast::<Self>()
                }
            }
        }
    };
}
pub(crate) use impl_has_hr_timer;
