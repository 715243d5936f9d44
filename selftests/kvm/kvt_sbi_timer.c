// SPDX-License-Identifier: GPL-2.0-only
/*
 * kvt_sbi_timer - the guest timer through SBI TIME set_timer
 *
 * Upstream arch_timer programs vstimecmp directly and skips without Sstc.
 * This test drives the timer the way a guest without Sstc must, through SBI
 * TIME set_timer (and the legacy v0.1 call), on hosts with and without
 * Sstc, and checks:
 *
 *  - one interrupt per deadline, never before it, while the guest spins and
 *    while it waits in WFI (the blocked-vCPU wakeup path);
 *  - a deadline already past is pending before the guest runs again;
 *  - set_timer(-1) clears a pending interrupt and cancels a programmed one;
 *  - a due timer the guest masks (sie.STIE clear) does not end WFI: the
 *    blocked vCPU does not spin through guest exits;
 *  - all of it while a host thread moves the vCPU between CPUs (-m).
 */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "kvt_riscv_timer.h"
#include "ucall_common.h"

#define NR_DEADLINES	20
#define PERIOD_US	2000
#define SLACK_US	50000

enum { STAGE_MASKED_WFI = 1 };

static u64 irq_count;
static u64 irq_at;
static bool use_legacy;

static void sbi_set_timer(u64 deadline)
{
	struct sbiret ret;

	if (use_legacy)
		ret = sbi_ecall(SBI_EXT_0_1_SET_TIMER, 0, deadline, 0, 0, 0, 0, 0);
	else
		ret = kvt_sbi_set_timer(deadline);
	if (!use_legacy)
		GUEST_ASSERT_EQ(ret.error, 0);
}

static void guest_irq_handler(struct ex_regs *regs)
{
	GUEST_ASSERT_EQ(regs->cause & ~CAUSE_IRQ_FLAG, IRQ_S_TIMER);
	WRITE_ONCE(irq_at, timer_get_cycles());
	WRITE_ONCE(irq_count, irq_count + 1);
	/* Clears the interrupt, as a guest kernel does. */
	sbi_set_timer(-1ULL);
}

static void guest_wfi(void)
{
	asm volatile("wfi" ::: "memory");
}

/* Wait for interrupt number @n, spinning or in WFI, at most @slack_us. */
static void wait_irq(u64 n, bool wfi, u64 deadline)
{
	u64 limit = deadline + usec_to_cycles(SLACK_US);

	while (READ_ONCE(irq_count) < n) {
		/*
		 * Interrupts off from the check to WFI: one taken in between
		 * would leave WFI waiting for nothing.  WFI still ends on a
		 * pending, sie-enabled interrupt.
		 */
		local_irq_disable();
		if (wfi && READ_ONCE(irq_count) < n)
			guest_wfi();
		local_irq_enable();
		__GUEST_ASSERT(timer_get_cycles() < limit,
			       "interrupt %lu not delivered %u us after its deadline",
			       n, SLACK_US);
	}
}

static void guest_deadlines(bool wfi)
{
	u64 base = irq_count;

	for (int i = 1; i <= NR_DEADLINES; i++) {
		u64 deadline = timer_get_cycles() + usec_to_cycles(PERIOD_US);

		sbi_set_timer(deadline);
		wait_irq(base + i, wfi, deadline);
		__GUEST_ASSERT(irq_at >= deadline,
			       "interrupt at %lu, before its deadline %lu", irq_at, deadline);
		/* Exactly one: nothing more within another period. */
		udelay(PERIOD_US);
		GUEST_ASSERT_EQ(READ_ONCE(irq_count), base + i);
	}
}

