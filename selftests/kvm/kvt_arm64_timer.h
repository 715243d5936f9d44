/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * What kvm_vtimer's arm64 timer selftests share: a one-vCPU VM with a vGICv3
 * whose guest takes the virtual and physical timers' interrupts, a record of
 * each interrupt, and the host's view of the counters.
 *
 * The guest's interrupt handler accepts only the timer PPIs.  It checks what
 * the architecture promises of a timer interrupt: the timer is enabled and
 * unmasked, ISTATUS is set and the counter has reached CVAL.  Then it masks
 * and disables the timer (so that the level drops) and counts the interrupt.
 */
#ifndef KVT_ARM64_TIMER_H
#define KVT_ARM64_TIMER_H

#include "arch_timer.h"
#include "gic.h"
#include "kvm_util.h"
#include "processor.h"
#include "ucall_common.h"
#include "vgic.h"

#include "kvt_common.h"

#define KVT_NR_TIMERS		2
#define KVT_CTL_MASK		(CTL_ENABLE | CTL_IMASK | CTL_ISTATUS)

/* What the guest saw of one timer's interrupts. */
struct kvt_timer_irqs {
	u64 count;	/* timer interrupts taken */
	u64 cnt;	/* the counter, read in the last one's handler */
	u64 cval;	/* CVAL then */
	u64 ctl;	/* CTL then, before the handler masked the timer */
};

/* Filled in by the host before the guest runs (kvt_timer_vm_setup()). */
static u32 kvt_timer_intid[KVT_NR_TIMERS];
static u32 kvt_nr_vcpus = 1;
/* Written by the guest, indexed by enum arch_timer (VIRTUAL, PHYSICAL). */
static struct kvt_timer_irqs kvt_irqs[KVT_NR_TIMERS];

static inline const char *kvt_timer_name(enum arch_timer timer)
{
	return timer == VIRTUAL ? "virtual" : "physical";
}

/*
 * Guest: take a timer interrupt, record it in @irqs (indexed by timer) and
 * check it (the header's comment).  Returns false for a spurious one.
 */
static inline bool kvt_guest_timer_irq(struct kvt_timer_irqs *irqs)
{
	u32 intid = gic_get_and_ack_irq();
	struct kvt_timer_irqs *rec;
	enum arch_timer timer;
	u64 ctl, cval, cnt;

	if (intid == IAR_SPURIOUS)
		return false;
	if (intid == kvt_timer_intid[VIRTUAL]) {
		timer = VIRTUAL;
	} else if (intid == kvt_timer_intid[PHYSICAL]) {
		timer = PHYSICAL;
	} else {
		gic_set_eoi(intid);
		GUEST_FAIL("unexpected interrupt %u", intid);
		return false;
	}

	ctl = timer_get_ctl(timer);
	cval = timer_get_cval(timer);
	cnt = timer_get_cntct(timer);
	timer_set_ctl(timer, CTL_IMASK);
	gic_set_eoi(intid);

	rec = &irqs[timer];
	WRITE_ONCE(rec->cnt, cnt);
	WRITE_ONCE(rec->cval, cval);
	WRITE_ONCE(rec->ctl, ctl);
	WRITE_ONCE(rec->count, rec->count + 1);

	__GUEST_ASSERT((ctl & KVT_CTL_MASK) == (CTL_ENABLE | CTL_ISTATUS),
		       "%s timer interrupt with CTL 0x%lx (want ENABLE|ISTATUS, not IMASK)",
		       kvt_timer_name(timer), ctl);
	__GUEST_ASSERT(cnt >= cval,
		       "%s timer interrupt before its deadline: counter 0x%lx < CVAL 0x%lx",
		       kvt_timer_name(timer), cnt, cval);
	return true;
}

static inline void kvt_guest_irq_handler(struct ex_regs *regs)
{
	kvt_guest_timer_irq(kvt_irqs);
}

/*
 * Guest: set up the GIC for this vCPU with both timers masked and their
 * PPIs enabled.  Interrupts stay masked at the CPU (DAIF) until the guest
 * waits for one.
 */
static inline void kvt_guest_timer_init(void)
{
	local_irq_disable();
	gic_init(GIC_V3, kvt_nr_vcpus);
	gic_irq_enable(kvt_timer_intid[VIRTUAL]);
	gic_irq_enable(kvt_timer_intid[PHYSICAL]);
}

/*
 * Guest, interrupts masked at the CPU: make the vGIC resample @timer's
 * line.  Once the vGIC has made the interrupt pending in a list register,
 * it stays pending there until the next exit, also when the guest moves
 * CVAL ahead, masks or disables the timer meanwhile (no exit when the
 * hardware runs the timer): the CPU would then take an interrupt whose
 * timer condition no longer holds, as a GIC may for a level interrupt
 * whose line just dropped.  Each exit resamples the line of a mapped
 * interrupt pending in a list register; a redistributor read is one.
 * Call it after a write that may end a timer condition, before
 * unmasking.
 */
