/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C helpers of kvm_vtimer (shim/riscv.c): static inlines, macros and CSR
 * accesses that Rust cannot call directly, one thin function each.
 */
#ifndef KVM_VTIMER_SHIM_H
#define KVM_VTIMER_SHIM_H

#include <linux/hrtimer.h>
#include <linux/kvm_host.h>
#include <linux/kvm_timer_backend.h>

/* Backend registration; THIS_MODULE is only known to C. */
int kvt_backend_register(const struct kvm_arch_timer_ops *ops);
void kvt_backend_unregister(void);

/* hrtimers: absolute, hard (expire in hard interrupt context). */
void kvt_hrtimer_init(struct hrtimer *timer,
		      enum hrtimer_restart (*fn)(struct hrtimer *));
void kvt_hrtimer_start(struct hrtimer *timer, u64 expires_ns);
void kvt_hrtimer_set_expires(struct hrtimer *timer, u64 expires_ns);
u64 kvt_ktime_get_ns(void);
unsigned int kvt_smp_processor_id(void);
void kvt_preempt_disable(void);
void kvt_preempt_enable(void);

/* The vCPU. */
void *kvt_vcpu_priv(struct kvm_vcpu *vcpu);
void kvt_vcpu_set_priv(struct kvm_vcpu *vcpu, void *priv);
bool kvt_vcpu_is_blocking(struct kvm_vcpu *vcpu);
void kvt_pr_warn_ratelimited(const char *what, u64 value);

/* RISC-V. */
bool kvt_riscv_has_sstc(void);
u64 kvt_riscv_timebase(void);
u64 kvt_riscv_host_cycles(void);
u64 kvt_riscv_time_delta(struct kvm_vcpu *vcpu);
void kvt_riscv_set_time_delta(struct kvm_vcpu *vcpu, u64 delta);
void kvt_riscv_write_htimedelta(u64 delta);
void kvt_riscv_write_vstimecmp(u64 compare);
u64 kvt_riscv_read_vstimecmp(void);
int kvt_riscv_timer_irq_raise(struct kvm_vcpu *vcpu);
int kvt_riscv_timer_irq_clear(struct kvm_vcpu *vcpu);
bool kvt_riscv_timer_irq_pending(struct kvm_vcpu *vcpu);
bool kvt_riscv_timer_irq_enabled(struct kvm_vcpu *vcpu);

#endif
