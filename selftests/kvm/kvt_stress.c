// SPDX-License-Identifier: GPL-2.0-only
/*
 * kvt_stress - the vCPU timer under load, bounded (RISC-V and arm64)
 *
 * 1. Many vCPUs (max: KVM_CAP_MAX_VCPUS, at most the selftest library's
 *    KVM_MAX_VCPUS), short periods, migration: every vCPU programs NR deadlines
 *    a random 1..PERIOD us ahead, waits for each spinning or in WFI, while a
 *    host thread moves every vCPU thread to another CPU each MIGRATE us.
 *    Then a storm: STORM rewrites of the deadline, most a few us ahead or
 *    already past, then one last deadline.  Every interrupt is checked:
 *    none before the deadline in force (so none twice: the handler
 *    disarms), and each waited deadline gets exactly one.  With kvm_vtimer's
 *    debugfs statistics (when it has them): no early one (and the
 *    architecture's own check, below).
 * 2. VM churn: CYCLES VMs created, run through one timer interrupt and
 *    destroyed, one after the other; with -k MODULE and kvm_vtimer loaded,
 *    the module is unloaded and loaded again between VMs.  The module's
 *    reference count is back to its value before each VM, and 0 at the end.
 *
 * RISC-V: deadlines by SBI set_timer; the storm also writes vstimecmp
 * directly when the host has Sstc.  Without Sstc, the module must have
 * raised at least as many interrupts as the guests took.
 *
 * arm64: each VM has an in-kernel vGICv3.  The deadlines take turns on the
 * EL1 virtual and physical timers, each programmed by CVAL or by TVAL, then
 * CTL enabled.  The storm writes CVAL, TVAL or CTL of either timer, with
 * interrupts masked at the CPU, then has the vGIC resample the line
 * (kvt_guest_resample()) and unmasks: an interrupt taken then must find
 * its timer enabled, unmasked, ISTATUS set and the counter at or past CVAL.
 * With the module, its statistics must not say "declined" and must count
 * the interrupts it raised.
 *
 * A lost interrupt leaves a vCPU waiting for ever: the host gives up after
 * WATCHDOG seconds without progress and fails.  No other time limit.
 *
 *   kvt_stress [-v VCPUS|max] [-n NR] [-p PERIOD_US] [-m MIGRATE_US]
 *              [-s STORM] [-c CYCLES] [-k MODULE] [-w WATCHDOG_S]
 */
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifdef __aarch64__
#include "kvt_arm64_timer.h"
#else
#include "kvt_riscv_timer.h"
#endif
#include "ucall_common.h"

#define MAX_VCPUS	1024

/* Shared with the guest. */
static struct {
	u64 nr_deadlines;
	u64 period_us;
	u64 storm;
	bool sstc;
} args = { .nr_deadlines = 100, .period_us = 200, .storm = 2000 };

struct vcpu_state {
	u64 armed;		/* the deadline in force, -1 for none */
	u64 irqs;		/* interrupts taken */
	u64 early_at;		/* first interrupt before its deadline */
	u64 early_armed;
	u64 deadlines;		/* deadlines waited for */
	u64 progress;		/* for the host's watchdog */
	u64 seen;		/* the time when it last waited */
#ifdef __aarch64__
	struct kvt_timer_irqs timer[KVT_NR_TIMERS];	/* per timer */
#endif
} __aligned(64);

static struct vcpu_state state[MAX_VCPUS];

/*
 * The architecture's part.  Guest: guest_now(), the interrupt handler,
 * guest_timer_init(), guest_arm_in() (deadline number @how, @delay_us
 * ahead), guest_storm_write() (one rewrite from the random @r),
 * guest_disarm() and guest_wfi().  Host: host_probe() after the VM's
 * set-up, host_check_stats() on kvm_vtimer's "total" line, host_report()
 * on the guests' records.
 */
#ifdef __aarch64__

static u64 guest_now(void)
{
	return timer_get_cntct(VIRTUAL);
}

/* Checks the timer condition (kvt_guest_timer_irq()) and disarms. */
static void guest_irq_handler(struct ex_regs *regs)
{
	struct vcpu_state *st = &state[guest_get_vcpuid()];

	if (kvt_guest_timer_irq(st->timer))
		WRITE_ONCE(st->irqs, st->irqs + 1);
}

static void guest_timer_init(struct vcpu_state *st)
{
	WRITE_ONCE(st->armed, -1ULL);
	kvt_guest_timer_init();
	local_irq_enable();
}

/*
 * Deadline @how: bit 1 picks the timer, bit 2 CVAL or TVAL; the timer is
 * disabled (by the handler, or guest_disarm()), so no stale interrupt.
 */
