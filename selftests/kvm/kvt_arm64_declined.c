// SPDX-License-Identifier: GPL-2.0-only
/*
 * kvt_arm64_declined - a VM that kvm_vtimer leaves to KVM's built-in timer
 *
 * kvm_vtimer declines a VM without the in-kernel vGIC at its first vCPU
 * run (Documentation/arm64.rst): KVM's own timer runs it from then on.
 * This test is that VM's userspace irqchip: after every KVM_RUN it sets
 * the vCPU's IRQ line (KVM_IRQ_LINE, KVM_ARM_IRQ_TYPE_CPU) to "a timer line
 * is up" (kvm_run->s.regs.device_irq_level).  For each timer the guest
 * takes NR_ROUNDS interrupts, TIMER_MS after arming it: the first while it
 * spins with interrupts unmasked, the second in WFI.  Its handler checks
 * the timer condition (enabled, unmasked, ISTATUS, counter at or past
 * CVAL), masks the timer and reports with a ucall, at whose exit the line
 * is down and userspace lowers the IRQ.
 *
 * With kvm_vtimer loaded, the VM's "vtimer" debugfs file must not say
 * "declined" before the first run, must say it after, and its counters
 * must stay 0; a VM with a vGIC run next must not be declined and must
 * count its timer interrupt, so that the file tells the two apart.  In the
 * in-tree phase only the guests are checked.
 */
#include "kvt_arm64_timer.h"

#define TIMER_MS	1
/* A spinning guest fails if its interrupt is this late. */
#define LIMIT_MS	2000
#define NR_ROUNDS	2

/* The vCPU's IRQ line, for KVM_IRQ_LINE without an in-kernel irqchip. */
#define KVT_CPU_IRQ	((KVM_ARM_IRQ_TYPE_CPU << KVM_ARM_IRQ_TYPE_SHIFT) | \
			 (0 << KVM_ARM_IRQ_VCPU_SHIFT) | KVM_ARM_IRQ_CPU_IRQ)

#define SYNC_IRQ	1

/* Without a GIC: the timer whose condition holds is the interrupt's. */
static void user_guest_irq_handler(struct ex_regs *regs)
{
	enum arch_timer timer = VIRTUAL;
	struct kvt_timer_irqs *irqs;
	u64 ctl, cval, cnt;

	ctl = timer_get_ctl(VIRTUAL);
	if ((ctl & KVT_CTL_MASK) != (CTL_ENABLE | CTL_ISTATUS)) {
		timer = PHYSICAL;
		ctl = timer_get_ctl(PHYSICAL);
	}
	__GUEST_ASSERT((ctl & KVT_CTL_MASK) == (CTL_ENABLE | CTL_ISTATUS),
		       "an IRQ, but no timer is enabled, unmasked and due (physical CTL 0x%lx)",
		       ctl);
	cval = timer_get_cval(timer);
	cnt = timer_get_cntct(timer);
	timer_set_ctl(timer, CTL_IMASK);
	isb();

	irqs = &kvt_irqs[timer];
	WRITE_ONCE(irqs->cnt, cnt);
	WRITE_ONCE(irqs->cval, cval);
	WRITE_ONCE(irqs->ctl, ctl);
	WRITE_ONCE(irqs->count, irqs->count + 1);
	__GUEST_ASSERT(cnt >= cval,
		       "%s timer interrupt before its deadline: counter 0x%lx < CVAL 0x%lx",
		       kvt_timer_name(timer), cnt, cval);
	/* The line is down now: let userspace lower the IRQ before eret. */
	GUEST_SYNC(SYNC_IRQ);
}

static void user_guest_spin(enum arch_timer timer, u64 cval, u64 n)
{
	u64 limit = cval + msec_to_cycles(LIMIT_MS);

	local_irq_enable();
	while (READ_ONCE(kvt_irqs[timer].count) < n) {
		__GUEST_ASSERT(timer_get_cntct(timer) < limit,
			       "%s timer: no interrupt %u ms after its deadline",
			       kvt_timer_name(timer), LIMIT_MS);
		cpu_relax();
	}
	local_irq_disable();
}

static void user_guest_code(void)
{
	enum arch_timer timer;
	u64 cval, n;

	local_irq_disable();
	for (timer = VIRTUAL; timer <= PHYSICAL; timer++) {
		for (int round = 0; round < NR_ROUNDS; round++) {
			n = READ_ONCE(kvt_irqs[timer].count) + 1;
			cval = timer_get_cntct(timer) + msec_to_cycles(TIMER_MS);
			kvt_guest_arm(timer, cval);
			if (round)
				kvt_guest_wait_irqs(timer, n);
			else
				user_guest_spin(timer, cval, n);
			GUEST_ASSERT_EQ(READ_ONCE(kvt_irqs[timer].cval), cval);
			GUEST_ASSERT_EQ(READ_ONCE(kvt_irqs[timer].count), n);
		}
	}
	GUEST_DONE();
}

struct user_run {
	struct kvm_vm *vm;
	struct kvm_vcpu *vcpu;
	u64 exit_intr;		/* KVM_EXIT_INTR returns */
	u64 raised;		/* rising edges of the IRQ line */
};

