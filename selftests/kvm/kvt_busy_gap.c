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
 * The guest programs DEADLINES deadlines, PERIOD_US apart, in each timer
 * mode in turn, the mode's counter the one it reads:
 *
 *  RISC-V  sbi     SBI TIME set_timer; the time CSR
 *          sstc    stimecmp, if the vCPU has Sstc; the time CSR
 *  arm64   vtimer  the EL1 virtual timer: CNTV_CVAL_EL0, then CNTV_CTL_EL0
 *                  enabled and unmasked; CNTVCT_EL0
 *          ptimer  the EL1 physical timer, the same on CNTP_*; CNTPCT_EL0
 *
 * With interrupts off at the CPU (on arm64 the timers' PPIs are enabled at
 * the vGICv3), it reads its counter in a loop, and whether the timer
 * interrupt is pending before each read, and records the longest gap
 * between two consecutive counter reads from WINDOW_US before each
 * deadline until WINDOW_US after it (or until the interrupt is pending, if
 * later).
 *
 * Pending is what the host delivers: sip.STIP on RISC-V; on arm64 the
 * timer's PPI as the highest priority pending interrupt of the guest's CPU
 * interface (ICC_HPPIR1_EL1, a register of the CPU, read without an exit),
 * where only the host's vGIC puts it, at a guest entry.  Not the timer's
 * CTL.ISTATUS: the timer sets it when the counter reaches CVAL, never
 * before by definition, and where KVM emulates the physical timer (nVHE)
 * each read of CNTP_CTL_EL0 is an exit.  Nor the redistributor's pending
 * bit: each read of it is an exit.  Once pending there, a deadline's
 * interrupt stays pending until the next exit, also after the timer moved
 * on; so the guest reads the redistributor once after it programs each
 * deadline, and after each mode, outside the window: an exit, at which the
 * vGIC resamples the timer's line.
 *
 * One line per mode:
 *
 *   # kvt-busy-gap {"backend": "vtimer", "mode": "sbi", "hz": ..., "deadlines": ...,
 *                   "gap_max": ..., "gap_p50": ..., "early": ...,
 *                   "spin_ns": ..., "thread": {"run_ns": ..., "wait_ns": ...,
 *                   "slices": ...}}
 *
 * with the largest and the median (nearest rank) of the per-deadline gaps,
 * in ticks of the counter ("hz": the time CSR's frequency on RISC-V,
 * CNTFRQ_EL0 on arm64), "early": the deadlines whose interrupt was pending
 * before them, "spin_ns": the time kvm_vtimer's vCPU waited before guest
 * entry for a deadline in that mode (its debugfs counter; null with KVM's
 * own timer), time the guest did not run, and "thread": the vCPU thread's
 * schedstat over the mode (a new thread each: the time it ran, waited
 * runnable, and its slices), so that a long gap shows whether the host's
 * scheduler made it.  It fails only on what must hold anywhere: the
 * interrupt is never pending before its deadline, and it comes.  KVM's own
 * timer breaks the first with SBI set_timer on a host with Sstc (a
 * preemption between the call and the next entry restores the previous
 * deadline: Documentation/riscv.rst), so with it loaded an early interrupt
 * is counted, not failed, as kvt_bench does.  How the gaps compare between
 * backends is for a benchmark.
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifdef __aarch64__
#include "kvt_arm64_timer.h"
#else
#include "kvt_riscv_timer.h"
#endif
#include "ucall_common.h"

#define MAX_DEADLINES	1000
#define WINDOW_US	200
/* An interrupt not pending this long after its deadline is lost. */
#define SLACK_US	50000

static void guest_code(void);

/*
 * The architecture's part.  Guest and host: the modes and has_mode().
 * Guest: guest_timer_init(), guest_now(), guest_set_deadline(),
 * guest_stop(), guest_pending() and the interrupt handler, which fails.
 * Host: the VM, the counter frequency and a note on the modes not run.
 */
#ifdef __aarch64__

enum { MODE_VTIMER, MODE_PTIMER, NR_MODES };

static const char * const mode_names[NR_MODES] = { "vtimer", "ptimer" };

static enum arch_timer mode_timer(int mode)
{
	return mode == MODE_PTIMER ? PHYSICAL : VIRTUAL;
}

