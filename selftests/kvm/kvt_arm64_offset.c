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
 * Instead, with -w: a counter offset whose sum with CVAL wraps.  The VMM
 * sets the VM's counters behind the host's (KVM_ARM_SET_COUNTER_OFFSET);
 * the guest arms its timer at CVAL 2^64 - 2, whose sum with the offset
 * wraps to a value behind the host's counter, and runs with interrupts
 * unmasked, stopping WRAP_STOPS times (each a put and a load).  No
 * interrupt may come: the hardware must never see the wrapped sum.
 *
 * With -l: a CVAL moved ahead while the timer's line is up.  The guest,
 * with interrupts masked at the CPU, arms the timer at its counter and
 * waits until the interrupt is pending at its CPU interface; then it moves
 * CVAL LEVEL_MS ahead, reads the interrupt's pending bit from the
 * redistributor (an exit, where the vGIC resamples the line) and finds it
 * clear, and no longer pending at the CPU interface.  It unmasks
 * interrupts and spins, without WFI: the interrupt comes once, at or after
 * the new CVAL (upstream 6.14 b450dcce93bc fixed KVM's emulated timer,
 * which did not watch the new deadline).  -L: the same under a counter
 * offset (the VM's counters behind the host's).
 *
 * -v or -p: the virtual or the physical timer only (default: both).
 */
#include <getopt.h>

#include "kvt_arm64_timer.h"

#define FORWARD_MS	(3600 * 1000)	/* the first deadline */
#define PAST_MS		1		/* how far past it the counter goes */
#define SHORT_MS	10		/* the second deadline */
#define BACK_MS		1000		/* how far back the counter goes */
#define WRAP_CVAL	(~0ULL - 1)	/* -w: the guest's CVAL */
#define WRAP_STOPS	10		/* -w: stops with the timer armed */
#define WRAP_SPIN_MS	2		/* -w: guest time between two stops */
#define LEVEL_MS	10		/* -l: how far CVAL moves ahead */
#define LEVEL_LATE_MS	1000		/* -l: how late the interrupt may be */

enum stage {
	STAGE_FORWARD = 1,
	STAGE_BACK,
};

/* Set by the host: the counter value it moved to (the timer: kvt_guest_timer). */
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
	enum arch_timer timer = kvt_guest_timer;
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

/* -w: armed at a CVAL whose sum with the VM's offset wraps: no interrupt. */
static void guest_wrap(void)
{
	enum arch_timer timer = kvt_guest_timer;
	u64 cval = WRAP_CVAL;

	kvt_guest_timer_init();
	kvt_guest_arm(timer, cval);
	for (int i = 0; i < WRAP_STOPS; i++) {
		kvt_guest_spin_ms(timer, WRAP_SPIN_MS);
		__GUEST_ASSERT(!kvt_guest_check_istatus(timer),
			       "%s timer: ISTATUS set with CVAL 0x%lx",
			       kvt_timer_name(timer), cval);
		GUEST_SYNC(i);
	}
	GUEST_ASSERT_EQ(timer_get_cval(timer), cval);
	GUEST_ASSERT_EQ(READ_ONCE(kvt_irqs[timer].count), 0);
	GUEST_ASSERT_EQ(READ_ONCE(kvt_irqs[!timer].count), 0);
	GUEST_DONE();
}

static void test_wrap(enum arch_timer timer)
{
	const char *what = "CVAL + offset wraps";
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;
	u64 offset;

	vm = kvt_timer_vm_create_for(&vcpu, guest_wrap, timer);
	/* Far more than 1: WRAP_CVAL + offset wraps, to below the host's counter. */
	offset = kvt_host_counter() / 2;
	TEST_ASSERT(offset > 1, "host counter 0x%lx too small", kvt_host_counter());
	kvt_set_counter_offset(vm, offset);

	for (int i = 0; i < WRAP_STOPS; i++) {
		TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, what), UCALL_SYNC);
		TEST_ASSERT_EQ(uc.args[1], i);
		TEST_ASSERT_EQ(kvt_get_reg(vcpu, kvt_reg_cval(timer)), WRAP_CVAL);
	}
	TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, what), UCALL_DONE);
	ksft_print_msg("%s timer, offset 0x%lx, CVAL 0x%lx: no interrupt in %d stops\n",
		       kvt_timer_name(timer), offset, (u64)WRAP_CVAL, WRAP_STOPS);
	kvt_timer_vm_free(vm);
}