static void guest_arm_in(struct vcpu_state *st, u64 delay_us, u64 how)
{
	enum arch_timer timer = how & 2 ? PHYSICAL : VIRTUAL;
	u64 delta = usec_to_cycles(delay_us);

	local_irq_disable();
	if (how & 4)
		timer_set_tval(timer, delta);
	else
		timer_set_cval(timer, timer_get_cntct(timer) + delta);
	timer_set_ctl(timer, CTL_ENABLE);
	WRITE_ONCE(st->armed, timer_get_cval(timer));
	local_irq_enable();
}

/*
 * One rewrite of either timer: CVAL then CTL enabled, TVAL then CTL
 * enabled, CVAL alone (the timer stays as it was: enabled, masked or off)
 * or CTL alone, to any of its four settings.  The deadline is a few us
 * ahead or already past.  A timer due before the write may have its
 * interrupt pending at the vGIC: resample before unmasking.
 */
static void guest_storm_write(struct vcpu_state *st, u64 r)
{
	static const u32 ctls[] = { 0, CTL_ENABLE, CTL_IMASK, CTL_ENABLE | CTL_IMASK };
	enum arch_timer timer = r & 1 ? PHYSICAL : VIRTUAL;
	u64 now = timer_get_cntct(timer);
	u64 cval = r & 4 ? now + usec_to_cycles((r >> 8) % 20) : now - (r >> 8) % 1000;

	local_irq_disable();
	switch ((r >> 5) & 3) {
	case 0:
		timer_set_cval(timer, cval);
		timer_set_ctl(timer, CTL_ENABLE);
		break;
	case 1:
		timer_set_tval(timer, (s32)(cval - now));
		timer_set_ctl(timer, CTL_ENABLE);
		break;
	case 2:
		timer_set_cval(timer, cval);
		break;
	default:
		timer_set_ctl(timer, ctls[(r >> 32) & 3]);
	}
	WRITE_ONCE(st->armed, timer_get_cval(timer));
	kvt_guest_resample(timer);
	local_irq_enable();
	isb();
}

/* Both timers off, and no interrupt of theirs left pending. */
static void guest_disarm(struct vcpu_state *st)
{
	local_irq_disable();
	for (int t = VIRTUAL; t <= PHYSICAL; t++) {
		timer_set_ctl(t, 0);
		kvt_guest_resample(t);
	}
	WRITE_ONCE(st->armed, -1ULL);
	local_irq_enable();
	isb();
}

static void guest_wfi(void)
{
	wfi();
}

static const char *host_probe(struct kvm_vcpu *vcpu)
{
	return "";
}

/*
 * Each interrupt a guest took came from a line that kvm_vtimer drove up
 * (Documentation/arm64.rst, "Statistics"), but one rising edge may serve
 * more than one interrupt: the module does not see a guest mask its
 * direct timer.  So only: it served the VM, and raised some.
 */
static void host_check_stats(struct kvm_vm *vm, const char *total, u64 irqs)
{
	u64 module_irqs = kvt_vtimer_field(total, "irqs");
	char line[1024];
	FILE *f = kvt_vtimer_fopen(vm);

	TEST_ASSERT(f, "kvm_vtimer's statistics file went away");
	while (fgets(line, sizeof(line), f))
		TEST_ASSERT(strncmp(line, "declined:", 9),
			    "kvm_vtimer declined a VM with a vGIC: %s", line);
	fclose(f);
	TEST_ASSERT(module_irqs > 0 || !irqs,
		    "the guests took %lu interrupts, kvm_vtimer raised none", irqs);
}

static void host_report(u32 nr)
{
	u64 n[KVT_NR_TIMERS] = {};

	for (u32 i = 0; i < nr; i++)
		for (int t = VIRTUAL; t <= PHYSICAL; t++)
			n[t] += state[i].timer[t].count;
	ksft_print_msg("virtual timer %lu interrupts, physical timer %lu\n",
		       n[VIRTUAL], n[PHYSICAL]);
}

#else /* RISC-V */

static u64 guest_now(void)
{
	return timer_get_cycles();
}

static void guest_irq_handler(struct ex_regs *regs)
{
	struct vcpu_state *st = &state[guest_get_vcpuid()];
	u64 now = timer_get_cycles();

	GUEST_ASSERT_EQ(regs->cause & ~CAUSE_IRQ_FLAG, IRQ_S_TIMER);
	if (now < READ_ONCE(st->armed) && !st->early_at) {
		WRITE_ONCE(st->early_at, now);
		WRITE_ONCE(st->early_armed, st->armed);
	}
	WRITE_ONCE(st->irqs, st->irqs + 1);
	kvt_sbi_set_timer(-1ULL);
	WRITE_ONCE(st->armed, -1ULL);
}

