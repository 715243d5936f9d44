// SPDX-License-Identifier: GPL-2.0

//! kvm_vtimer: the per-vCPU virtual timer of KVM, as a loadable backend.
//!
//! Loaded on a host whose KVM carries the timer-backend hook
//! (patches/linux-6.12), it registers as the vCPU timer of every VM created
//! afterwards.  Each VM holds the module until it is destroyed, so `rmmod`
//! is refused while a VM uses it; VMs created after `rmmod` use KVM's
//! built-in timer.
//!
//! Layout: [`timer`] is the pure logic (host-tested with `cargo test`);
//! `vcpu_state` is the per-vCPU skeleton both architectures run it in;
//! `kvm`, `hrtimer`, `backend` and `arch` are the thin wrappers over C.

use kernel::prelude::*;

mod bindings;
pub mod timer;

#[cfg(any(CONFIG_RISCV, CONFIG_ARM64))]
mod backend;
#[cfg(any(CONFIG_RISCV, CONFIG_ARM64))]
mod hrtimer;
#[cfg(any(CONFIG_RISCV, CONFIG_ARM64))]
mod kvm;

#[cfg(CONFIG_RISCV)]
#[path = "arch/riscv.rs"]
mod riscv;

#[cfg(CONFIG_ARM64)]
#[path = "arch/arm64.rs"]
mod arm64;

#[cfg(any(CONFIG_RISCV, CONFIG_ARM64))]
mod vcpu_state;

// This architecture's backend, as the code both share names it.
#[cfg(CONFIG_ARM64)]
use arm64 as arch;
#[cfg(CONFIG_RISCV)]
use riscv as arch;

module! {
    type: KvmVtimer,
    name: "kvm_vtimer",
    author: "kvm-vtimer developers",
    description: "Per-vCPU virtual timer backend for KVM (RISC-V, arm64)",
    license: "GPL",
}

/// The module version, reported at load and unload.
const VERSION: &str = "0.3.0";

struct KvmVtimer {
    #[cfg(any(CONFIG_RISCV, CONFIG_ARM64))]
    _backend: arch::Backend,
}

impl kernel::Module for KvmVtimer {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        #[cfg(any(CONFIG_RISCV, CONFIG_ARM64))]
        {
            let backend = arch::Backend::register()?;
            pr_info!(
                "version {} loaded: timer backend for new VMs ({}), KVM API {}\n",
                VERSION,
                arch::Backend::mode_name(),
                bindings::KVM_API_VERSION
            );
            Ok(KvmVtimer { _backend: backend })
        }
        #[cfg(not(any(CONFIG_RISCV, CONFIG_ARM64)))]
        {
            pr_info!(
                "version {} loaded: no timer backend for this architecture yet, VMs use KVM's (KVM API {})\n",
                VERSION,
                bindings::KVM_API_VERSION
            );
            Ok(KvmVtimer {})
        }
    }
}

impl Drop for KvmVtimer {
    fn drop(&mut self) {
        pr_info!("version {} unloaded\n", VERSION);
    }
}
