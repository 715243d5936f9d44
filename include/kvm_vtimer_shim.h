/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C helpers of kvm_vtimer (shim/common.c, shim/riscv.c, shim/arm64.c):
 * static inlines, macros and register accesses that Rust cannot call
 * directly, one thin function each.
 */
#ifndef KVM_VTIMER_SHIM_H
#define KVM_VTIMER_SHIM_H

#include <linux/hrtimer.h>
#include <linux/kvm_host.h>
#include <linux/kvm_timer_backend.h>

/* Backend registration; THIS_MODULE is only known to C. */
int kvt_backend_register(const struct kvm_arch_timer_ops *ops);
void kvt_backend_unregister(void);

/* How a kick reaches a vCPU (for the statistics). */
enum kvt_kick {
	KVT_KICK_QUIET,		/* it sees the interrupt at its next entry */
	KVT_KICK_WOKEN,		/* it was blocked and is woken */
	KVT_KICK_IPI,		/* it runs on another CPU and is interrupted */
};

/*
 * Per-vCPU statistics, as the debugfs file shows them; the Rust side fills
 * them from its counters (kvt_rust_vcpu_stats).
 */
#define KVT_LATE_BUCKETS	16

struct kvt_stats {
	u64 irqs;
	u64 early;
	u64 wakeups;
	u64 ipis;
	u64 starts;
	u64 cancels;
	u64 migrations;
	u64 advance_ns;		/* a blocked vCPU's wakeup path */
	u64 running_advance_ns;	/* a running vCPU's delivery path (SBI) */
	u64 spin_ns;		/* waited for deadlines before guest entry */
	u64 untrapped;		/* entries with WFI untrapped (direct_wfi) */
	u64 untrapped_ns;	/* from those entries to the next exit */
	u64 late[KVT_LATE_BUCKETS];
};

/* Implemented in Rust: @priv is a vCPU's backend_priv. */
void kvt_rust_vcpu_stats(void *priv, struct kvt_stats *out);
bool kvt_rust_arm64_input_level(void *priv, bool phys);

/* The VM's "vtimer" file in its KVM debugfs directory, made once. */
void kvt_debugfs_add_vm(struct kvm_vcpu *vcpu);

/* hrtimers: absolute, hard (expire in hard interrupt context). */
void kvt_hrtimer_init(struct hrtimer *timer,
		      enum hrtimer_restart (*fn)(struct hrtimer *));
void kvt_hrtimer_start(struct hrtimer *timer, u64 expires_ns);
/* From the timer's callback; false if the callback started it itself. */
bool kvt_hrtimer_set_expires(struct hrtimer *timer, u64 expires_ns);
u64 kvt_ktime_get_ns(void);
unsigned int kvt_smp_processor_id(void);
void kvt_preempt_disable(void);
void kvt_preempt_enable(void);

/* The vCPU. */
void *kvt_vcpu_priv(struct kvm_vcpu *vcpu);
void kvt_vcpu_set_priv(struct kvm_vcpu *vcpu, void *priv);
bool kvt_vcpu_is_blocking(struct kvm_vcpu *vcpu);
bool kvt_vcpu_running_here(struct kvm_vcpu *vcpu);
enum kvt_kick kvt_kick_kind(struct kvm_vcpu *vcpu);
enum kvt_kick kvt_vcpu_kick(struct kvm_vcpu *vcpu);
void kvt_vcpu_wake_up(struct kvm_vcpu *vcpu);
void kvt_cpu_relax(void);
/* The advance_max_ns module parameter (shim/common.c). */
u32 kvt_advance_max_ns(void);
unsigned long kvt_local_irq_save(void);
void kvt_local_irq_restore(unsigned long flags);
void kvt_pr_warn_ratelimited(const char *what, u64 value);
/* A VM left to KVM's built-in timer: why, in the kernel log. */
void kvt_warn_vm_declined(struct kvm_vcpu *vcpu, const char *why);
/* Whether the backend left @kvm to KVM's built-in timer (arch shim). */
bool kvt_vm_declined(struct kvm *kvm);

