// SPDX-License-Identifier: GPL-2.0

//! Hard, absolute, CPU-pinned hrtimers.
//!
//! 6.12's kernel crate has no hrtimer abstraction.  This thin wrapper follows
//! the shape of `kernel::time::hrtimer` in later kernels (an [`HrTimer<T>`]
//! embedded in `T`, [`HasHrTimer`] to get from the timer back to `T`,
//! [`HrTimerCallback`] for the expiry, [`HrTimerCallbackContext`] for what
//! only the callback may do, cancel on drop), so that moving to a newer
//! kernel means deleting this module rather than rewriting callers.

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
    /// Run again, at the expiry [`HrTimerCallbackContext::restart_at`] set.
    Restart,
}

/// The expiry handler of a `T` that embeds an [`HrTimer<T>`].
pub(crate) trait HrTimerCallback: Sized {
    /// Runs in hard interrupt context on the CPU the timer was started on.
    /// `ctx` is what only the callback may do: set the next expiry.
    fn run(this: &Self, ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart;
}

/// A `T` that embeds an [`HrTimer<T>`].
///
/// # Safety
///
/// - `timer_container_of` returns the `T` that `timer` points into, for the
///   timer embedded in every `T`, and `hr_timer` returns that timer.
/// - A `T` is not dropped while its timer may be queued or its callback
///   running: whatever owns a `T` cancels the timer before it drops it (for
///   the per-vCPU states, `PerVcpu::remove`), so that the callback never
///   sees a field of `T` already dropped, whatever the order of the fields.
pub(crate) unsafe trait HasHrTimer<T> {
    /// The `T` that embeds `timer`.
    ///
    /// # Safety
    ///
    /// `timer` points to the timer embedded in a valid `T`.
    unsafe fn timer_container_of(timer: *mut HrTimer<T>) -> *mut T;

    /// The timer embedded in `self`.
    fn hr_timer(&self) -> &HrTimer<T>;
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

// SAFETY: the C hrtimer is protected by its clock base's lock; `start` and
// `cancel` may be called from any thread or CPU.
unsafe impl<T> Send for HrTimer<T> {}
// SAFETY: as for `Send`: shared references only reach `start` and `cancel`.
// The expiry is set only through `HrTimerCallbackContext`, in the callback.
unsafe impl<T> Sync for HrTimer<T> {}

impl<T> HrTimer<T> {
    fn raw(&self) -> *mut bindings::hrtimer {
        self.timer.get()
    }

    /// Start (or restart) the timer at absolute `expires_ns` of
    /// `CLOCK_MONOTONIC`, on this CPU.
    ///
    /// A start while the callback runs on another CPU races with that
    /// callback's [`HrTimerCallbackContext::restart_at`], as in C
    /// (`hrtimer_forward()`): the users cancel before they start again
    /// (Documentation/design.rst, "The rule: cancel, change, start").
    pub(crate) fn start(&self, expires_ns: u64) {
        // SAFETY: by the type invariant the timer is initialised and pinned;
        // `hrtimer_start()` takes the clock base's lock, from any context.
        unsafe { bindings::kvt_hrtimer_start(self.raw(), expires_ns) }
    }

    /// Stop the timer; if its callback is running on another CPU, wait for
    /// it.  Never sleeps: the timer is a hard one.  Whether it was active.
    /// Not from the timer's own callback, which would wait for itself.
    pub(crate) fn cancel(&self) -> bool {
        // SAFETY: by the type invariant the timer is initialised.
        unsafe { bindings::hrtimer_cancel(self.raw()) != 0 }
    }
}

impl<T: HasHrTimer<T> + HrTimerCallback + Sync> HrTimer<T> {
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

