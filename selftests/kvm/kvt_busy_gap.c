// SPDX-License-Identifier: GPL-2.0-only
/*
 * kvt_busy_gap - what a running guest loses around its timer deadlines
 *
 *   kvt_busy_gap [-n DEADLINES] [-p PERIOD_US]
 *
 * A guest that busy-waits on its time counter should run through its own
 * timer deadlines: the host may take it out to deliver the interrupt, but
 * for no longer than the delivery takes.  A host timer that fires early
 * (a timer advance meant for a vCPU blocked in WFI) takes the vCPU out
 * before the deadline and holds it until the deadline: the guest sees its
 * counter jump.
 *
 * The guest programs DEADLINES deadlines, PERIOD_US apart, first through
 * SBI TIME set_timer, then (if the vCPU has Sstc) through stimecmp.  With
 * interrupts off, it reads its counter in a loop, and sip.STIP before
 * each read, and records the longest gap between two consecutive counter
 * reads from WINDOW_US before each deadline until WINDOW_US after it (or
 * until the interrupt is pending, if later).  One line per mode:
 *
 *   # kvt-busy-gap {"backend": "vtimer", "mode": "sbi", "hz": ..., "deadlines": ...,
 *                   "gap_max": ..., "gap_p50": ...}
 *
 * with the largest and the median (nearest rank) of the per-deadline
 * gaps, in counter ticks.  It fails only on what must hold anywhere: the
 * interrupt is never pending before its deadline, and it comes.  How the
 * gaps compare between backends is for a benchmark.
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kvt_riscv_timer.h"
#include "ucall_common.h"

#define MAX_DEADLINES	1000
#define WINDOW_US	200
/* An interrupt not pending this long after its deadline is lost. */
#define SLACK_US	50000

enum { MODE_SBI, MODE_SSTC, NR_MODES };

static const char * const mode_names[NR_MODES] = { "sbi", "sstc" };

/* Shared with the guest. */
static u64 nr_deadlines = 100;
static u64 period_us = 1000;
static bool guest_sstc;
static u64 gaps[NR_MODES][MAX_DEADLINES];

/* The longest gap between two counter reads around one deadline. */
static u64 busy_through(int mode, u64 deadline)
{
	u64 from = deadline - usec_to_cycles(WINDOW_US);
	u64 until = deadline + usec_to_cycles(WINDOW_US);
	u64 limit = deadline + usec_to_cycles(SLACK_US);
	u64 prev, now, gap = 0;
	bool seen = false;
	bool pending;

	kvt_guest_set_cmp(mode == MODE_SSTC, deadline);
	prev = timer_get_cycles();
	for (;;) {
		/* Pending before this read: never before the deadline. */
		pending = kvt_guest_stip_pending();
		now = timer_get_cycles();
		__GUEST_ASSERT(!pending || now >= deadline,
			       "%s: interrupt pending at %lu, before its deadline %lu",
			       mode_names[mode], now, deadline);
		if (prev >= from && now - prev > gap)
			gap = now - prev;
		prev = now;
		seen |= pending;
		if (seen && now >= until)
			return gap;
		__GUEST_ASSERT(seen || now < limit,
			       "%s: interrupt not pending %u us after its deadline %lu",
			       mode_names[mode], SLACK_US, deadline);
	}
}

static void guest_code(void)
{
	int mode;
	u64 i;

	local_irq_disable();
	timer_irq_enable();
	for (mode = 0; mode < NR_MODES; mode++) {
		if (mode == MODE_SSTC && !guest_sstc)
			break;
		for (i = 0; i < nr_deadlines; i++)
			gaps[mode][i] = busy_through(mode, timer_get_cycles() +
						     usec_to_cycles(period_us));
		kvt_guest_set_cmp(mode == MODE_SSTC, -1ULL);
	}
	GUEST_DONE();
}

static void guest_irq_handler(struct ex_regs *regs)
{
	GUEST_FAIL("interrupt taken with interrupts off, cause %lx", regs->cause);
}

static int cmp_u64(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? -1 : x > y;
}

static void report(int mode, const char *backend, u64 hz)
{
	u64 sorted[MAX_DEADLINES];

	memcpy(sorted, gaps[mode], nr_deadlines * sizeof(sorted[0]));
	qsort(sorted, nr_deadlines, sizeof(sorted[0]), cmp_u64);
	/* Nearest rank: the smallest with half of them at or below it. */
	printf("# kvt-busy-gap {\"backend\": \"%s\", \"mode\": \"%s\", \"hz\": %lu, ",
	       backend, mode_names[mode], hz);
	printf("\"deadlines\": %lu, \"gap_max\": %lu, \"gap_p50\": %lu}\n",
	       nr_deadlines, sorted[nr_deadlines - 1],
	       sorted[(nr_deadlines + 1) / 2 - 1]);
	fflush(stdout);
}

int main(int argc, char *argv[])
{
	const char *backend;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;
	cpu_set_t set;
	int opt;

	while ((opt = getopt(argc, argv, "n:p:")) != -1) {
		switch (opt) {
		case 'n':
			nr_deadlines = strtoull(optarg, NULL, 0);
			break;
		case 'p':
			period_us = strtoull(optarg, NULL, 0);
			break;
		default:
			exit(KSFT_FAIL);
		}
	}
	TEST_ASSERT(nr_deadlines >= 1 && nr_deadlines <= MAX_DEADLINES,
		    "-n takes 1..%d deadlines", MAX_DEADLINES);
	TEST_ASSERT(period_us > WINDOW_US, "-p must exceed the %d us window",
		    WINDOW_US);

	/*
	 * One host CPU for the vCPU, as kvt_bench does: under -icount, how
	 * soon a vCPU runs again depends on its CPU's place in QEMU's
	 * round-robin.
	 */
	if (sysconf(_SC_NPROCESSORS_ONLN) > 1) {
		CPU_ZERO(&set);
		CPU_SET(1, &set);
		TEST_ASSERT(!sched_setaffinity(0, sizeof(set), &set),
			    "sched_setaffinity: %s", strerror(errno));
	}

	backend = kvt_module_loaded() ? "vtimer" : "intree";
	vm = kvt_timer_vm_create(&vcpu, guest_code, guest_irq_handler);
	guest_sstc = __vcpu_has_isa_ext(vcpu, KVM_RISCV_ISA_EXT_SSTC);
	sync_global_to_guest(vm, guest_sstc);
	sync_global_to_guest(vm, nr_deadlines);
	sync_global_to_guest(vm, period_us);

	TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, "busy-wait"), UCALL_DONE);

	sync_global_from_guest(vm, gaps);
	report(MODE_SBI, backend, timer_freq);
	if (guest_sstc)
		report(MODE_SSTC, backend, timer_freq);
	else
		ksft_print_msg("no Sstc in the vCPU: SBI set_timer only\n");

	kvm_vm_free(vm);
	return 0;
}
