// SPDX-License-Identifier: GPL-2.0
/*
 * kvm_vtimer's C helpers for RISC-V: what Rust cannot reach (static
 * inlines, CSR macros, THIS_MODULE), each a thin function.  No timer logic
 * lives here.
 */

#include <linux/debugfs.h>
#include <linux/hrtimer.h>
#include <linux/kvm_host.h>
#include <linux/kvm_timer_backend.h>
#include <linux/module.h>
#include <linux/ratelimit.h>
#include <linux/seq_file.h>
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

static unsigned int advance_max_ns = 50000;
module_param(advance_max_ns, uint, 0444);
MODULE_PARM_DESC(advance_max_ns,
		 "Bound of the adaptive timer advance in ns (0: no advance)");

u32 kvt_advance_max_ns(void)
{
	return READ_ONCE(advance_max_ns);
}

/* One line of the "vtimer" file: vCPU @id, or the VM's total if @id < 0. */
static void kvt_stats_print(struct seq_file *m, int id,
			    const struct kvt_stats *s)
{
	int i;

	if (id < 0)
		seq_puts(m, "total");
	else
		seq_printf(m, "vcpu%d", id);
	seq_printf(m, " irqs=%llu early=%llu wakeups=%llu ipis=%llu",
		   s->irqs, s->early, s->wakeups, s->ipis);
	seq_printf(m, " starts=%llu cancels=%llu migrations=%llu advance_ns=%llu",
		   s->starts, s->cancels, s->migrations, s->advance_ns);
	for (i = 0; i < KVT_LATE_BUCKETS; i++)
		seq_printf(m, "%s%llu", i ? "," : " late_log2=", s->late[i]);
	seq_putc(m, '\n');
}

static int kvt_stats_show(struct seq_file *m, void *unused)
{
	struct kvm *kvm = m->private;
	struct kvt_stats s, total = {};
	struct kvm_vcpu *vcpu;
	unsigned long n;
	int i;

	/* Online vCPUs, and their timer state, live until the VM goes. */
	mutex_lock(&kvm->lock);
	kvm_for_each_vcpu(n, vcpu, kvm) {
		void *priv = vcpu->arch.timer.backend_priv;

		if (!priv)
			continue;
		kvt_rust_vcpu_stats(priv, &s);
		kvt_stats_print(m, vcpu->vcpu_id, &s);
		total.irqs += s.irqs;
		total.early += s.early;
		total.wakeups += s.wakeups;
		total.ipis += s.ipis;
		total.starts += s.starts;
		total.cancels += s.cancels;
		total.migrations += s.migrations;
		total.advance_ns = max(total.advance_ns, s.advance_ns);
		for (i = 0; i < KVT_LATE_BUCKETS; i++)
			total.late[i] += s.late[i];
	}
	mutex_unlock(&kvm->lock);
	kvt_stats_print(m, -1, &total);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(kvt_stats);

/* Serialises the lookup and creation of the per-VM file. */
static DEFINE_MUTEX(kvt_debugfs_lock);

void kvt_debugfs_add_vm(struct kvm_vcpu *vcpu)
{
	struct kvm *kvm = vcpu->kvm;
	struct dentry *d;

	if (IS_ERR_OR_NULL(kvm->debugfs_dentry))
		return;
	mutex_lock(&kvt_debugfs_lock);
	d = debugfs_lookup("vtimer", kvm->debugfs_dentry);
	if (d)
		dput(d);
	else
		debugfs_create_file("vtimer", 0444, kvm->debugfs_dentry, kvm,
				    &kvt_stats_fops);
	mutex_unlock(&kvt_debugfs_lock);
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

/* How kvm_vcpu_kick() is about to reach @vcpu; racy, for statistics. */
static enum kvt_kick kvt_kick_kind(struct kvm_vcpu *vcpu)
{
	if (kvm_vcpu_is_blocking(vcpu))
		return KVT_KICK_WOKEN;
	if (READ_ONCE(vcpu->mode) == IN_GUEST_MODE &&
	    READ_ONCE(vcpu->cpu) != raw_smp_processor_id())
		return KVT_KICK_IPI;
	return KVT_KICK_QUIET;
}

enum kvt_kick kvt_vcpu_kick(struct kvm_vcpu *vcpu)
{
	enum kvt_kick kind = kvt_kick_kind(vcpu);

	kvm_vcpu_kick(vcpu);
	return kind;
}

void kvt_cpu_relax(void)
{
	cpu_relax();
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

enum kvt_kick kvt_riscv_timer_irq_raise(struct kvm_vcpu *vcpu)
{
	enum kvt_kick kind = kvt_kick_kind(vcpu);

	/* Cannot fail for IRQ_VS_TIMER; it kicks the vCPU. */
	kvm_riscv_vcpu_set_interrupt(vcpu, IRQ_VS_TIMER);
	return kind;
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
