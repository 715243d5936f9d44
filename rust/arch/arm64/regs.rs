// SPDX-License-Identifier: GPL-2.0

//! The arm64 timer hardware and the vCPU's timer state in KVM, as safe
//! calls: host facts, the counter, the vCPU's saved timer registers and
//! counter offsets, this CPU's EL1 timers and traps, and the vGIC lines.
//!
//! The arm64 backend reaches C only through this module (and the common
//! wrappers), so that each helper's preconditions are argued once, here,
//! from the type it is reached through:
//!
//! - [`Vcpu`]: a live vCPU, any context;
//! - [`VcpuOp`]: an op on the thread that holds the vCPU, the only thread
//!   that writes the vCPU's saved registers and `kvm_run`.
//!
//! What the hardware accessors need beyond that (the vCPU loaded on this
//! CPU, interrupts disabled, a direct timer) is about whose timer they
//! program, not about memory: the methods say so under "Context", and the
//! timer logic calls them there.

use kernel::prelude::*;

use crate::bindings;
use crate::kvm::{Vcpu, VcpuOp};
use crate::timer::el1::{Error, Which};

/// The C helpers' name for timer `t`: `phys`.
fn is_phys(t: Which) -> bool {
    t == Which::Phys
}

/// Whether the host runs with VHE (the kernel at EL2).
pub(crate) fn has_vhe() -> bool {
    // SAFETY: reads a CPU capability fixed at boot; no preconditions.
    unsafe { bindings::kvt_arm64_has_vhe() }
}

/// Whether the CPU has `CNTPOFF_EL2` (ECV) and KVM uses it.
pub(crate) fn has_cntpoff() -> bool {
    // SAFETY: reads a CPU capability fixed at boot; no preconditions.
    unsafe { bindings::kvt_arm64_has_cntpoff() }
}

/// Whether the guest's deactivation of a mapped interrupt reaches the
/// host's (the vGIC has no `no_hw_deactivation`).
pub(crate) fn has_hw_deactivation() -> bool {
    // SAFETY: reads a property of the host fixed at KVM's init; no
    // preconditions.
    unsafe { bindings::kvt_arm64_has_hw_deactivation() }
}

/// The host's physical counter.
pub(crate) fn counter() -> u64 {
    // SAFETY: reads the counter (`arch_timer_read_counter()`); no
    // preconditions.
    unsafe { bindings::kvt_arm64_counter() }
}

/// The counter's frequency, in Hz.
pub(crate) fn counter_hz() -> u64 {
    // SAFETY: reads `CNTFRQ_EL0`; no preconditions.
    unsafe { bindings::kvt_arm64_counter_hz() }
}

/// The timer and the `enum kvm_arch_timer_regs` register of a ONE_REG id;
/// `None` if it is not one of the timers' registers.
pub(crate) fn one_reg(regid: u64) -> Option<(Which, bindings::kvm_arch_timer_regs)> {
    let (mut phys, mut treg) = (false, 0);
    // SAFETY: a pure mapping; the out-pointers are locals.
    if unsafe { bindings::kvt_arm64_one_reg(regid, &mut phys, &mut treg) } != 0 {
        return None;
    }
    Some((if phys { Which::Phys } else { Which::Virt }, treg))
}

impl Vcpu {
    /// The VM's offset of `t`'s counter from the host counter.
    pub(crate) fn offset(&self, t: Which) -> u64 {
        // SAFETY: a live vCPU (`Vcpu`), so its VM is live too; the helper
        // reads the offset with `READ_ONCE()`.
        unsafe { bindings::kvt_arm64_offset(self.as_ptr(), is_phys(t)) }
    }

    /// The guest's view of `t`'s counter: the host counter less the VM's
    /// offset, in one call (the delivery path reads it at every delivery).
    pub(crate) fn guest_counter(&self, t: Which) -> u64 {
        // SAFETY: as in `offset`; the helper also reads the counter
        // (`arch_timer_read_counter()`).
        unsafe { bindings::kvt_arm64_guest_counter(self.as_ptr(), is_phys(t)) }
    }

    /// Set the VM's offset of `t`'s counter.
    pub(crate) fn set_offset(&self, t: Which, offset: u64) {
        // SAFETY: as in `offset`; the helper writes with `WRITE_ONCE()`.
        unsafe { bindings::kvt_arm64_set_offset(self.as_ptr(), is_phys(t), offset) }
    }

    /// Whether userspace fixed the VM's counter offsets
    /// (`KVM_ARM_SET_COUNTER_OFFSET`).
    pub(crate) fn offset_fixed(&self) -> bool {
        // SAFETY: as in `offset`; the helper reads a VM flag with
        // `test_bit()`.
        unsafe { bindings::kvt_arm64_offset_fixed(self.as_ptr()) }
    }

    /// The vCPU's saved `CTL` of `t`.
    pub(crate) fn ctl(&self, t: Which) -> u64 {
        // SAFETY: a live vCPU (`Vcpu`).  A read of the vCPU's saved
        // register, which KVM's own timer also reads from its hrtimer
        // callback (`kvm_timer_should_fire()`); only the thread that holds
        // the vCPU writes it (`VcpuOp::set_ctl`).
        unsafe { bindings::kvt_arm64_ctl(self.as_ptr(), is_phys(t)) }
    }

