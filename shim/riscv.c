// SPDX-License-Identifier: GPL-2.0
/*
 * kvm_vtimer's C helpers for RISC-V: what Rust cannot reach (static
 * inlines, CSR macros, THIS_MODULE), each a thin function.  No timer logic
 * lives here.
 */

#include <linux/hrtimer.h>
#include <linux/kvm_host.h>
#include <linux/kvm_timer_backend.h>
#include <linux/module.h>
#include <linux/ratelimit.h>
#include <asm/csr.h>
#include <asm/delay.h>
#include <asm/kvm_vcpu_timer.h>
#include <asm/timex.h>
#include <clocksource/timer-riscv.h>

#include "../include/kvm_vtimer_shim.h"

static struct kvm_timer_backend kvt_backend = {
	.name = "kvm_vtimer",
	.owner = THIS_MODULE,
};

int kvt_backend_register(const struct kvm_arch_timer_ops *ops)
{
	kvt_backend.ops = ops;
	return kvm_timer_backend_register(&kvt_backend);
}

void kvt_backend_unregister(void)
{
	kvm_timer_backend_unregister(&kvt_backend);
}

void kvt_hrtimer_init(struct hrtimer *timer,
		      enum hrtimer_restart (*fn)(struct hrtimer *))
{
	hrtimer_init(timer, CLOCK_MONOTONIC, HRTIMER_MODE_ABS_HARD);
	timer->function = fn;
}

void kvt_hrtimer_start(struct hrtimer *timer, u64 expires_ns)
{
	hrtimer_start(timer, ns_to_ktime(expires_ns),
		      HRTIMER_MODE_ABS_PINNED_HARD);
}

void kvt_hrtimer_set_expires(struct hrtimer *timer, u64 expires_ns)
{
	hrtimer_set_expires(timer, ns_to_ktime(expires_ns));
}

u64 kvt_ktime_get_ns(void)
{
	return ktime_get_ns();
}

unsigned int kvt_smp_processor_id(void)
{
	return raw_smp_processor_id();
}

void kvt_preempt_disable(void)
{
	preempt_disable();
}

void kvt_preempt_enable(void)
{
	preempt_enable();
}

void *kvt_vcpu_priv(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.timer.backend_priv;
}

void kvt_vcpu_set_priv(struct kvm_vcpu *vcpu, void *priv)
{
	vcpu->arch.timer.backend_priv = priv;
}

bool kvt_vcpu_is_blocking(struct kvm_vcpu *vcpu)
{
	return kvm_vcpu_is_blocking(vcpu);
}

void kvt_pr_warn_ratelimited(const char *what, u64 value)
{
	pr_warn_ratelimited("kvm_vtimer: %s: %#llx\n", what, value);
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

int kvt_riscv_timer_irq_raise(struct kvm_vcpu *vcpu)
{
	return kvm_riscv_vcpu_set_interrupt(vcpu, IRQ_VS_TIMER);
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
