// SPDX-License-Identifier: GPL-2.0

//! The RISC-V timer hardware and the vCPU's timer state in KVM, as safe
//! calls: the host's counter and timebase, the H-extension timer CSRs, the
//! VM's counter offset and the vCPU's VS-level timer interrupt.
//!
//! The RISC-V backend reaches C only through this module (and the common
//! wrappers), so that each helper's preconditions are argued once, here,
//! from the type it is reached through:
//!
//! - [`Vcpu`]: a live vCPU, any context;
//! - [`VcpuOp`]: an op on the thread that holds the vCPU;
//! - [`Sstc`]: the host has Sstc, so `vstimecmp` exists.
//!
//! What the CSRs need beyond that, the vCPU being loaded on this CPU with
//! preemption disabled, is about whose timer they program, not about memory:
//! the methods say so under "Context", and the timer logic calls them there.

use crate::bindings;
use crate::kvm::{kick_kind, Vcpu, VcpuOp};
use crate::timer::stats::Kick;

/// The host's timebase frequency, in Hz.
pub(crate) fn timebase() -> u64 {
    // SAFETY: reads `riscv_timebase`, set once at boot; no preconditions.
    unsafe { bindings::kvt_riscv_timebase() }
}

/// The host's counter (the `time` CSR).
pub(crate) fn host_cycles() -> u64 {
    // SAFETY: reads this hart's `time` CSR; no preconditions.
    unsafe { bindings::kvt_riscv_host_cycles() }
}

/// Proof that every hart of the host has Sstc, so that `vstimecmp` exists.
///
/// # Invariants
///
/// `riscv_isa_extension_available(NULL, SSTC)` is true: the extension is in
/// the ISA common to all harts, which does not change after boot.
#[derive(Clone, Copy)]
pub(crate) struct Sstc(());

impl Sstc {
    /// `Some` if the host has Sstc.
    pub(crate) fn probe() -> Option<Self> {
        // SAFETY: reads the ISA extensions found at boot; no preconditions.
        // INVARIANT: only made when the extension is available.
        unsafe { bindings::kvt_riscv_has_sstc() }.then_some(Self(()))
    }
}

impl Vcpu {
    /// The VM's offset from the host's counter to the guest's.
    pub(crate) fn time_delta(&self) -> u64 {
        // SAFETY: a live vCPU (`Vcpu`), so its VM is live too; the helper
        // reads the offset with `READ_ONCE()`.
        unsafe { bindings::kvt_riscv_time_delta(self.as_ptr()) }
    }

    /// The guest's counter: the host's `time` plus the VM's offset, in one
    /// call (the delivery path reads it at every delivery).
    pub(crate) fn guest_cycles(&self) -> u64 {
        // SAFETY: as in `time_delta`; the helper also reads the `time` CSR.
        unsafe { bindings::kvt_riscv_guest_cycles(self.as_ptr()) }
    }

    /// Set the VM's counter offset.
    pub(crate) fn set_time_delta(&self, delta: u64) {
        // SAFETY: as in `time_delta`; the helper writes with `WRITE_ONCE()`.
        unsafe { bindings::kvt_riscv_set_time_delta(self.as_ptr(), delta) }
    }

    /// Make the VS-level timer interrupt pending and kick the vCPU; how the
    /// kick reaches it.
    pub(crate) fn timer_irq_raise(&self) -> Kick {
        // SAFETY: a live vCPU (`Vcpu`).  The helper sets the bits under
        // `irqs_pending_lock`, a raw spinlock, as
        // `kvm_riscv_vcpu_set_interrupt()` does, and kicks only where needed
        // (`kvt_vcpu_kick()`), which any context may do (hard interrupt
        // included).
        kick_kind(unsafe { bindings::kvt_riscv_timer_irq_raise(self.as_ptr()) })
    }

    /// Clear the VS-level timer interrupt.
    pub(crate) fn timer_irq_clear(&self) {
        // SAFETY: as in `timer_irq_raise`, with
        // `kvm_riscv_vcpu_unset_interrupt()`, which cannot fail for
        // `IRQ_VS_TIMER`.
        unsafe { bindings::kvt_riscv_timer_irq_clear(self.as_ptr()) };
    }

