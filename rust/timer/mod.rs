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

/// What every per-vCPU timer logic does, on its platform `P`, for the
/// skeleton that runs it (`rust/vcpu_state.rs`): the host timer's callback,
/// and the ops both architectures' KVM tables have.
pub trait VcpuLogic<P> {
    /// The host timer's callback, in hard interrupt context on the CPU
    /// that started it.
    fn expired(&self, p: &P) -> Expiry;
    /// Whether the timer should wake the blocked vCPU
    /// (`kvm_cpu_has_pending_timer()`).
    fn pending(&self, p: &P) -> bool;
    /// Asked when the vCPU is about to block and its timer is not
    /// [`Self::pending`] (`kvm_cpu_has_pending_timer()` from
    /// `kvm_vcpu_check_block()`, on the vCPU's thread, loaded): whether it
    /// should not block, because the timer has noted a delivery for its
    /// next guest entry instead.  None by default.
    fn keep_running(&self, _p: &P) -> bool {
        false
    }
    /// The vCPU is loaded on this CPU (sched-in or ioctl), preemption
    /// disabled.
    fn load(&self, p: &P);
    /// The vCPU is put (sched-out or ioctl), preemption disabled; about to
    /// block in WFI when `kvm_vcpu_is_blocking()`.
    fn put(&self, p: &P);
    /// vCPU reset, put, preemption disabled.
    fn reset(&self, p: &P);
}