    /// The C callback: find the `T` and run its handler.
    ///
    /// # Safety
    ///
    /// Called by the hrtimer core, as the callback of the timer `ptr` that an
    /// `HrTimer<T>` set up.
    unsafe extern "C" fn run(ptr: *mut bindings::hrtimer) -> bindings::hrtimer_restart {
        // `HrTimer<T>` is `repr(transparent)` over the C timer.
        let timer = ptr.cast::<HrTimer<T>>();
        // SAFETY: the core passes the timer we initialised, which is embedded
        // in a live `T`: `T` is not dropped before its timer is cancelled
        // (`HasHrTimer`), and the cancel waits for this callback.  `T: Sync`,
        // so it may be shared with this context.
        let this = unsafe { &*T::timer_container_of(timer) };
        // INVARIANT: this is the timer's callback, until `run` returns, and
        // the context does not outlive it.
        let ctx = HrTimerCallbackContext {
            timer: ptr,
            _t: PhantomData,
        };
        match T::run(this, ctx) {
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

/// What a timer's callback may do to its own timer, for the duration of the
/// callback, as `kernel::time::hrtimer::HrTimerCallbackContext` in later
/// kernels.
///
/// # Invariants
///
/// It exists only while the hrtimer core runs `timer`'s callback: the core
/// has taken the timer off its queue, and puts it back only if the callback
/// returns [`HrTimerRestart::Restart`].
pub(crate) struct HrTimerCallbackContext<'a, T> {
    timer: *mut bindings::hrtimer,
    _t: PhantomData<&'a HrTimer<T>>,
}

impl<T> HrTimerCallbackContext<'_, T> {
    /// Run again at absolute `expires_ns`: what the callback returns.
    ///
    /// If the callback started the timer itself, that start stands and this
    /// returns [`HrTimerRestart::NoRestart`].
    pub(crate) fn restart_at(self, expires_ns: u64) -> HrTimerRestart {
        // SAFETY: by the type invariant this is the timer's callback, the
        // one context where C sets the expiry of a timer it restarts.  The
        // helper refuses a timer queued meanwhile by a start from this
        // callback; a start from another CPU meanwhile is excluded by
        // `start`'s rule (cancel first), as C's `hrtimer_forward()` has it.
        // So the queue is never reordered under the core.
        if unsafe { bindings::kvt_hrtimer_set_expires(self.timer, expires_ns) } {
            HrTimerRestart::Restart
        } else {
            HrTimerRestart::NoRestart
        }
    }

    /// What the callback returns for `expiry`: stop, or run again at its
    /// time.
    pub(crate) fn restart_for(self, expiry: Expiry) -> HrTimerRestart {
        match expiry {
            Expiry::Done => HrTimerRestart::NoRestart,
            Expiry::Again(ns) => self.restart_at(ns),
        }
    }
}

/// Implement [`HasHrTimer`] for a struct with an [`HrTimer`] field, as
/// `kernel::time::hrtimer::impl_has_hr_timer!` does in later kernels:
///
/// ```ignore
/// impl_has_hr_timer! {
///     impl<L: TimerLogic> HasHrTimer<VcpuState<L>> for VcpuState<L> { self.timer }
/// }
/// ```
///
/// Only for the per-vCPU states: `PerVcpu`, their only owner, cancels the
/// timer before it drops a state (`HasHrTimer`'s second requirement).
macro_rules! impl_has_hr_timer {
    (
        impl $(<$($g:ident : $b:path),*>)? HasHrTimer<$t:ty> for $s:ty { self.$field:ident }
    ) => {
        // SAFETY: `timer_container_of` steps back from the `$field` field,
        // an `HrTimer<$t>` (`hr_timer` checks the type), by its offset, to
        // the struct that embeds it, and `hr_timer` returns that field.  The
        // struct is a per-vCPU state, owned by `PerVcpu`, which cancels the
        // timer before it drops a state.
        unsafe impl $(<$($g: $b),*>)? $crate::hrtimer::HasHrTimer<$t> for $s {
            unsafe fn timer_container_of(timer: *mut $crate::hrtimer::HrTimer<$t>) -> *mut Self {
                // SAFETY: the caller passes the timer embedded in a `$s`, so
                // stepping back by its offset stays inside that allocation.
                unsafe {
                    timer
                        .byte_sub(::core::mem::offset_of!(Self, $field))
                        .cast::<Self>()
                }
            }

            fn hr_timer(&self) -> &$crate::hrtimer::HrTimer<$t> {
                &self.$field
            }
        }
    };
}
pub(crate) use impl_has_hr_timer;