    /// The vCPU's saved `CVAL` of `t`.
    pub(crate) fn cval(&self, t: Which) -> u64 {
        // SAFETY: as in `ctl`.
        unsafe { bindings::kvt_arm64_cval(self.as_ptr(), is_phys(t)) }
    }

    /// Whether the VM has the in-kernel vGIC.
    pub(crate) fn irqchip_in_kernel(&self) -> bool {
        // SAFETY: a live vCPU (`Vcpu`), so its VM is live too; reads a flag
        // that is set once, before any vCPU runs.
        unsafe { bindings::kvt_arm64_irqchip_in_kernel(self.as_ptr()) }
    }

    /// Whether the vCPU has nested virtualization (`KVM_ARM_VCPU_HAS_EL2`).
    pub(crate) fn nested(&self) -> bool {
        // SAFETY: a live vCPU (`Vcpu`); reads a CPU capability and the
        // vCPU's features, final once it has run.
        unsafe { bindings::kvt_arm64_nested(self.as_ptr()) }
    }

    /// Log, rate-limited, that the VM runs on KVM's built-in timer, and
    /// `why`.
    pub(crate) fn warn_declined(&self, why: &'static CStr) {
        // SAFETY: a live vCPU (`Vcpu`), so its VM is live too; `why` is a
        // NUL-terminated string that lives forever.
        unsafe { bindings::kvt_warn_vm_declined(self.as_ptr(), why.as_char_ptr()) }
    }

    /// Wake the blocked vCPU.
    pub(crate) fn wake_up(&self) {
        // SAFETY: a live vCPU (`Vcpu`); `kvm_vcpu_wake_up()` may be called
        // from any context.
        unsafe { bindings::kvt_vcpu_wake_up(self.as_ptr()) }
    }

    /// The WFIT deadline (virtual counter) if the vCPU waits in WFIT.
    pub(crate) fn wfit_deadline(&self) -> Option<u64> {
        let mut deadline = 0;
        // SAFETY: a live vCPU (`Vcpu`).  The helper reads the vCPU's flags,
        // its exit syndrome and a saved general register, as KVM's own
        // timer does from its hrtimer callback (`wfit_delay_ns()`); the
        // out-pointer is a local.
        unsafe { bindings::kvt_arm64_wfit_deadline(self.as_ptr(), &mut deadline) }
            .then_some(deadline)
    }

    /// Drive `t`'s interrupt line in the vGIC; nothing without the in-kernel
    /// vGIC.
    pub(crate) fn irq_line(&self, t: Which, level: bool) {
        // SAFETY: a live vCPU (`Vcpu`).  `kvm_vgic_inject_irq()` locks what
        // it touches: raw spinlocks, and before a GICv2 is initialised, its
        // lazy init takes the VM's config mutex (not reached: the timers
        // drive their lines once enabled, after `kvm_vgic_map_resources()`).
        unsafe { bindings::kvt_arm64_irq_line(self.as_ptr(), is_phys(t), level) }
    }

    /// Whether the guest has `t`'s mapped interrupt active in the vGIC.
    pub(crate) fn irq_map_active(&self, t: Which) -> bool {
        // SAFETY: a live vCPU (`Vcpu`); `kvm_vgic_map_is_active()` answers
        // `false` for a vGIC not initialised, and takes a raw spinlock.
        unsafe { bindings::kvt_arm64_irq_map_active(self.as_ptr(), is_phys(t)) }
    }

    /// Reset the vGIC state of `t`'s mapped interrupt; nothing before the
    /// vGIC is initialised.
    pub(crate) fn irq_map_reset(&self, t: Which) {
        // SAFETY: a live vCPU (`Vcpu`); the helper returns at once if the
        // vGIC (and so the vCPU's private interrupts) is not initialised,
        // and `kvm_vgic_reset_mapped_irq()` takes a raw spinlock.
        unsafe { bindings::kvt_arm64_irq_map_reset(self.as_ptr(), is_phys(t)) }
    }

    /// Set the active state of the host's interrupt of `t` (a per-CPU
    /// interrupt), on this CPU.
    ///
    /// # Context
    ///
    /// `t` is a direct timer of the vCPU loaded on this CPU, or about to be.
    pub(crate) fn host_irq_set_active(&self, t: Which, active: bool) {
        // SAFETY: a live vCPU (`Vcpu`), whose timer contexts KVM set up
        // before `vcpu_init`; `irq_set_irqchip_state()` takes the interrupt
        // descriptor's raw lock.
        unsafe { bindings::kvt_arm64_host_irq_set_active(self.as_ptr(), is_phys(t), active) }
    }