/* Both timers are always there. */
static bool has_mode(int mode)
{
	return true;
}

/* Both timers masked, their PPIs enabled at the vGIC. */
static void guest_timer_init(void)
{
	kvt_guest_timer_init();
}

static u64 guest_now(int mode)
{
	return timer_get_cntct(mode_timer(mode));
}

/*
 * As Linux's clockevent: CVAL, then CTL enabled and unmasked.  Then an
 * exit, so that the previous deadline's interrupt is no longer pending.
 */
static void guest_set_deadline(int mode, u64 when)
{
	kvt_guest_arm(mode_timer(mode), when);
	kvt_guest_resample(mode_timer(mode));
}

/* The timer disabled, its interrupt no longer pending. */
static void guest_stop(int mode)
{
	timer_set_ctl(mode_timer(mode), 0);
	kvt_guest_resample(mode_timer(mode));
}

/* Whether the host delivered the timer's PPI to the CPU interface. */
static bool guest_pending(int mode)
{
	return kvt_guest_hppir() == kvt_timer_intid[mode_timer(mode)];
}

static void guest_irq_handler(struct ex_regs *regs)
{
	GUEST_FAIL("interrupt %u taken with interrupts off", gic_get_and_ack_irq());
}

static struct kvm_vm *host_vm_create(struct kvm_vcpu **vcpu)
{
	return __kvt_timer_vm_create(vcpu, guest_code, guest_irq_handler);
}

/* CNTFRQ_EL0, the same for host and guest. */
static u64 host_hz(void)
{
	return timer_get_cntfrq();
}

static void host_note_modes(void)
{
}

#else /* RISC-V */

enum { MODE_SBI, MODE_SSTC, NR_MODES };

static const char * const mode_names[NR_MODES] = { "sbi", "sstc" };

/* Shared with the guest. */
static bool guest_sstc;

static bool has_mode(int mode)
{
	return mode != MODE_SSTC || guest_sstc;
}

static void guest_timer_init(void)
{
	timer_irq_enable();
}

static u64 guest_now(int mode)
{
	return timer_get_cycles();
}

static void guest_set_deadline(int mode, u64 when)
{
	kvt_guest_set_cmp(mode == MODE_SSTC, when);
}

static void guest_stop(int mode)
{
	kvt_guest_set_cmp(mode == MODE_SSTC, -1ULL);
}

static bool guest_pending(int mode)
{
	return kvt_guest_stip_pending();
}

static void guest_irq_handler(struct ex_regs *regs)
{
	GUEST_FAIL("interrupt taken with interrupts off, cause %lx", regs->cause);
}

static struct kvm_vm *host_vm_create(struct kvm_vcpu **vcpu)
{
	struct kvm_vm *vm = kvt_timer_vm_create(vcpu, guest_code, guest_irq_handler);

	guest_sstc = __vcpu_has_isa_ext(*vcpu, KVM_RISCV_ISA_EXT_SSTC);
	sync_global_to_guest(vm, guest_sstc);
	return vm;
}

/* The timer frequency, as kvt_timer_vm_create() read it. */
static u64 host_hz(void)
{
	return timer_freq;
}

static void host_note_modes(void)
{
	if (!guest_sstc)
		ksft_print_msg("no Sstc in the vCPU: SBI set_timer only\n");
}

#endif

/* Shared with the guest. */
static u64 nr_deadlines = 100;
static u64 period_us = 1000;
static u64 gaps[NR_MODES][MAX_DEADLINES];
/* KVM's own timer: count early interrupts (above) instead of failing. */
static bool count_early;
static u64 early[NR_MODES];

