// SPDX-License-Identifier: GPL-2.0

//! Pure timer logic: only `core`, no kernel types, no raw pointers.
//!
//! The kernel glue (`kvm.rs`, `hrtimer.rs`, `arch/`) calls into this; the
//! host crate in `host/` builds the same files for `cargo test`.

pub mod advance;
pub mod clock;
pub mod cntp;
pub mod el1;
pub mod host_timer;
pub mod stats;
pub mod vcpu;

/// What a host timer's callback tells the hrtimer core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Done; the timer stays idle.
    Done,
    /// It fired before the guest's deadline (or has more to watch): run
    /// again at this absolute host time (ns).
    Again(u64),
}