/* RISC-V (shim/riscv.c). */
bool kvt_riscv_has_sstc(void);
u64 kvt_riscv_timebase(void);
u64 kvt_riscv_host_cycles(void);
u64 kvt_riscv_time_delta(struct kvm_vcpu *vcpu);
u64 kvt_riscv_guest_cycles(struct kvm_vcpu *vcpu);
void kvt_riscv_set_time_delta(struct kvm_vcpu *vcpu, u64 delta);
void kvt_riscv_write_htimedelta(u64 delta);
void kvt_riscv_write_vstimecmp(u64 compare);
u64 kvt_riscv_read_vstimecmp(void);
enum kvt_kick kvt_riscv_timer_irq_raise(struct kvm_vcpu *vcpu);
void kvt_riscv_timer_irq_raise_now(struct kvm_vcpu *vcpu);
int kvt_riscv_timer_irq_clear(struct kvm_vcpu *vcpu);
bool kvt_riscv_timer_irq_pending(struct kvm_vcpu *vcpu);
bool kvt_riscv_timer_irq_enabled(struct kvm_vcpu *vcpu);
void kvt_riscv_set_wfi_trap(struct kvm_vcpu *vcpu, bool trap);
/* The direct_wfi module parameter, and nothing else runnable here. */
bool kvt_direct_wfi(void);

/* arm64 (shim/arm64.c); @phys: the EL1 physical timer, else the virtual. */
bool kvt_arm64_has_vhe(void);
bool kvt_arm64_has_cntpoff(void);
bool kvt_arm64_has_hw_deactivation(void);
u64 kvt_arm64_counter(void);
u64 kvt_arm64_counter_hz(void);
u64 kvt_arm64_offset(struct kvm_vcpu *vcpu, bool phys);
u64 kvt_arm64_guest_counter(struct kvm_vcpu *vcpu, bool phys);
void kvt_arm64_set_offset(struct kvm_vcpu *vcpu, bool phys, u64 offset);
bool kvt_arm64_offset_fixed(struct kvm_vcpu *vcpu);
u64 kvt_arm64_ctl(struct kvm_vcpu *vcpu, bool phys);
u64 kvt_arm64_cval(struct kvm_vcpu *vcpu, bool phys);
void kvt_arm64_set_ctl(struct kvm_vcpu *vcpu, bool phys, u64 ctl);
void kvt_arm64_set_cval(struct kvm_vcpu *vcpu, bool phys, u64 cval);
void kvt_arm64_hw_load(bool phys, u64 offset, u64 ctl, u64 cval);
void kvt_arm64_hw_save(bool phys, u64 *ctl, u64 *cval);
u64 kvt_arm64_hw_ctl(bool phys);
u64 kvt_arm64_hw_cval(bool phys);
void kvt_arm64_set_traps(struct kvm_vcpu *vcpu);
bool kvt_arm64_irqchip_in_kernel(struct kvm_vcpu *vcpu);
bool kvt_arm64_nested(struct kvm_vcpu *vcpu);
void kvt_arm64_irq_line(struct kvm_vcpu *vcpu, bool phys, bool level);
bool kvt_arm64_irq_map_active(struct kvm_vcpu *vcpu, bool phys);
void kvt_arm64_irq_map_reset(struct kvm_vcpu *vcpu, bool phys);
void kvt_arm64_host_irq_set_active(struct kvm_vcpu *vcpu, bool phys,
				   bool active);
int kvt_arm64_irq_setup(struct kvm_vcpu *vcpu, bool map_phys);
bool kvt_arm64_wfit_deadline(struct kvm_vcpu *vcpu, u64 *deadline);
void kvt_arm64_user_lines(struct kvm_vcpu *vcpu, bool *virt, bool *phys);
void kvt_arm64_set_user_lines(struct kvm_vcpu *vcpu, bool virt, bool phys);
int kvt_arm64_one_reg(u64 regid, bool *phys, u32 *treg);

#endif