/* The longest gap between two counter reads around one deadline. */
static u64 busy_through(int mode, u64 deadline)
{
	u64 from = deadline - usec_to_cycles(WINDOW_US);
	u64 until = deadline + usec_to_cycles(WINDOW_US);
	u64 limit = deadline + usec_to_cycles(SLACK_US);
	u64 prev, now, gap = 0;
	bool seen = false, was_early = false;
	bool pending;

	guest_set_deadline(mode, deadline);
	prev = guest_now(mode);
	for (;;) {
		/* Pending before this read: never before the deadline. */
		pending = guest_pending(mode);
		now = guest_now(mode);
		__GUEST_ASSERT(!pending || now >= deadline || count_early,
			       "%s: interrupt pending at %lu, before its deadline %lu",
			       mode_names[mode], now, deadline);
		if (pending && now < deadline) {
			/* Not this deadline's: counted once, then waited past. */
			if (!was_early)
				early[mode]++;
			was_early = true;
			pending = false;
		}
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
	guest_timer_init();
	for (mode = 0; mode < NR_MODES; mode++) {
		if (!has_mode(mode))
			break;
		for (i = 0; i < nr_deadlines; i++)
			gaps[mode][i] = busy_through(mode, guest_now(mode) +
						     usec_to_cycles(period_us));
		guest_stop(mode);
		GUEST_SYNC(mode);
	}
	GUEST_DONE();
}

static int cmp_u64(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? -1 : x > y;
}

/*
 * kvm_vtimer's spin_ns of @vm so far: the time its vCPU waited before guest
 * entry for a deadline (the advance's cost); false if the VM has no such
 * file (KVM's own timer).
 */
static bool module_spin_ns(struct kvm_vm *vm, u64 *ns)
{
	char line[1024];

	if (!kvt_vtimer_total(vm, line, sizeof(line)))
		return false;
	*ns = kvt_vtimer_field(line, "spin_ns");
	return true;
}

static void report(int mode, const char *backend, u64 hz, bool has_spin,
		   u64 spin_ns, const struct kvt_sched *sched)
{
	u64 sorted[MAX_DEADLINES];

	memcpy(sorted, gaps[mode], nr_deadlines * sizeof(sorted[0]));
	qsort(sorted, nr_deadlines, sizeof(sorted[0]), cmp_u64);
	/* Nearest rank: the smallest with half of them at or below it. */
	printf("# kvt-busy-gap {\"backend\": \"%s\", \"mode\": \"%s\", \"hz\": %lu, ",
	       backend, mode_names[mode], hz);
	printf("\"deadlines\": %lu, \"gap_max\": %lu, \"gap_p50\": %lu, \"early\": %lu, ",
	       nr_deadlines, sorted[nr_deadlines - 1],
	       sorted[(nr_deadlines + 1) / 2 - 1], early[mode]);
	if (has_spin)
		printf("\"spin_ns\": %lu, ", spin_ns);
	else
		printf("\"spin_ns\": null, ");
	printf("\"thread\": {\"run_ns\": %lu, \"wait_ns\": %lu, \"slices\": %lu}}\n",
	       sched->run_ns, sched->wait_ns, sched->slices);
	fflush(stdout);
}

int main(int argc, char *argv[])
{
	const char *backend;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;
	cpu_set_t set;
	u64 spin_ns[NR_MODES] = { 0 }, spun = 0, now;
	struct kvt_sched sched[NR_MODES] = { 0 }, s;
	bool has_spin;
	int opt, mode;

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
	count_early = !strcmp(backend, "intree");
	vm = host_vm_create(&vcpu);
	sync_global_to_guest(vm, nr_deadlines);
	sync_global_to_guest(vm, period_us);
	sync_global_to_guest(vm, count_early);

	/* After each mode, a sync: what the module spun in it. */
	has_spin = module_spin_ns(vm, &spun);
	while (kvt_vcpu_run_watched_sched(vcpu, &uc, "busy-wait", &s) == UCALL_SYNC) {
		mode = uc.args[1];
		TEST_ASSERT(mode >= 0 && mode < NR_MODES, "sync of mode %d", mode);
		sched[mode] = s;
		if (has_spin && module_spin_ns(vm, &now)) {
			spin_ns[mode] = now - spun;
			spun = now;
		}
	}
	TEST_ASSERT_EQ(uc.cmd, UCALL_DONE);

	sync_global_from_guest(vm, gaps);
	sync_global_from_guest(vm, early);
	for (mode = 0; mode < NR_MODES; mode++)
		if (has_mode(mode))
			report(mode, backend, host_hz(), has_spin,
			       spin_ns[mode], &sched[mode]);
	host_note_modes();

	kvt_timer_vm_free(vm);
	return 0;
}