static inline void kvt_guest_resample(enum arch_timer timer)
{
	gic_irq_get_pending(kvt_timer_intid[timer]);
}

/*
 * Guest: the interrupt this CPU interface would take next, its highest
 * priority pending one (1023: none).  A register of the CPU: no exit.  An
 * interrupt is pending there only once the host's vGIC has put it in a
 * list register, at a guest entry.
 */
static inline u32 kvt_guest_hppir(void)
{
	return read_sysreg_s(SYS_ICC_HPPIR1_EL1) & 0xffffff;
}

/* Guest: arm @timer to fire at @cval, its interrupt unmasked. */
static inline void kvt_guest_arm(enum arch_timer timer, u64 cval)
{
	timer_set_cval(timer, cval);
	timer_set_ctl(timer, CTL_ENABLE);
}

/*
 * Guest: WFI, then a window for a pending interrupt; interrupts masked at
 * the CPU around it, so that none slips in between a check and the WFI.
 */
static inline void kvt_guest_wfi(void)
{
	wfi();
	local_irq_enable();
	isb();
	local_irq_disable();
}

/*
 * Guest: wait (WFI, interrupts unmasked only between two WFIs) until
 * @timer has taken @n interrupts in all.  A lost interrupt blocks here: the
 * host's watchdog (kvt_vcpu_run_watched) ends the test.
 */
static inline void kvt_guest_wait_irqs(enum arch_timer timer, u64 n)
{
	local_irq_disable();
	while (READ_ONCE(kvt_irqs[timer].count) < n)
		kvt_guest_wfi();
}

/*
 * Guest: arm @timer @ms ahead and wait (kvt_guest_wait_irqs()) for its
 * first interrupt, which must be for that deadline.
 */
static inline void kvt_guest_first_irq(enum arch_timer timer, u64 ms)
{
	u64 cval = timer_get_cntct(timer) + msec_to_cycles(ms);

	kvt_guest_arm(timer, cval);
	kvt_guest_wait_irqs(timer, 1);
	GUEST_ASSERT_EQ(READ_ONCE(kvt_irqs[timer].cval), cval);
}

/* Guest: spin @ms on @timer's counter, interrupts unmasked at the CPU. */
static inline void kvt_guest_spin_ms(enum arch_timer timer, u64 ms)
{
	u64 end = timer_get_cntct(timer) + msec_to_cycles(ms);

	local_irq_enable();
	while (timer_get_cntct(timer) < end)
		cpu_relax();
	local_irq_disable();
}

/*
 * Guest: @timer's CTL and counter, read so that they can be compared
 * without a race: if ISTATUS is set, @after (read after CTL) has reached
 * CVAL; if not, @before (read before CTL) had not.
 */
static inline u64 kvt_guest_ctl_cnt(enum arch_timer timer, u64 *before, u64 *after)
{
	u64 ctl;

	*before = timer_get_cntct(timer);
	isb();
	ctl = timer_get_ctl(timer);
	isb();
	*after = timer_get_cntct(timer);
	return ctl;
}

/*
 * Guest: assert that @timer's ISTATUS agrees with its counter and CVAL.
 * Returns whether the timer condition is met.
 */
static inline bool kvt_guest_check_istatus(enum arch_timer timer)
{
	u64 cval = timer_get_cval(timer);
	u64 before, after;
	u64 ctl = kvt_guest_ctl_cnt(timer, &before, &after);

	if (ctl & CTL_ISTATUS)
		__GUEST_ASSERT(after >= cval,
			       "%s timer: ISTATUS set, but counter 0x%lx < CVAL 0x%lx",
			       kvt_timer_name(timer), after, cval);
	else
		__GUEST_ASSERT(before < cval,
			       "%s timer: ISTATUS clear, but counter 0x%lx >= CVAL 0x%lx",
			       kvt_timer_name(timer), before, cval);
	return ctl & CTL_ISTATUS;
}

/* Host: the guest's vector tables for @nr vCPUs, with @handler for IRQs. */
static inline void __kvt_vm_irq_handler(struct kvm_vm *vm, struct kvm_vcpu **vcpus, u32 nr,
					handler_fn handler)
{
	vm_init_descriptor_tables(vm);
	vm_install_exception_handler(vm, VECTOR_IRQ_CURRENT, handler);
	for (u32 i = 0; i < nr; i++)
		vcpu_init_descriptor_tables(vcpus[i]);
}

/* The same for a VM with one vCPU. */
static inline void kvt_vm_irq_handler(struct kvm_vm *vm, struct kvm_vcpu *vcpu,
				      handler_fn handler)
{
	__kvt_vm_irq_handler(vm, &vcpu, 1, handler);
}

/* The vGIC device of the VM kvt_timer_vm_setup() set up last. */
static int kvt_gic_fd = -1;

/*
 * Host: tell the guest the timers' PPIs, as KVM has them now (the VM's,
 * read through @vcpu's attributes).
 */