/* The userspace irqchip: the vCPU's IRQ line follows the timer lines. */
static void *user_run_thread(void *arg)
{
	struct user_run *r = arg;
	struct kvm_run *run = r->vcpu->run;
	bool line = false, up, ran;
	struct ucall uc;

	for (;;) {
		ran = kvt_vcpu_run_intr(r->vcpu);
		up = run->s.regs.device_irq_level &
		     (KVM_ARM_DEV_EL1_VTIMER | KVM_ARM_DEV_EL1_PTIMER);
		if (up != line) {
			kvm_irq_line(r->vm, KVT_CPU_IRQ, up);
			r->raised += up;
			line = up;
		}
		if (!ran) {
			TEST_ASSERT_EQ(run->exit_reason, KVM_EXIT_INTR);
			r->exit_intr++;
			continue;
		}
		if (kvt_get_ucall(r->vcpu, &uc, BIT_ULL(UCALL_SYNC) | BIT_ULL(UCALL_DONE)) ==
		    UCALL_DONE)
			return NULL;
		TEST_ASSERT_EQ(uc.args[1], SYNC_IRQ);
		TEST_ASSERT(!line, "the timer line is still up after the guest masked it");
	}
}

/* What kvm_vtimer's debugfs file says of a VM. */
struct vtimer_stats {
	bool present;
	bool declined;
	u64 irqs, starts, cancels, migrations;
};

static struct vtimer_stats read_vtimer_stats(struct kvm_vm *vm)
{
	struct vtimer_stats s = { 0 };
	FILE *f = kvt_vtimer_fopen(vm);
	char line[1024];

	if (!f)
		return s;
	s.present = true;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "declined:", 9))
			s.declined = true;
		if (strncmp(line, "total ", 6))
			continue;
		s.irqs = kvt_vtimer_field(line, "irqs");
		s.starts = kvt_vtimer_field(line, "starts");
		s.cancels = kvt_vtimer_field(line, "cancels");
		s.migrations = kvt_vtimer_field(line, "migrations");
	}
	fclose(f);
	return s;
}

static void test_user_irqchip(bool module)
{
	struct user_run r = { 0 };
	struct vtimer_stats s;
	pthread_t thread;

	r.vm = vm_create_with_one_vcpu(&r.vcpu, user_guest_code);
	kvt_vm_irq_handler(r.vm, r.vcpu, user_guest_irq_handler);

	if (module) {
		s = read_vtimer_stats(r.vm);
		TEST_ASSERT(s.present, "kvm_vtimer is loaded, but the new VM has no vtimer file");
		TEST_ASSERT(!s.declined, "declined before its first vCPU run");
	}

	TEST_ASSERT(!pthread_create(&thread, NULL, user_run_thread, &r),
		    "creating the vCPU thread");
	kvt_join_or_fail(thread, NULL, KVT_WATCHDOG_S, "the userspace-irqchip VM");

	for (enum arch_timer t = VIRTUAL; t <= PHYSICAL; t++)
		TEST_ASSERT_EQ(kvt_read_irqs(r.vm, t).count, NR_ROUNDS);
	TEST_ASSERT(r.exit_intr >= 2 * NR_ROUNDS && r.raised == 2 * NR_ROUNDS,
		    "%lu KVM_EXIT_INTR and %lu raised IRQs for %d timer interrupts",
		    r.exit_intr, r.raised, 2 * NR_ROUNDS);
	ksft_print_msg("userspace irqchip: %d timer interrupts (%lu KVM_EXIT_INTR)\n",
		       2 * NR_ROUNDS, r.exit_intr);

	if (module) {
		s = read_vtimer_stats(r.vm);
		TEST_ASSERT(s.declined, "kvm_vtimer did not decline a VM without a vGIC");
		TEST_ASSERT(!s.irqs && !s.starts && !s.cancels && !s.migrations,
			    "declined, yet kvm_vtimer counted irqs=%lu starts=%lu cancels=%lu migrations=%lu",
			    s.irqs, s.starts, s.cancels, s.migrations);
		ksft_print_msg("kvm_vtimer declined it: its counters stayed 0\n");
	}
	kvm_vm_free(r.vm);
}

static void gic_guest_code(void)
{
	kvt_guest_timer_init();
	kvt_guest_first_irq(VIRTUAL, TIMER_MS);
	GUEST_DONE();
}

/* The contrast: a VM with a vGIC is kvm_vtimer's, and counted. */
static void test_vgic(void)
{
	struct kvm_vcpu *vcpu;
	struct vtimer_stats s;
	struct kvm_vm *vm;
	struct ucall uc;

	vm = kvt_timer_vm_create(&vcpu, gic_guest_code);
	TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, "the vGIC VM"), UCALL_DONE);
	s = read_vtimer_stats(vm);
	TEST_ASSERT(s.present && !s.declined && s.irqs >= 1,
		    "a VM with a vGIC: vtimer file %s, %s, irqs=%lu (want ours, irqs >= 1)",
		    s.present ? "present" : "missing",
		    s.declined ? "declined" : "not declined", s.irqs);
	ksft_print_msg("a VM with a vGIC is kvm_vtimer's: irqs=%lu\n", s.irqs);
	kvt_timer_vm_free(vm);
}

int main(void)
{
	bool module = kvt_module_refcnt() >= 0;

	if (module)
		__TEST_REQUIRE(!access(KVT_DEBUGFS_KVM, F_OK),
			       KVT_DEBUGFS_KVM " is not there: is debugfs mounted?");
	else
		ksft_print_msg(KVT_MODULE_NAME " is not loaded: only the guests are checked\n");

	test_user_irqchip(module);
	if (module)
		test_vgic();
	return 0;
}