static void guest_timer_init(struct vcpu_state *st)
{
	WRITE_ONCE(st->armed, -1ULL);
	timer_irq_enable();
	local_irq_enable();
}

/* Program @deadline, by SBI or (@csr) vstimecmp, with interrupts off. */
static void arm(struct vcpu_state *st, u64 deadline, bool csr)
{
	local_irq_disable();
	if (csr)
		timer_set_cmp(deadline);
	else
		kvt_sbi_set_timer(deadline);
	WRITE_ONCE(st->armed, deadline);
	local_irq_enable();
}

static void guest_arm_in(struct vcpu_state *st, u64 delay_us, u64 how)
{
	arm(st, timer_get_cycles() + usec_to_cycles(delay_us), false);
}

static void guest_storm_write(struct vcpu_state *st, u64 r)
{
	u64 now = timer_get_cycles();
	u64 deadline = r & 4 ? now + usec_to_cycles((r >> 8) % 20) : now - (r >> 8) % 1000;

	arm(st, deadline, args.sstc && (r & 1));
}

static void guest_disarm(struct vcpu_state *st)
{
	arm(st, -1ULL, false);
}

static void guest_wfi(void)
{
	asm volatile("wfi" ::: "memory");
}

static const char *host_probe(struct kvm_vcpu *vcpu)
{
	args.sstc = __vcpu_has_isa_ext(vcpu, KVM_RISCV_ISA_EXT_SSTC);
	return args.sstc ? " (Sstc)" : "";
}

/*
 * Without Sstc the module raises every interrupt the guests take; a raised
 * one a set_timer clears before the guest takes it is not taken.
 */
static void host_check_stats(struct kvm_vm *vm, const char *total, u64 irqs)
{
	u64 module_irqs = kvt_vtimer_field(total, "irqs");

	if (args.sstc)
		return;
	TEST_ASSERT(module_irqs >= irqs, "kvm_vtimer raised %lu interrupts, the guests took %lu",
		    module_irqs, irqs);
	ksft_print_msg("kvm_vtimer raised %lu, %lu cleared by set_timer first\n",
		       module_irqs, module_irqs - irqs);
}

static void host_report(u32 nr)
{
}

#endif

static void check_early(struct vcpu_state *st)
{
	__GUEST_ASSERT(!READ_ONCE(st->early_at),
		       "interrupt at %lx, before the deadline in force %lx",
		       st->early_at, st->early_armed);
}

/*
 * Exactly one interrupt for a deadline @delay_us ahead: waited for in WFI
 * if bit 0 of @how is set, else spinning (the other bits are the
 * architecture's, guest_arm_in()).
 */
static void one_deadline(struct vcpu_state *st, u64 delay_us, u64 how)
{
	u64 base = READ_ONCE(st->irqs);

	guest_arm_in(st, delay_us, how);
	while (READ_ONCE(st->irqs) == base) {
		WRITE_ONCE(st->seen, guest_now());
		if (how & 1) {
			/*
			 * Interrupts off from the check to WFI, or one taken
			 * in between leaves WFI waiting for nothing.  WFI
			 * still ends on a pending, enabled interrupt.
			 */
			local_irq_disable();
			if (READ_ONCE(st->irqs) == base)
				guest_wfi();
			local_irq_enable();
		} else {
			cpu_relax();
		}
	}
	check_early(st);
	GUEST_ASSERT_EQ(READ_ONCE(st->irqs), base + 1);
	WRITE_ONCE(st->deadlines, st->deadlines + 1);
	WRITE_ONCE(st->progress, st->progress + 1);
}

static void guest_code(void)
{
	struct vcpu_state *st = &state[guest_get_vcpuid()];
	u64 s = guest_get_vcpuid() * 2654435761ULL + 1;

	guest_timer_init(st);

	for (u64 i = 0; i < args.nr_deadlines; i++)
		one_deadline(st, 1 + kvt_xorshift(&s) % args.period_us, i);

	/* The storm: deadlines rewritten before most of them are due. */
	for (u64 i = 0; i < args.storm; i++) {
		guest_storm_write(st, kvt_xorshift(&s));
		check_early(st);
		WRITE_ONCE(st->progress, st->progress + 1);
	}
	/* Whatever the storm left is now due or disarmed. */
	guest_disarm(st);
	check_early(st);
	one_deadline(st, args.period_us, 1);
	one_deadline(st, args.period_us, 6);
	GUEST_DONE();
}

