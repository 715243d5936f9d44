// SPDX-License-Identifier: GPL-2.0-only
/*
 * kvt_arm64_user_irqchip - the timer lines of a VM without an in-kernel vGIC
 *
 * With a userspace irqchip, KVM reports the timers' output lines in
 * kvm_run->s.regs.device_irq_level and returns from KVM_RUN (EINTR,
 * KVM_EXIT_INTR) whenever they change.  For each timer, one VM whose guest
 * keeps interrupts masked (it has no GIC) and:
 *
 *  - arms the timer SHORT_MS ahead and spins SPIN_MS: the first KVM_RUN
 *    return that is not a ucall is KVM_EXIT_INTR with the timer's bit set,
 *    and by then the guest counter has reached CVAL (not early);
 *  - disables the timer and stops (GUEST_SYNC): the bit is clear at that
 *    exit.  In between, one KVM_EXIT_INTR for the rise and at most one
 *    for the fall (when the disabling write traps, as for an emulated
 *    timer, KVM reports the fall before the ucall);
 *  - arms it again with IMASK set and spins past the deadline, then stops:
 *    no KVM_EXIT_INTR, the bit stays clear.
 */
#include "kvt_arm64_timer.h"

#define SHORT_MS	1
#define SPIN_MS		50

static enum arch_timer guest_timer;

static void guest_spin_ms(enum arch_timer timer, u64 ms)
{
	u64 end = timer_get_cntct(timer) + msec_to_cycles(ms);

	while (timer_get_cntct(timer) < end)
		cpu_relax();
}

static void guest_code(void)
{
	enum arch_timer t = READ_ONCE(guest_timer);

	local_irq_disable();
	timer_set_cval(t, timer_get_cntct(t) + msec_to_cycles(SHORT_MS));
	timer_set_ctl(t, CTL_ENABLE);
	guest_spin_ms(t, SPIN_MS);
	timer_set_ctl(t, 0);
	GUEST_SYNC(1);

	timer_set_cval(t, timer_get_cntct(t) + msec_to_cycles(SHORT_MS));
	timer_set_ctl(t, CTL_ENABLE | CTL_IMASK);
	guest_spin_ms(t, SPIN_MS);
	timer_set_ctl(t, 0);
	GUEST_DONE();
}

static u64 bit_of(enum arch_timer t)
{
	return t == VIRTUAL ? KVM_ARM_DEV_EL1_VTIMER : KVM_ARM_DEV_EL1_PTIMER;
}

/*
 * Run until the next ucall; count the KVM_EXIT_INTR returns on the way and
 * check the first one (the line's rise) against the timer's registers.
 */
static u64 run_to_ucall(struct kvm_vcpu *vcpu, enum arch_timer t, int *intr)
{
	struct kvm_run *run = vcpu->run;
	struct ucall uc;

	while (!kvt_vcpu_run_intr(vcpu)) {
		TEST_ASSERT_EQ(run->exit_reason, KVM_EXIT_INTR);
		if (!*intr) {
			TEST_ASSERT(run->s.regs.device_irq_level & bit_of(t),
				    "%s timer: KVM_EXIT_INTR without its line",
				    kvt_timer_name(t));
			TEST_ASSERT(kvt_get_reg(vcpu, kvt_reg_cnt(t)) >=
				    kvt_get_reg(vcpu, kvt_reg_cval(t)),
				    "%s timer: line up before CVAL",
				    kvt_timer_name(t));
		}
		(*intr)++;
	}
	return kvt_get_ucall(vcpu, &uc, BIT_ULL(UCALL_SYNC) | BIT_ULL(UCALL_DONE));
}

static void test_timer(enum arch_timer t)
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	int intr = 0;

	vm = vm_create_with_one_vcpu(&vcpu, guest_code);
	guest_timer = t;
	sync_global_to_guest(vm, guest_timer);

	TEST_ASSERT_EQ(run_to_ucall(vcpu, t, &intr), UCALL_SYNC);
	TEST_ASSERT(intr == 1 || intr == 2,
		    "%s timer: %d KVM_EXIT_INTR for one rise and fall, not 1 or 2",
		    kvt_timer_name(t), intr);
	TEST_ASSERT(!(vcpu->run->s.regs.device_irq_level & bit_of(t)),
		    "%s timer: line still up after the guest disabled it",
		    kvt_timer_name(t));

	intr = 0;
	TEST_ASSERT_EQ(run_to_ucall(vcpu, t, &intr), UCALL_DONE);
	TEST_ASSERT(intr == 0, "%s timer: masked, yet %d KVM_EXIT_INTR",
		    kvt_timer_name(t), intr);
	TEST_ASSERT(!(vcpu->run->s.regs.device_irq_level & bit_of(t)),
		    "%s timer: masked, yet its line is up", kvt_timer_name(t));
	ksft_print_msg("%s timer: one KVM_EXIT_INTR with the line up, none when masked\n",
		       kvt_timer_name(t));
	kvm_vm_free(vm);
}

int main(void)
{
	test_timer(VIRTUAL);
	test_timer(PHYSICAL);
	return 0;
}