static inline void kvt_sync_timer_intids(struct kvm_vm *vm, struct kvm_vcpu *vcpu)
{
	u32 virq, pirq;

	vcpu_device_attr_get(vcpu, KVM_ARM_VCPU_TIMER_CTRL,
			     KVM_ARM_VCPU_TIMER_IRQ_VTIMER, &virq);
	vcpu_device_attr_get(vcpu, KVM_ARM_VCPU_TIMER_CTRL,
			     KVM_ARM_VCPU_TIMER_IRQ_PTIMER, &pirq);
	kvt_timer_intid[VIRTUAL] = virq;
	kvt_timer_intid[PHYSICAL] = pirq;
	sync_global_to_guest(vm, kvt_timer_intid);
}

/*
 * Host: the guest's vector tables and interrupt handler @handler, the
 * vGICv3 and the timers' PPI numbers for a VM whose @nr vCPUs (all it will
 * have) the caller created.
 */
static inline void kvt_timer_vm_setup(struct kvm_vm *vm, struct kvm_vcpu **vcpus, u32 nr,
				      handler_fn handler)
{
	__kvt_vm_irq_handler(vm, vcpus, nr, handler);
	kvt_sync_timer_intids(vm, vcpus[0]);
	kvt_nr_vcpus = nr;
	sync_global_to_guest(vm, kvt_nr_vcpus);

	kvt_gic_fd = vgic_v3_setup(vm, nr, 64);
	TEST_ASSERT(kvt_gic_fd >= 0, "no vGICv3");
}

/*
 * Destroy a VM of kvt_timer_vm_create(): its vGIC device file holds the VM
 * (and the timer module the VM holds) until it is closed.
 */
static inline void kvt_timer_vm_free(struct kvm_vm *vm)
{
	if (kvt_gic_fd >= 0)
		close(kvt_gic_fd);
	kvt_gic_fd = -1;
	kvm_vm_free(vm);
}

/*
 * Host: a VM with one vCPU running @guest_code, set up for the timers, its
 * interrupts handled by @handler.
 */
static inline struct kvm_vm *__kvt_timer_vm_create(struct kvm_vcpu **vcpu, void *guest_code,
						   handler_fn handler)
{
	struct kvm_vm *vm = vm_create_with_one_vcpu(vcpu, guest_code);

	kvt_timer_vm_setup(vm, vcpu, 1, handler);
	return vm;
}

/* The same, with the handler above (kvt_guest_irq_handler()). */
static inline struct kvm_vm *kvt_timer_vm_create(struct kvm_vcpu **vcpu, void *guest_code)
{
	return __kvt_timer_vm_create(vcpu, guest_code, kvt_guest_irq_handler);
}

/* Set by the host (kvt_timer_vm_create_for()): the timer the guest tests. */
static enum arch_timer kvt_guest_timer;

/* Host: kvt_timer_vm_create(), its guest to test @timer (kvt_guest_timer). */
static inline struct kvm_vm *kvt_timer_vm_create_for(struct kvm_vcpu **vcpu, void *guest_code,
						     enum arch_timer timer)
{
	struct kvm_vm *vm = kvt_timer_vm_create(vcpu, guest_code);

	kvt_guest_timer = timer;
	sync_global_to_guest(vm, kvt_guest_timer);
	return vm;
}

/* Host: the guest's record of @timer's interrupts. */
static inline struct kvt_timer_irqs kvt_read_irqs(struct kvm_vm *vm, enum arch_timer timer)
{
	sync_global_from_guest(vm, kvt_irqs);
	return kvt_irqs[timer];
}

/* Host: the host's counter (CNTVCT_EL0 is CNTPCT_EL0 for host user space). */
static inline u64 kvt_host_counter(void)
{
	isb();
	return read_sysreg(cntvct_el0);
}

/* The ONE_REG ids of @timer's registers. */
static inline u64 kvt_reg_ctl(enum arch_timer timer)
{
	return timer == VIRTUAL ? KVM_REG_ARM_TIMER_CTL : KVM_REG_ARM_PTIMER_CTL;
}

static inline u64 kvt_reg_cval(enum arch_timer timer)
{
	return timer == VIRTUAL ? KVM_REG_ARM_TIMER_CVAL : KVM_REG_ARM_PTIMER_CVAL;
}

static inline u64 kvt_reg_cnt(enum arch_timer timer)
{
	return timer == VIRTUAL ? KVM_REG_ARM_TIMER_CNT : KVM_REG_ARM_PTIMER_CNT;
}

static inline u64 kvt_get_reg(struct kvm_vcpu *vcpu, u64 id)
{
	u64 val;

	vcpu_get_reg(vcpu, id, &val);
	return val;
}

/* Host: KVM_ARM_SET_COUNTER_OFFSET (both counters read host - @offset). */
static inline void kvt_set_counter_offset(struct kvm_vm *vm, u64 offset)
{
	struct kvm_arm_counter_offset arg = { .counter_offset = offset };

	vm_ioctl(vm, KVM_ARM_SET_COUNTER_OFFSET, &arg);
}

#endif