static void guest_past_and_clear(void)
{
	u64 base = irq_count;

	/* A past deadline is pending as soon as set_timer returns. */
	local_irq_disable();
	sbi_set_timer(timer_get_cycles() - 1000);
	GUEST_ASSERT(kvt_guest_stip_pending());
	local_irq_enable();
	GUEST_ASSERT_EQ(READ_ONCE(irq_count), base + 1);

	/* set_timer(-1) clears a pending interrupt ... */
	local_irq_disable();
	sbi_set_timer(timer_get_cycles() - 1);
	GUEST_ASSERT(kvt_guest_stip_pending());
	sbi_set_timer(-1ULL);
	GUEST_ASSERT(!kvt_guest_stip_pending());
	local_irq_enable();
	GUEST_ASSERT_EQ(READ_ONCE(irq_count), base + 1);

	/*
	 * ... and cancels a programmed one.  Interrupts off between the two
	 * calls: on a slow host the first deadline may pass before the
	 * second call, and set_timer(-1) must then clear it.
	 */
	local_irq_disable();
	sbi_set_timer(timer_get_cycles() + usec_to_cycles(PERIOD_US));
	sbi_set_timer(-1ULL);
	GUEST_ASSERT(!kvt_guest_stip_pending());
	local_irq_enable();
	udelay(3 * PERIOD_US);
	GUEST_ASSERT_EQ(READ_ONCE(irq_count), base + 1);

	/* A far deadline and the largest one do not fire. */
	sbi_set_timer(-2ULL);
	udelay(PERIOD_US);
	sbi_set_timer(timer_get_cycles() + (1ULL << 62));
	udelay(PERIOD_US);
	GUEST_ASSERT_EQ(READ_ONCE(irq_count), base + 1);
	sbi_set_timer(-1ULL);
}

static void guest_code(void)
{
	timer_irq_enable();
	local_irq_enable();

	guest_deadlines(false);
	guest_deadlines(true);
	guest_past_and_clear();
	use_legacy = true;
	guest_deadlines(false);
	use_legacy = false;

	/* A due timer, masked: WFI must block, not return at once. */
	timer_irq_disable();
	sbi_set_timer(timer_get_cycles() - 1);
	GUEST_SYNC(STAGE_MASKED_WFI);
	for (;;)
		guest_wfi();
}

static struct kvm_vcpu *vcpu;
static bool migrating;
static pthread_t vcpu_thread;

static void *vcpu_main(void *arg)
{
	int ret = __vcpu_run(vcpu);
	struct ucall uc;

	if (ret && errno == EINTR)
		return (void *)1L;	/* stopped by the main thread */
	TEST_ASSERT(!ret, "KVM_RUN: %s", strerror(errno));
	kvt_get_ucall(vcpu, &uc, BIT_ULL(UCALL_SYNC));
	TEST_ASSERT_EQ(uc.args[1], STAGE_MASKED_WFI);
	return (void *)2L;
}

static void on_sigusr1(int sig)
{
}

/* The guest waits for interrupts in WFI: a lost one blocks it. */
#define WATCHDOG_S	30

int main(int argc, char *argv[])
{
	struct sigaction sa = { .sa_handler = on_sigusr1 };
	u64 exits_before, exits_after;
	struct kvt_migrator migrator;
	struct kvm_vm *vm;
	int opt, stats_fd;
	void *stage;

	while ((opt = getopt(argc, argv, "m")) != -1) {
		switch (opt) {
		case 'm':
			migrating = true;
			break;
		default:
			exit(KSFT_FAIL);
		}
	}

	vm = kvt_timer_vm_create(&vcpu, guest_code, guest_irq_handler);

	sigaction(SIGUSR1, &sa, NULL);
	pthread_create(&vcpu_thread, NULL, vcpu_main, NULL);
	if (migrating)
		kvt_migrator_start(&migrator, vcpu_thread);
	kvt_join_or_fail(vcpu_thread, &stage, WATCHDOG_S, "deadlines");
	if (migrating)
		kvt_migrator_stop(&migrator);
	TEST_ASSERT_EQ((long)stage, 2);
	ksft_print_msg("deadlines, past, clear and legacy checks passed\n");

	/* The guest now waits in WFI with a due, masked timer. */
	stats_fd = vcpu_get_stats_fd(vcpu);
	pthread_create(&vcpu_thread, NULL, vcpu_main, NULL);
	usleep(100000);
	exits_before = kvt_vcpu_stat(stats_fd, "exits");
	usleep(200000);
	exits_after = kvt_vcpu_stat(stats_fd, "exits");
	close(stats_fd);
	pthread_kill(vcpu_thread, SIGUSR1);
	pthread_join(vcpu_thread, &stage);
	TEST_ASSERT_EQ((long)stage, 1);
	ksft_print_msg("masked timer in WFI: %lu exits in 200 ms\n",
		       exits_after - exits_before);
	TEST_ASSERT(exits_after - exits_before < 20,
		    "a masked, due timer ends WFI: %lu exits in 200 ms (spinning)",
		    exits_after - exits_before);

	kvm_vm_free(vm);
	return 0;
}