    /// Whether the VS-level timer interrupt is pending and enabled by the
    /// guest.
    pub(crate) fn timer_irq_pending(&self) -> bool {
        // SAFETY: a live vCPU (`Vcpu`); `kvm_riscv_vcpu_has_interrupts()`
        // reads the pending bits under `irqs_pending_lock`, and the saved
        // `vsie`, as KVM's own `kvm_arch_vcpu_runnable()` does.
        unsafe { bindings::kvt_riscv_timer_irq_pending(self.as_ptr()) }
    }

    /// Whether the guest enables its timer interrupt (`vsie.STIE`).
    pub(crate) fn timer_irq_enabled(&self) -> bool {
        // SAFETY: a live vCPU (`Vcpu`); the helper reads the saved `vsie`
        // with `READ_ONCE()`.
        unsafe { bindings::kvt_riscv_timer_irq_enabled(self.as_ptr()) }
    }

    /// Load `delta` into this hart's `htimedelta`.
    ///
    /// # Context
    ///
    /// The vCPU is loaded on this CPU, preemption disabled: the CSR is then
    /// its.
    pub(crate) fn load_htimedelta(&self, delta: u64) {
        // SAFETY: KVM runs vCPUs only on a host with the H extension, and a
        // `Vcpu` exists only for a vCPU KVM created, so the CSR exists.  It
        // sets the guest's view of time, and touches no memory.
        unsafe { bindings::kvt_riscv_write_htimedelta(delta) }
    }

    /// Load `compare` into this hart's `vstimecmp`.
    ///
    /// # Context
    ///
    /// As for [`Vcpu::load_htimedelta`].
    pub(crate) fn load_vstimecmp(&self, _: Sstc, compare: u64) {
        // SAFETY: the CSR exists (`Sstc`).  It sets when the hart raises
        // VSTIP for the guest, and touches no memory.
        unsafe { bindings::kvt_riscv_write_vstimecmp(compare) }
    }

    /// This hart's `vstimecmp`, as the guest last programmed it.
    ///
    /// # Context
    ///
    /// The vCPU is loaded on this CPU, after a guest exit, interrupts
    /// disabled.
    pub(crate) fn read_vstimecmp(&self, _: Sstc) -> u64 {
        // SAFETY: the CSR exists (`Sstc`); reading it has no side effect.
        unsafe { bindings::kvt_riscv_read_vstimecmp() }
    }
}

impl VcpuOp<'_> {
    /// Make the VS-level timer interrupt pending straight into the vCPU's
    /// and this hart's `hvip`, with no kick.
    ///
    /// # Context
    ///
    /// Just before guest entry (`vcpu_pre_enter`): interrupts disabled, the
    /// vCPU loaded on this CPU, its pending interrupts already flushed.
    pub(crate) fn timer_irq_raise_now(&self) {
        // SAFETY: a live vCPU (`VcpuOp`).  The helper sets the pending bit
        // under `irqs_pending_lock` and writes the saved `hvip`, which KVM
        // writes only on the thread that holds the vCPU, as this one does
        // (`VcpuOp`).  The `hvip` CSR write touches no memory.
        unsafe { bindings::kvt_riscv_timer_irq_raise_now(self.as_ptr()) }
    }

    /// Make the guest's WFI trap to the host (`hstatus.VTW`) or not, from
    /// the vCPU's next guest entry until it is changed again.
    ///
    /// # Context
    ///
    /// Just before guest entry (`vcpu_pre_enter`) or after an exit
    /// (`vcpu_sync`): interrupts disabled, the vCPU loaded on this CPU.
    pub(crate) fn set_wfi_trap(&self, trap: bool) {
        // SAFETY: a live vCPU (`VcpuOp`).  The helper changes one bit of the
        // saved `hstatus`, which KVM reads and writes only on the thread
        // that holds the vCPU (at entry and exit), as this one does
        // (`VcpuOp`), and only between an exit and the next entry, where
        // the op runs.
        unsafe { bindings::kvt_riscv_set_wfi_trap(self.as_ptr(), trap) }
    }
}
