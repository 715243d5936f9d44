// SPDX-License-Identifier: GPL-2.0-only
/*
 * kvt_arm64_offset - an armed arm64 timer when the VMM moves the counter
 *
 * For each timer, and for both ways a VMM moves a guest's counter (the
 * vCPU's KVM_REG_ARM_TIMER_CNT or KVM_REG_ARM_PTIMER_CNT through ONE_REG,
 * and the VM's KVM_ARM_SET_COUNTER_OFFSET), one VM in which:
 *
 *  - forward: the guest arms its timer an hour ahead and stops; the VMM
 *    moves the counter past that deadline.  As the guest runs again, its
 *    counter is at or past the target, ISTATUS is set, and the interrupt
 *    comes (the watchdog, KVT_WATCHDOG_S, is far shorter than the hour the
 *    deadline was away), with the counter at or past CVAL.
 *  - back: the guest arms its timer SHORT_MS ahead and stops; the VMM moves
 *    the counter back by BACK_MS.  As the guest runs again, its counter is
 *    behind where it stopped and ISTATUS is clear; the interrupt does not
 *    come before the counter reaches CVAL.
 *
 * The other timer stays masked and takes no interrupt.
 *
 * -v or -p: the virtual or the physical timer only (default: both).
 */
#include <getopt.h>

#include "kvt_arm64_timer.h"

#define FORWARD_MS	(3600 * 1000)	/* the first deadline */
#define PAST_MS		1		/* how far past it the counter goes */
#define SHORT_MS	10		/* the second deadline */
#define BACK_MS		1000		/* how far back the counter goes */

enum stage {
	STAGE_FORWARD = 1,
	STAGE_BACK,
};

/* Set by the host: the timer, and the counter value it moved to. */
static enum arch_timer guest_timer;
static u64 guest_target;
/* Set by the guest before each stop: its counter and the deadline. */
static u64 guest_cnt;
static u64 guest_cval;

static void guest_stop(enum arch_timer timer, u64 cval, enum stage stage)
{
	kvt_guest_arm(timer, cval);
	WRITE_ONCE(guest_cval, cval);
	WRITE_ONCE(guest_cnt, timer_get_cntct(timer));
	GUEST_SYNC(stage);
}

static void guest_code(void)
{
	enum arch_timer timer = guest_timer;
	u64 start, cval, stopped;

	kvt_guest_timer_init();

	/* Forward, past an hour-away deadline. */
	cval = timer_get_cntct(timer) + msec_to_cycles(FORWARD_MS);
	guest_stop(timer, cval, STAGE_FORWARD);
	start = timer_get_cntct(timer);
	__GUEST_ASSERT(start >= guest_target,
		       "%s counter 0x%lx, behind the 0x%lx it was moved to",
		       kvt_timer_name(timer), start, guest_target);
	__GUEST_ASSERT(kvt_guest_check_istatus(timer),
		       "counter moved past CVAL 0x%lx: ISTATUS clear", cval);
	kvt_guest_wait_irqs(timer, 1);
	GUEST_ASSERT_EQ(READ_ONCE(kvt_irqs[timer].cval), cval);

	/* Back, so that a near deadline is far again. */
	cval = timer_get_cntct(timer) + msec_to_cycles(SHORT_MS);
	guest_stop(timer, cval, STAGE_BACK);
	stopped = READ_ONCE(guest_cnt);
	start = timer_get_cntct(timer);
	__GUEST_ASSERT(start >= guest_target && start < stopped,
		       "%s counter 0x%lx, not between the 0x%lx it was moved back to and 0x%lx",
		       kvt_timer_name(timer), start, guest_target, stopped);
	__GUEST_ASSERT(!kvt_guest_check_istatus(timer),
		       "counter moved back before CVAL 0x%lx: ISTATUS set", cval);
	kvt_guest_wait_irqs(timer, 2);
	GUEST_ASSERT_EQ(READ_ONCE(kvt_irqs[timer].cval), cval);
	__GUEST_ASSERT(READ_ONCE(kvt_irqs[timer].cnt) >= cval,
		       "interrupt at 0x%lx, before the deadline 0x%lx",
		       kvt_irqs[timer].cnt, cval);

	GUEST_ASSERT_EQ(READ_ONCE(kvt_irqs[!timer].count), 0);
	GUEST_DONE();
}

/* Move the guest's @timer counter to @target. */
static void move_counter(struct kvm_vm *vm, struct kvm_vcpu *vcpu, enum arch_timer timer,
			 bool vm_offset, u64 target)
{
	u64 cnt;

	if (vm_offset)
		kvt_set_counter_offset(vm, kvt_host_counter() - target);
	else
		vcpu_set_reg(vcpu, kvt_reg_cnt(timer), target);
	cnt = kvt_get_reg(vcpu, kvt_reg_cnt(timer));
	TEST_ASSERT(cnt >= target, "%s CNT 0x%lx after moving it to 0x%lx",
		    kvt_timer_name(timer), cnt, target);
}

static void test_jumps(enum arch_timer timer, bool vm_offset)
{
	const char *how = vm_offset ? "KVM_ARM_SET_COUNTER_OFFSET" : "ONE_REG CNT";
	struct kvt_timer_irqs irqs;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;
	u64 target;

	vm = kvt_timer_vm_create(&vcpu, guest_code);
	guest_timer = timer;
	sync_global_to_guest(vm, guest_timer);

	for (int stage = STAGE_FORWARD; stage <= STAGE_BACK; stage++) {
		TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, how), UCALL_SYNC);
		TEST_ASSERT_EQ(uc.args[1], stage);
		sync_global_from_guest(vm, guest_cnt);
		sync_global_from_guest(vm, guest_cval);
		if (stage == STAGE_FORWARD)
			target = guest_cval + msec_to_cycles(PAST_MS);
		else
			target = guest_cnt - msec_to_cycles(BACK_MS);
		move_counter(vm, vcpu, timer, vm_offset, target);
		guest_target = target;
		sync_global_to_guest(vm, guest_target);
	}
	TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, how), UCALL_DONE);

	irqs = kvt_read_irqs(vm, timer);
	TEST_ASSERT_EQ(irqs.count, 2);
	ksft_print_msg("%s timer, %s: forward, back; last interrupt %lu ticks after CVAL\n",
		       kvt_timer_name(timer), how, irqs.cnt - irqs.cval);
	kvt_timer_vm_free(vm);
}

static void help(const char *name)
{
	pr_info("usage: %s [-v | -p]\n", name);
	pr_info("  -v  the virtual timer only\n");
	pr_info("  -p  the physical timer only\n");
	exit(KSFT_FAIL);
}

int main(int argc, char *argv[])
{
	bool test[KVT_NR_TIMERS] = { true, true };
	int opt;

	while ((opt = getopt(argc, argv, "vp")) != -1) {
		switch (opt) {
		case 'v':
			test[PHYSICAL] = false;
			break;
		case 'p':
			test[VIRTUAL] = false;
			break;
		default:
			help(argv[0]);
		}
	}
	if (!test[VIRTUAL] && !test[PHYSICAL])
		help(argv[0]);
	TEST_REQUIRE(kvm_has_cap(KVM_CAP_COUNTER_OFFSET));

	for (int t = VIRTUAL; t <= PHYSICAL; t++) {
		if (!test[t])
			continue;
		test_jumps(t, false);
		test_jumps(t, true);
	}
	return 0;
}