    /// Claim the timers' PPIs (distinct, owned by us) and map the direct
    /// ones to the host's interrupts.
    ///
    /// # Context
    ///
    /// Process context (it takes the VM's `config_lock`): the vCPU's first
    /// run, in-kernel vGIC.
    pub(crate) fn irq_setup(&self, direct: &[Which]) -> Result<(), Error> {
        let map_phys = direct.contains(&Which::Phys);
        // SAFETY: a live vCPU (`Vcpu`).  The helper claims the PPIs with
        // `kvm_vgic_set_owner()`, which fails for a vGIC not initialised,
        // before it maps them.
        match unsafe { bindings::kvt_arm64_irq_setup(self.as_ptr(), map_phys) } {
            0 => Ok(()),
            e if e == EINVAL.to_errno() => Err(Error::BadIrqs),
            e => Err(Error::Map(e)),
        }
    }

    /// The timer lines userspace was last told (`[virtual, physical]`).
    pub(crate) fn user_lines(&self) -> [bool; 2] {
        let (mut v, mut p) = (false, false);
        // SAFETY: a live vCPU (`Vcpu`) and its `kvm_run`, which lives as long
        // and which userspace may change at any time; the out-pointers are
        // locals.
        unsafe { bindings::kvt_arm64_user_lines(self.as_ptr(), &mut v, &mut p) };
        [v, p]
    }

    /// Load direct timer `t` of this vCPU into this CPU's hardware:
    /// `offset` as its counter offset, `cval` as is, then `ctl`.
    ///
    /// # Context
    ///
    /// The vCPU is loaded on this CPU, interrupts disabled; `t` is direct
    /// (the physical timer only on VHE, where the host does not use it).
    pub(crate) fn hw_load(&self, t: Which, offset: u64, ctl: u64, cval: u64) {
        // SAFETY: KVM is initialised, as a `Vcpu` exists, so the hypervisor
        // takes `kvm_arm_timer_write_cntvoff()` on nVHE.  The helper writes
        // the EL1 timer's system registers (`CNTPOFF_EL2` only where the CPU
        // has it) and touches no memory.
        unsafe { bindings::kvt_arm64_hw_load(is_phys(t), offset, ctl, cval) }
    }

    /// Read direct timer `t`'s hardware `CTL` and `CVAL`, and stop it
    /// (counter offset back to 0).
    ///
    /// # Context
    ///
    /// As for [`Vcpu::hw_load`].
    pub(crate) fn hw_save(&self, t: Which) -> (u64, u64) {
        let (mut ctl, mut cval) = (0, 0);
        // SAFETY: as in `hw_load`; the out-pointers are locals.
        unsafe { bindings::kvt_arm64_hw_save(is_phys(t), &mut ctl, &mut cval) };
        (ctl, cval)
    }

    /// The live `CTL` of direct timer `t` (ISTATUS included).
    ///
    /// # Context
    ///
    /// The vCPU is loaded on this CPU, and `t` is direct.
    pub(crate) fn hw_ctl(&self, t: Which) -> u64 {
        // SAFETY: reads an EL1 timer register of this CPU; no side effect.
        unsafe { bindings::kvt_arm64_hw_ctl(is_phys(t)) }
    }

    /// The live `CVAL` of direct timer `t`, as the hardware has it.
    ///
    /// # Context
    ///
    /// As for [`Vcpu::hw_ctl`].
    pub(crate) fn hw_cval(&self, t: Which) -> u64 {
        // SAFETY: reads an EL1 timer register of this CPU; no side effect.
        unsafe { bindings::kvt_arm64_hw_cval(is_phys(t)) }
    }

    /// Set this CPU's counter and timer traps for the VM's offsets (VHE).
    ///
    /// # Context
    ///
    /// The vCPU is being loaded on this CPU, preemption disabled.
    pub(crate) fn set_traps(&self) {
        // SAFETY: a live vCPU (`Vcpu`); the helper reads the VM's physical
        // offset with `READ_ONCE()` and writes `CNTHCTL_EL2`, on VHE only.
        unsafe { bindings::kvt_arm64_set_traps(self.as_ptr()) }
    }
}

impl VcpuOp<'_> {
    /// Save `ctl` as the vCPU's `CTL` of `t`.
    pub(crate) fn set_ctl(&self, t: Which, ctl: u64) {
        // SAFETY: a live vCPU (`VcpuOp`).  The vCPU's saved registers are
        // written only by the thread that holds it, this one (`VcpuOp`):
        // KVM's world switch and register accesses, and the ops.
        unsafe { bindings::kvt_arm64_set_ctl(self.as_ptr(), is_phys(t), ctl) }
    }

    /// Save `cval` as the vCPU's `CVAL` of `t`.
    pub(crate) fn set_cval(&self, t: Which, cval: u64) {
        // SAFETY: as in `set_ctl`.
        unsafe { bindings::kvt_arm64_set_cval(self.as_ptr(), is_phys(t), cval) }
    }

    /// Tell userspace the timer lines (`[virtual, physical]`).
    pub(crate) fn set_user_lines(&self, [v, p]: [bool; 2]) {
        // SAFETY: a live vCPU (`VcpuOp`) and its `kvm_run`; KVM writes
        // `device_irq_level` only on the thread that holds the vCPU, this
        // one (`VcpuOp`).
        unsafe { bindings::kvt_arm64_set_user_lines(self.as_ptr(), v, p) }
    }
}
