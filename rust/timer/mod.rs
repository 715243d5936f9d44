// SPDX-License-Identifier: GPL-2.0

//! Pure timer logic: only `core`, no kernel types, no raw pointers.
//!
//! The kernel glue (`kvm.rs`, `hrtimer.rs`, `arch/`) calls into this; the
//! host crate in `host/` builds the same files for `cargo test`.

pub mod advance;
pub mod clock;
pub mod el1;
pub mod stats;
pub mod vcpu;
