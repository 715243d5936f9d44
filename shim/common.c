// SPDX-License-Identifier: GPL-2.0
/*
 * kvm_vtimer's C helpers common to both architectures: what Rust cannot
 * reach (static inlines, macros, THIS_MODULE), each a thin function, and
 * the per-VM statistics file.  No timer logic lives here.
 */

#include <linux/debugfs.h>
#include <linux/hrtimer.h>
#include <linux/kvm_host.h>
#include <linux/kvm_timer_backend.h>
#include <linux/module.h>
#include <linux/ratelimit.h>
#include <linux/seq_file.h>

#include "../include/kvm_vtimer_shim.h"

/*
 * The timer advance of a blocked vCPU waits up to this long before guest
 * entry: on RISC-V with interrupts off, just before the entry; on arm64 with
 * interrupts on, in the vCPU's last check before it leaves WFI.  The hard
 * limit caps that wait whatever the administrator asks for; it leaves room
 * for the 40 us path of an emulated host (QEMU -icount shift=3).  On
 * PREEMPT_RT such a wait is latency for every other task, so advance is off
 * there by default.
 */
#define KVT_ADVANCE_MAX_NS_LIMIT	100000U

static unsigned int advance_max_ns = IS_ENABLED(CONFIG_PREEMPT_RT) ? 0 : 50000;

static int kvt_advance_max_ns_set(const char *val,
				  const struct kernel_param *kp)
{
	return param_set_uint_minmax(val, kp, 0, KVT_ADVANCE_MAX_NS_LIMIT);
}

static const struct kernel_param_ops kvt_advance_max_ns_ops = {
	.set = kvt_advance_max_ns_set,
	.get = param_get_uint,
};

module_param_cb(advance_max_ns, &kvt_advance_max_ns_ops, &advance_max_ns, 0644);
MODULE_PARM_DESC(advance_max_ns,
		 "Bound of the adaptive timer advance in ns, at most 100000, read at vCPU creation (0: no advance; default 50000, 0 on PREEMPT_RT)");

u32 kvt_advance_max_ns(void)
{
	return READ_ONCE(advance_max_ns);
}

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
	seq_printf(m, " running_advance_ns=%llu", s->running_advance_ns);
	seq_printf(m, " spin_ns=%llu untrapped=%llu untrapped_ns=%llu",
		   s->spin_ns, s->untrapped, s->untrapped_ns);
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

	if (kvt_vm_declined(kvm))
		seq_puts(m, "declined: the VM runs on KVM's built-in timer\n");

	/* Online vCPUs, and their timer state, live until the VM goes. */
	mutex_lock(&kvm->lock);
	kvm_for_each_vcpu(n, vcpu, kvm) {
		void *priv = kvt_vcpu_priv(vcpu);

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
		total.running_advance_ns = max(total.running_advance_ns,
					       s.running_advance_ns);
		total.spin_ns += s.spin_ns;
		total.untrapped += s.untrapped;
		total.untrapped_ns += s.untrapped_ns;
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

/*
 * From @timer's callback only, before it returns HRTIMER_RESTART: the core
 * has taken the timer off its queue to run it.  If the callback started the
 * timer again itself, that start stands: false, and the expiry is left alone
 * (changing it would reorder the queue under the core).
 */
bool kvt_hrtimer_set_expires(struct hrtimer *timer, u64 expires_ns)
{
	if (hrtimer_is_queued(timer))
		return false;
	hrtimer_set_expires(timer, ns_to_ktime(expires_ns));
	return true;
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

bool kvt_vcpu_is_blocking(struct kvm_vcpu *vcpu)
{
	return kvm_vcpu_is_blocking(vcpu);
}

/*
 * Whether @vcpu is loaded on this CPU, its thread the one that runs here:
 * kvm_running_vcpu is set from vcpu_load()/kvm_sched_in() to
 * vcpu_put()/kvm_sched_out().  From an interrupt, that it interrupted the
 * vCPU's thread.
 */
bool kvt_vcpu_running_here(struct kvm_vcpu *vcpu)
{
	return kvm_get_running_vcpu() == vcpu;
}

/*
 * How kvm_vcpu_kick() is about to reach @vcpu: racy, for statistics, and
 * for kvt_vcpu_kick() after its barrier.
 */
enum kvt_kick kvt_kick_kind(struct kvm_vcpu *vcpu)
{
	if (kvm_vcpu_is_blocking(vcpu))
		return KVT_KICK_WOKEN;
	if (READ_ONCE(vcpu->mode) == IN_GUEST_MODE &&
	    READ_ONCE(vcpu->cpu) != raw_smp_processor_id())
		return KVT_KICK_IPI;
	return KVT_KICK_QUIET;
}

/*
 * kvm_vcpu_kick(), where it has something to do: the vCPU blocks (it is
 * woken) or runs in the guest (it is made to exit).  Otherwise, outside the
 * guest and not blocking, the vCPU looks at what the caller has just stored
 * (a pending interrupt, a delivery noted for guest entry) before it enters.
 * RISC-V's run loop, this helper's user, sets IN_GUEST_MODE, then a full
 * barrier, then flushes its interrupts and calls the timer's pre-entry op;
 * a blocking vCPU publishes itself as blocking
 * (prepare_to_rcuwait()), then a full barrier, then checks whether it may
 * block (kvm_vcpu_check_block()).  The barrier here pairs with those two:
 * either this reads the vCPU's new state and kicks, or the vCPU reads the
 * caller's store.  kvm_vcpu_kick() itself would find nothing to do there
 * (no waiter to wake, no IN_GUEST_MODE to end), but on the delivery path
 * of every timer interrupt it costs what the guest waits for.
 */
enum kvt_kick kvt_vcpu_kick(struct kvm_vcpu *vcpu)
{
	enum kvt_kick kind;

	/* The caller's store before the vCPU's state: see above. */
	smp_mb();
	kind = kvt_kick_kind(vcpu);
	if (kind != KVT_KICK_QUIET || READ_ONCE(vcpu->mode) == IN_GUEST_MODE)
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

void kvt_warn_vm_declined(struct kvm_vcpu *vcpu, const char *why)
{
	pr_warn_ratelimited("kvm_vtimer: VM of pid %d: %s: it runs on KVM's built-in timer\n",
			    vcpu->kvm->userspace_pid, why);
}