static struct kvm_vcpu *vcpus[MAX_VCPUS];
static pthread_t threads[MAX_VCPUS];
static u32 nr_vcpus, nr_done;
static bool migrating;
static u64 migrate_us = 1000;
static u64 migrations;
static long watchdog_s = 60;

static void *vcpu_main(void *arg)
{
	struct kvm_vcpu *vcpu = arg;
	struct ucall uc;

	vcpu_run(vcpu);
	kvt_get_ucall(vcpu, &uc, BIT_ULL(UCALL_DONE));
	__atomic_add_fetch(&nr_done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void *migrate_main(void *arg)
{
	long nr_cpus = sysconf(_SC_NPROCESSORS_ONLN);
	u64 s = 7;
	cpu_set_t set;

	while (READ_ONCE(migrating)) {
		for (u32 i = 0; i < nr_vcpus; i++) {
			CPU_ZERO(&set);
			CPU_SET(kvt_xorshift(&s) % nr_cpus, &set);
			pthread_setaffinity_np(threads[i], sizeof(set), &set);
			migrations++;
		}
		usleep(migrate_us);
	}
	return NULL;
}

static u64 guest_progress(struct kvm_vm *vm)
{
	u64 sum = 0;

	sync_global_from_guest(vm, state);
	for (u32 i = 0; i < nr_vcpus; i++)
		sum += state[i].progress;
	return sum;
}

/* What a hang leaves behind: the vCPUs' own view, and the module's. */
static void dump_stuck(struct kvm_vm *vm)
{
	char line[1024];
	FILE *f;

	sync_global_from_guest(vm, state);
	for (u32 i = 0; i < nr_vcpus; i++) {
		if (state[i].deadlines == args.nr_deadlines + 2)
			continue;
		ksft_print_msg("vCPU %u: deadlines %lu irqs %lu progress %lu armed %lx seen %lx\n",
			       i, state[i].deadlines, state[i].irqs, state[i].progress,
			       state[i].armed, state[i].seen);
	}
	f = kvt_vtimer_fopen(vm);
	while (f && fgets(line, sizeof(line), f))
		ksft_print_msg("kvm_vtimer: %s", line);
	if (f)
		fclose(f);
}

static void stress_vcpus(void)
{
	u64 irqs = 0, deadlines = 0, last = 0;
	pthread_t migrator;
	const char *what;
	char total[1024];
	struct kvm_vm *vm;
	time_t t0 = time(NULL), idle_since = t0;

	vm = vm_create_with_vcpus(nr_vcpus, guest_code, vcpus);
	kvt_timer_vm_setup(vm, vcpus, nr_vcpus, guest_irq_handler);
	what = host_probe(vcpus[0]);
	sync_global_to_guest(vm, args);

	for (u32 i = 0; i < nr_vcpus; i++)
		pthread_create(&threads[i], NULL, vcpu_main, vcpus[i]);
	migrating = migrate_us > 0;
	if (migrating)
		pthread_create(&migrator, NULL, migrate_main, NULL);

	/* The migrator may only touch threads not yet joined. */
	while (__atomic_load_n(&nr_done, __ATOMIC_SEQ_CST) < nr_vcpus) {
		u64 now_progress;

		usleep(100000);
		now_progress = guest_progress(vm);
		if (now_progress != last) {
			last = now_progress;
			idle_since = time(NULL);
		}
		if (time(NULL) - idle_since >= watchdog_s)
			dump_stuck(vm);
		TEST_ASSERT(time(NULL) - idle_since < watchdog_s,
			    "no vCPU progressed in %ld s: a timer interrupt was lost", watchdog_s);
	}
	if (migrating) {
		WRITE_ONCE(migrating, false);
		pthread_join(migrator, NULL);
	}
	for (u32 i = 0; i < nr_vcpus; i++)
		pthread_join(threads[i], NULL);

	sync_global_from_guest(vm, state);
	for (u32 i = 0; i < nr_vcpus; i++) {
		TEST_ASSERT(!state[i].early_at, "vCPU %u: interrupt at %lx, before %lx", i,
			    state[i].early_at, state[i].early_armed);
		TEST_ASSERT_EQ(state[i].deadlines, args.nr_deadlines + 2);
		irqs += state[i].irqs;
		deadlines += state[i].deadlines;
	}
	ksft_print_msg("%u vCPUs%s, %s: %lu deadlines of 1..%lu us, one interrupt each\n",
		       nr_vcpus, what, migrate_us ? "migrating" : "pinned",
		       deadlines, args.period_us);
	ksft_print_msg("%lu storm writes per vCPU; %lu interrupts in all, none early\n",
		       args.storm, irqs);
	host_report(nr_vcpus);
	ksft_print_msg("%lu migrations; %ld s\n", migrations, (long)(time(NULL) - t0));
	if (kvt_vtimer_total(vm, total, sizeof(total))) {
		total[strcspn(total, "\n")] = '\0';
		ksft_print_msg("kvm_vtimer: %s\n", total);
		TEST_ASSERT(!kvt_vtimer_field(total, "early"),
			    "kvm_vtimer counted %lu early interrupts",
			    kvt_vtimer_field(total, "early"));
		host_check_stats(vm, total, irqs);
	}
	kvt_timer_vm_free(vm);
}

static void churn_guest(void)
{
	struct vcpu_state *st = &state[0];

	guest_timer_init(st);
	one_deadline(st, 100, 1);
	GUEST_DONE();
}

static void reload(const char *path)
{
	kvt_unload_module();
	kvt_load_module(path, "");
}

static void churn_vms(u64 cycles, const char *module)
{
	long before = kvt_module_refcnt();
	bool reloading = module && before >= 0;
	time_t t0 = time(NULL);
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;

	for (u64 i = 0; i < cycles; i++) {
		vm = vm_create_with_one_vcpu(&vcpu, churn_guest);
		kvt_timer_vm_setup(vm, &vcpu, 1, guest_irq_handler);
		if (before >= 0)
			TEST_ASSERT_EQ(kvt_module_refcnt(), before + 1);
		TEST_ASSERT_EQ(kvt_vcpu_run_watched(vcpu, &uc, "a VM of the churn"), UCALL_DONE);
		kvt_timer_vm_free(vm);
		TEST_ASSERT_EQ(kvt_module_refcnt(), before);
		if (reloading)
			reload(module);
	}
	ksft_print_msg("%lu VMs created, run and destroyed%s; refcount back to %ld; %ld s\n",
		       cycles,
		       reloading ? ", " KVT_MODULE_NAME " unloaded and loaded between VMs" : "",
		       before, (long)(time(NULL) - t0));
	if (before >= 0)
		TEST_ASSERT_EQ(kvt_module_refcnt(), 0);
}

int main(int argc, char *argv[])
{
	const char *module = NULL;
	struct rlimit nofile;
	u64 cycles = 200;
	int opt;

	nr_vcpus = 4 * sysconf(_SC_NPROCESSORS_ONLN);
	while ((opt = getopt(argc, argv, "v:n:p:m:s:c:k:w:")) != -1) {
		switch (opt) {
		case 'v':
			/* The library's ucall pool holds KVM_MAX_VCPUS. */
			nr_vcpus = strcmp(optarg, "max") ? atoi(optarg) :
				   min_t(int, kvm_check_cap(KVM_CAP_MAX_VCPUS), KVM_MAX_VCPUS);
			break;
		case 'n':
			args.nr_deadlines = strtoull(optarg, NULL, 0);
			break;
		case 'p':
			args.period_us = strtoull(optarg, NULL, 0);
			break;
		case 'm':
			migrate_us = strtoull(optarg, NULL, 0);
			break;
		case 's':
			args.storm = strtoull(optarg, NULL, 0);
			break;
		case 'c':
			cycles = strtoull(optarg, NULL, 0);
			break;
		case 'k':
			module = optarg;
			break;
		case 'w':
			watchdog_s = atol(optarg);
			break;
		default:
			exit(KSFT_FAIL);
		}
	}
	TEST_ASSERT(nr_vcpus >= 1 && nr_vcpus <= MAX_VCPUS, "1..%d vCPUs", MAX_VCPUS);
	TEST_ASSERT(args.period_us >= 1, "a period of at least 1 us");
	/* A file per vCPU, as kvm_create_max_vcpus does. */
	getrlimit(RLIMIT_NOFILE, &nofile);
	if (nofile.rlim_cur < nr_vcpus + 100) {
		nofile.rlim_cur = nr_vcpus + 100;
		if (nofile.rlim_max < nofile.rlim_cur)
			nofile.rlim_max = nofile.rlim_cur;
		TEST_ASSERT(!setrlimit(RLIMIT_NOFILE, &nofile), "RLIMIT_NOFILE %u: errno %d",
			    nr_vcpus + 100, errno);
	}
	ksft_print_msg("backend: %s\n", kvt_module_refcnt() >= 0 ? KVT_MODULE_NAME : "in-tree");

	stress_vcpus();
	churn_vms(cycles, module);
	return 0;
}