/* -l: CVAL moved ahead while the line is up: the line drops, then comes back. */
static void guest_level(void)
{
	enum arch_timer timer = kvt_guest_timer;
	u32 intid = kvt_timer_intid[timer];
	u64 cval, end;

	kvt_guest_timer_init();
	kvt_guest_arm(timer, timer_get_cntct(timer));
	/* The host raises the line; the vGIC makes it pending here. */
	end = timer_get_cntct(timer) + msec_to_cycles(LEVEL_LATE_MS);
	while (kvt_guest_hppir() != intid) {
		__GUEST_ASSERT(timer_get_cntct(timer) < end,
			       "%s timer: due, not pending at the CPU after %d ms",
			       kvt_timer_name(timer), LEVEL_LATE_MS);
		cpu_relax();
	}

	cval = timer_get_cntct(timer) + msec_to_cycles(LEVEL_MS);
	timer_set_cval(timer, cval);
	isb();
	__GUEST_ASSERT(!gic_irq_get_pending(intid),
		       "%s timer: CVAL 0x%lx moved ahead, interrupt still pending",
		       kvt_timer_name(timer), cval);
	__GUEST_ASSERT(kvt_guest_hppir() != intid,
		       "%s timer: CVAL 0x%lx moved ahead, interrupt still pending at the CPU",
		       kvt_timer_name(timer), cval);

	/* Spin: only the timer (or the host's timer for it) may end this. */
	end = cval + msec_to_cycles(LEVEL_LATE_MS);
	local_irq_enable();
	while (!READ_ONCE(kvt_irqs[timer].count) && timer_get_cntct(timer) < end)
		cpu_relax();
	local_irq_disable();
	__GUEST_ASSERT(READ_ONCE(kvt_irqs[timer].count) == 1,
		       "%s timer: %lu interrupts by %d ms after the moved CVAL 0x%lx, want 1",
		       kvt_timer_name(timer), READ_ONCE(kvt_irqs[timer].count), LEVEL_LATE_MS,
		       cval);
	GUEST_ASSERT_EQ(READ_ONCE(kvt_irqs[timer].cval), cval);
	GUEST_ASSERT_EQ(READ_ONCE(kvt_irqs[!timer].count), 0);
	GUEST_DONE();
}

static void test_level(enum arch_timer timer, bool offset)
{
	const char *what = offset ? "CVAL moved ahead while level, counter offset" :
				    "CVAL moved ahead while level";
	struct kvt_timer_irqs irqs;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;

	vm = kvt_timer_vm_create_for(&vcpu, guest_level, timer);
	if (offset)
		kvt_set_counter_offset(vm, kvt_host_counter() / 2);
	TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, what), UCALL_DONE);
	irqs = kvt_read_irqs(vm, timer);
	ksft_print_msg("%s timer, %s: line dropped, interrupt %lu ticks after the new CVAL\n",
		       kvt_timer_name(timer), what, irqs.cnt - irqs.cval);
	kvt_timer_vm_free(vm);
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

	vm = kvt_timer_vm_create_for(&vcpu, guest_code, timer);

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
	pr_info("usage: %s [-v | -p] [-w | -l | -L]\n", name);
	pr_info("  -v  the virtual timer only\n");
	pr_info("  -p  the physical timer only\n");
	pr_info("  -w  an offset whose sum with CVAL wraps, instead of the jumps\n");
	pr_info("  -l  CVAL moved ahead while the line is up, instead of the jumps\n");
	pr_info("  -L  the same, under a counter offset\n");
	exit(KSFT_FAIL);
}

int main(int argc, char *argv[])
{
	bool test[KVT_NR_TIMERS] = { true, true };
	int opt, mode = 0;

	while ((opt = getopt(argc, argv, "vpwlL")) != -1) {
		switch (opt) {
		case 'v':
			test[PHYSICAL] = false;
			break;
		case 'p':
			test[VIRTUAL] = false;
			break;
		case 'w':
		case 'l':
		case 'L':
			if (mode)
				help(argv[0]);
			mode = opt;
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
		switch (mode) {
		case 'w':
			test_wrap(t);
			break;
		case 'l':
		case 'L':
			test_level(t, mode == 'L');
			break;
		default:
			test_jumps(t, false);
			test_jumps(t, true);
		}
	}
	return 0;
}
