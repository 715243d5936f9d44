// SPDX-License-Identifier: GPL-2.0

//! Host build of kvm_vtimer's pure timer logic: the very files the module
//! compiles, so `cargo test` covers them without a kernel.

#![no_std]

#[cfg(test)]
extern crate std;

#[path = "../../rust/timer/mod.rs"]
pub mod timer;
