// SPDX-License-Identifier: GPL-2.0
/*
 * kvm_vtimer's C helpers for RISC-V: what Rust cannot reach (static
 * inlines, CSR macros), each a thin function.  No timer logic lives here.
 */

#include <linux/kvm_host.h>
#include <linux/module.h>
#include <linux/sched/stat.h>
#include <asm/csr.h>
#include <asm/delay.h>
#include <asm/kvm_vcpu_timer.h>
#include <asm/timex.h>
#include <clocksource/timer-riscv.h>

#include "../include/kvm_vtimer_shim.h"

/*
 * RISC-V with Sstc: a vCPU that the advance woke before its deadline enters
 * the guest with WFI not trapping (hstatus.VTW clear) instead of waiting out
 * the rest with interrupts off; the guest's WFI then waits in the hart, which
 * raises the interrupt at the deadline itself.  Until the vCPU's next exit
 * (or, with the deadline just ahead then, the one after) the guest's WFIs
 * keep the CPU, as with arm64's wfi_trap_policy=notrap: only when nothing
 * else is runnable there, and any host interrupt (the tick, a reschedule
 * IPI) ends it.  Documentation/riscv.rst, "Direct WFI (Sstc)".
 */
static bool direct_wfi = true;
module_param(direct_wfi, bool, 0644);
MODULE_PARM_DESC(direct_wfi,
		 "RISC-V Sstc: a vCPU woken early enters with WFI untrapped when it is its CPU's only task (default Y)");

bool kvt_direct_wfi(void)
{
	return READ_ONCE(direct_wfi) && single_task_running();
}

/* RISC-V's hook has no vm_accept: a bound backend runs every VM. */
bool kvt_vm_declined(struct kvm *kvm)
{
	return false;
}

/* Marked: the host timer's callback may read it while deinit clears it. */
void *kvt_vcpu_priv(struct kvm_vcpu *vcpu)
{
	return READ_ONCE(vcpu->arch.timer.backend_priv);
}

void kvt_vcpu_set_priv(struct kvm_vcpu *vcpu, void *priv)
{
	WRITE_ONCE(vcpu->arch.timer.backend_priv, priv);
}

bool kvt_riscv_has_sstc(void)
{
	return riscv_isa_extension_available(NULL, SSTC);
}

u64 kvt_riscv_timebase(void)
{
	return riscv_timebase;
}

u64 kvt_riscv_host_cycles(void)
{
	return get_cycles64();
}

u64 kvt_riscv_time_delta(struct kvm_vcpu *vcpu)
{
	return READ_ONCE(vcpu->kvm->arch.timer.time_delta);
}

u64 kvt_riscv_guest_cycles(struct kvm_vcpu *vcpu)
{
	return get_cycles64() + kvt_riscv_time_delta(vcpu);
}

void kvt_riscv_set_time_delta(struct kvm_vcpu *vcpu, u64 delta)
{
	WRITE_ONCE(vcpu->kvm->arch.timer.time_delta, delta);
}

void kvt_riscv_write_htimedelta(u64 delta)
{
	csr_write(CSR_HTIMEDELTA, delta);
}

void kvt_riscv_write_vstimecmp(u64 compare)
{
	csr_write(CSR_VSTIMECMP, compare);
}

u64 kvt_riscv_read_vstimecmp(void)
{
	return csr_read(CSR_VSTIMECMP);
}

/*
 * As kvm_riscv_vcpu_set_interrupt(vcpu, IRQ_VS_TIMER): VSTIP pending, for
 * the vCPU's next flush of its interrupts (at guest entry, under the same
 * lock), but with a kick only where it has something to do (kvt_vcpu_kick()).
 */
enum kvt_kick kvt_riscv_timer_irq_raise(struct kvm_vcpu *vcpu)
{
	unsigned long flags;

	raw_spin_lock_irqsave(&vcpu->arch.irqs_pending_lock, flags);
	__set_bit(IRQ_VS_TIMER, vcpu->arch.irqs_pending);
	__set_bit(IRQ_VS_TIMER, vcpu->arch.irqs_pending_mask);
	raw_spin_unlock_irqrestore(&vcpu->arch.irqs_pending_lock, flags);
	return kvt_vcpu_kick(vcpu);
}

/*
 * Just before guest entry, with interrupts off: KVM has already flushed
 * the pending interrupts into hvip, so set VSTIP there too.  The pending
 * bit keeps it across exits until the guest's next set_timer clears it.
 */
void kvt_riscv_timer_irq_raise_now(struct kvm_vcpu *vcpu)
{
	struct kvm_vcpu_csr *csr = &vcpu->arch.guest_csr;
	unsigned long flags;

	raw_spin_lock_irqsave(&vcpu->arch.irqs_pending_lock, flags);
	__set_bit(IRQ_VS_TIMER, vcpu->arch.irqs_pending);
	csr->hvip |= BIT(IRQ_VS_TIMER);
	raw_spin_unlock_irqrestore(&vcpu->arch.irqs_pending_lock, flags);
	csr_write(CSR_HVIP, csr->hvip);
}

int kvt_riscv_timer_irq_clear(struct kvm_vcpu *vcpu)
{
	return kvm_riscv_vcpu_unset_interrupt(vcpu, IRQ_VS_TIMER);
}

bool kvt_riscv_timer_irq_pending(struct kvm_vcpu *vcpu)
{
	return kvm_riscv_vcpu_has_interrupts(vcpu, BIT(IRQ_VS_TIMER));
}

bool kvt_riscv_timer_irq_enabled(struct kvm_vcpu *vcpu)
{
	return READ_ONCE(vcpu->arch.guest_csr.vsie) & BIT(IRQ_S_TIMER);
}

/*
 * Whether the guest's WFI traps (hstatus.VTW), from the next guest entry on:
 * KVM loads the saved hstatus at every entry and saves it at every exit, on
 * the vCPU's thread, the caller's.
 */
void kvt_riscv_set_wfi_trap(struct kvm_vcpu *vcpu, bool trap)
{
	if (trap)
		vcpu->arch.guest_context.hstatus |= HSTATUS_VTW;
	else
		vcpu->arch.guest_context.hstatus &= ~HSTATUS_VTW;
}
