// SPDX-License-Identifier: GPL-2.0

//! bindgen's output over `include/kvm_vtimer_bindings.h`.
//!
//! Only the thin wrapper modules use these items; timer logic never does.

// Generated code: which of these lints fire depends on the allowlist and the
// architecture, so `expect` would be unfulfilled on some builds.
#![allow(
    dead_code,
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    clippy::all,
    unreachable_pub
)]

#[allow(unused_imports)]
use kernel::ffi;

include!(env!("KVT_BINDINGS_RS"));
