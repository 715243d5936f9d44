// SPDX-License-Identifier: GPL-2.0-only
/*
 * kvt_bench - guest-observed timer lateness, the in-tree timer against
 * kvm_vtimer, in one boot
 *
 *   kvt_bench -k kvm_vtimer.ko [-o MODULE_PARAMS] [-r REPS] [-n IRQS]
 *             [-p PERIOD_US] [-c CPU] [-m MODE,...]
 *             [-w busy,wfi,storm,past,migrate]
 *
 * Run with the module unloaded.  For each repetition, first with KVM's own
 * timer, then with the module loaded (ABAB...), each timer mode (-m) and
 * each workload runs in a new one-vCPU VM, its vCPU thread on host CPU 1
 * (-c):
 *
 *  busy     the guest spins until its timer interrupt; the handler re-arms
 *  wfi      the guest waits in WFI between deadlines (blocked-vCPU wakeup)
 *  storm    STORM re-arm/cancel pairs (far ahead) before each deadline
 *  past     deadlines alternately already past and one tick ahead
 *  migrate  as wfi, while a host thread moves the vCPU thread between CPUs
 *           every millisecond on average (kvt_migrator)
 *
 * The mode is the timer the guest programs, and how:
 *
 *  RISC-V  sstc    stimecmp (vstimecmp), written by the guest; the vCPU
 *                  must have Sstc
 *          sbi     SBI TIME set_timer, also when the vCPU has Sstc
 *  arm64   vtimer  the EL1 virtual timer: CNTV_CVAL_EL0, then CNTV_CTL_EL0
 *                  enabled and unmasked, as Linux's clockevent does; a
 *                  disabled CNTV_CTL_EL0 to stop it
 *          ptimer  the EL1 physical timer, the same on CNTP_*
 *
 * Default: every mode the vCPU has.  In sbi mode the guest keeps Sstc: KVM
 * 6.12 cannot take it from a vCPU (KVM_SET_ONE_REG of
 * KVM_RISCV_ISA_EXT_SSTC to 0 is -EINVAL), and neither timer would
 * change its way: both choose vstimecmp or a host timer by the host's
 * Sstc, not the vCPU's.  So each set_timer is an ecall exit that the
 * timer's SBI path handles; with Sstc on the host that path writes the
 * deadline to vstimecmp (the hart delivers it to a running vCPU), without
 * it a host timer raises the interrupt.
 *
 * The guest's handler records the counter at entry minus the deadline, in
 * ticks of the timer's counter: the time CSR on RISC-V (10 MHz on QEMU's
 * virt machine: 100 ns), CNTVCT_EL0 or CNTPCT_EL0 on arm64, at CNTFRQ_EL0
 * (62.5 MHz on QEMU's virt machine: 16 ns).  On arm64 the guest takes the
 * timer's PPI through the in-kernel vGICv3.  One line per run:
 *
 *   # kvt-bench {"backend": ..., "mode": ..., "lateness": [...], "exits": ..., ...}
 *
 * with the VM exits (KVM's "exits" statistic, and of them the guest's own
 * calls, SBI on RISC-V and HVC on arm64, and its WFIs; the rest are host
 * interrupts and, on arm64, trapped timer registers), the host's
 * rescheduling IPIs (/proc/interrupts), the vCPU thread's time running and
 * waiting runnable (its schedstat) and, for kvm_vtimer, its debugfs
 * counters, all over the run.  On RISC-V with Sstc, every host CPU's
 * vstimecmp is stopped between runs (sweep_host_cpus()).  scripts/bench.py
 * turns these into the tables and plots.  Meant for QEMU -icount, where
 * time is deterministic; this program asserts only what must hold
 * anywhere, and of kvm_vtimer only: every interrupt comes, once, never
 * early.  KVM's own timer can fail it (Documentation/riscv.rst: with Sstc,
 * a preemption between SBI set_timer and the next guest entry restores
 * the previous vstimecmp), so its runs record what went wrong instead:
 * "early" interrupts, "extra" ones after the last, and "lost": the run did
 * not end within its time (run_budget_ns()) and was given up, with the
 * interrupts taken until then.
 */
#include <ctype.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

#ifdef __aarch64__
#include "delay.h"
#include "kvt_arm64_timer.h"
#else
#include "kvt_riscv_timer.h"
#endif
#include "ucall_common.h"

#define MAX_IRQS	400
/* Interrupts before the measured ones: first-touch faults, cold caches. */
#define WARMUP		4
#define STORM		32
/*
 * How far ahead, in periods, a storm pair arms: far enough that no stall of
 * the vCPU between the two (a host CPU busy with other work for a
 * millisecond and more happens here) makes its deadline pass, whose
 * interrupt would then rightly come and be counted as the next one.
 */
#define STORM_AHEAD	1000

enum workload { BUSY, WFI, STORM_WL, PAST, MIGRATE, NR_WORKLOADS };

static const char * const workload_names[NR_WORKLOADS] = {
	"busy", "wfi", "storm", "past", "migrate",
};

/* Shared with the guest. */
/* Interrupts the guest takes: WARMUP, then the measured ones. */
static u64 nr_irqs;
static u64 period;
static u64 guest_workload;
static u64 guest_mode;
static u64 irq_count;
static u64 extra_irqs;		/* interrupts after the last one */
static u64 deadline;
static s64 late[MAX_IRQS];	/* lateness of the measured ones */
static bool rearm_in_handler;

/* The host's counter frequency, in Hz. */
static u64 counter_hz;

static void guest_code(void);
static void guest_timer_irq(u64 now);

/*
 * The architecture's part.  Guest: guest_now(), guest_timer_arm(),
 * guest_timer_stop(), guest_timer_init(), guest_wfi() and the interrupt
 * handler, which calls guest_timer_irq() with the counter at its entry.
 * Host: the modes, the VM, the exit statistic of the guest's own calls
 * (CALL_EXIT_*) and what to do after each run.
 */
#ifdef __aarch64__

enum mode { MODE_VTIMER, MODE_PTIMER, NR_MODES };

static const char * const mode_names[NR_MODES] = { "vtimer", "ptimer" };

/* The guest's own calls: hypercalls (it makes none; ucalls are MMIO). */
#define CALL_EXIT_STAT		"hvc_exit_stat"
#define CALL_EXIT_FIELD		"hvc_exits"
#define CALL_EXIT_UCALLS	0

static enum arch_timer guest_timer(void)
{
	return guest_mode == MODE_PTIMER ? PHYSICAL : VIRTUAL;
}

static u64 guest_now(void)
{
	return timer_get_cntct(guest_timer());
}

/* As Linux's clockevent: CVAL, then CTL enabled and unmasked. */
static void guest_timer_arm(u64 when)
{
	kvt_guest_arm(guest_timer(), when);
}

/* As Linux's clockevent shutdown: the timer disabled, its line down. */
static void guest_timer_stop(void)
{
	timer_set_ctl(guest_timer(), 0);
}

static void guest_timer_init(void)
{
	kvt_guest_timer_init();
}

/* WFI, then a window for a pending interrupt (interrupts masked around). */
static void guest_wfi(void)
{
	kvt_guest_wfi();
}

/*
 * The timer's line drops as the handler re-arms or stops the timer, before
 * the end of the interrupt: else it would come again at once.
 */
static void guest_irq_handler(struct ex_regs *regs)
{
	u64 now = guest_now();
	u32 intid = gic_get_and_ack_irq();

	if (intid == IAR_SPURIOUS)
		return;
	if (intid != kvt_timer_intid[guest_timer()]) {
		gic_set_eoi(intid);
		GUEST_FAIL("interrupt %u, not the %s timer's %u", intid,
			   mode_names[guest_mode], kvt_timer_intid[guest_timer()]);
		return;
	}
	guest_timer_irq(now);
	gic_set_eoi(intid);
}

/* The counter frequency (CNTFRQ_EL0, the same for host and guest). */
static u64 host_probe(bool *have)
{
	have[MODE_VTIMER] = true;
	have[MODE_PTIMER] = true;
	return timer_get_cntfrq();
}

static struct kvm_vm *host_vm_create(struct kvm_vcpu **vcpu)
{
	return __kvt_timer_vm_create(vcpu, guest_code, guest_irq_handler);
}

static void host_vm_free(struct kvm_vm *vm)
{
	kvt_timer_vm_free(vm);
}

/* Both timers stop their hardware timer when they put a vCPU. */
static void host_after_run(void)
{
}

#else /* RISC-V */

enum mode { MODE_SSTC, MODE_SBI, NR_MODES };

static const char * const mode_names[NR_MODES] = { "sstc", "sbi" };

/* The guest's own calls: SBI calls, and the GUEST_DONE ucall is one too. */
#define CALL_EXIT_STAT		"ecall_exit_stat"
#define CALL_EXIT_FIELD		"ecall_exits"
#define CALL_EXIT_UCALLS	1

/* Whether the host CPUs (and so every vCPU) have Sstc. */
static bool host_sstc;

static u64 guest_now(void)
{
	return timer_get_cycles();
}

static void guest_timer_arm(u64 when)
{
	kvt_guest_set_cmp(guest_mode == MODE_SSTC, when);
}

static void guest_timer_stop(void)
{
	kvt_guest_set_cmp(guest_mode == MODE_SSTC, -1ULL);
}

static void guest_timer_init(void)
{
	timer_irq_enable();
}

/* WFI, then a window for a pending interrupt (interrupts masked around). */
static void guest_wfi(void)
{
	asm volatile("wfi" ::: "memory");
	local_irq_enable();
	local_irq_disable();
}

static void guest_irq_handler(struct ex_regs *regs)
{
	u64 now = guest_now();

	GUEST_ASSERT_EQ(regs->cause & ~CAUSE_IRQ_FLAG, IRQ_S_TIMER);
	guest_timer_irq(now);
}

/* The timer frequency; Sstc or not. */
static u64 host_probe(bool *have)
{
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm = vm_create_with_one_vcpu(&vcpu, guest_code);

	vcpu_get_reg(vcpu, RISCV_TIMER_REG(frequency), &timer_freq);
	host_sstc = __vcpu_has_isa_ext(vcpu, KVM_RISCV_ISA_EXT_SSTC);
	kvm_vm_free(vm);
	have[MODE_SSTC] = host_sstc;
	have[MODE_SBI] = true;
	return timer_freq;
}

static struct kvm_vm *host_vm_create(struct kvm_vcpu **vcpu)
{
	return kvt_timer_vm_create(vcpu, guest_code, guest_irq_handler);
}

static void host_vm_free(struct kvm_vm *vm)
{
	kvm_vm_free(vm);
}

/* Leaves the host CPU's vstimecmp at -1, once per run (sweep_host_cpus()). */
static void sweep_guest_code(void)
{
	for (;;) {
		timer_set_cmp(-1ULL);
		GUEST_SYNC(0);
	}
}

/*
 * With Sstc, KVM's in-tree timer leaves the last vCPU's deadline in a host
 * CPU's vstimecmp when it puts the vCPU, whichever way the guest set it
 * (SBI set_timer writes vstimecmp too).  Once passed, VSTIP stays pending
 * on that CPU, which then cannot idle in WFI and takes turns from the vCPU
 * being measured (QEMU runs the host's CPUs round-robin under -icount):
 * the next run, whichever backend, would pay for the previous one's.  So
 * after every run, a guest that stops the timer runs once on each CPU.
 *
 * One VM for all the sweeps, made before kvm_vtimer is first loaded (so
 * KVM's own timer, whose put leaves the -1 there).  A VM made and freed on
 * each CPU after every run left work behind on the measured vCPU's CPU
 * (RCU's grace-period thread, kfree_rcu and vmstat workers, traced), which
 * preempted the next run's vCPU thread for up to 1.4 ms: in 10 of 12 of
 * kvm_vtimer's busy runs with Sstc, in none of KVM's timer's.
 */
static struct kvm_vm *sweep_vm;
static struct kvm_vcpu *sweep_vcpu;

static void sweep_host_cpus(void)
{
	long cpu, nr_cpus = sysconf(_SC_NPROCESSORS_ONLN);
	cpu_set_t all, one;
	struct ucall uc;

	if (!host_sstc)
		return;
	if (!sweep_vm)
		sweep_vm = vm_create_with_one_vcpu(&sweep_vcpu, sweep_guest_code);
	TEST_ASSERT(!sched_getaffinity(0, sizeof(all), &all), "sched_getaffinity");
	for (cpu = 0; cpu < nr_cpus; cpu++) {
		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		TEST_ASSERT(!sched_setaffinity(0, sizeof(one), &one),
			    "sched_setaffinity: %s", strerror(errno));
		vcpu_run(sweep_vcpu);
		TEST_ASSERT_EQ(get_ucall(sweep_vcpu, &uc), UCALL_SYNC);
	}
	TEST_ASSERT(!sched_setaffinity(0, sizeof(all), &all), "sched_setaffinity");
}

static void host_after_run(void)
{
	sweep_host_cpus();
}

#endif

static void arm(u64 when)
{
	WRITE_ONCE(deadline, when);
	guest_timer_arm(when);
}

static void guest_timer_irq(u64 now)
{
	u64 i = READ_ONCE(irq_count);

	if (i >= nr_irqs) {
		WRITE_ONCE(extra_irqs, extra_irqs + 1);
		guest_timer_stop();
		return;
	}
	if (i >= WARMUP)
		late[i - WARMUP] = (s64)(now - READ_ONCE(deadline));
	WRITE_ONCE(irq_count, i + 1);
	if (rearm_in_handler && i + 1 < nr_irqs)
		arm(now + period);
	else
		guest_timer_stop();
}

static void spin_until(u64 n)
{
	while (READ_ONCE(irq_count) < n)
		cpu_relax();
}

/* WFI with interrupts masked, so a last interrupt cannot slip in between. */
static void wfi_until(u64 n)
{
	local_irq_disable();
	while (READ_ONCE(irq_count) < n)
		guest_wfi();
	local_irq_enable();
}

static void guest_code(void)
{
	u64 i, k;

	guest_timer_init();
	local_irq_enable();

	switch (guest_workload) {
	case BUSY:
	case WFI:
	case MIGRATE:
		rearm_in_handler = true;
		arm(guest_now() + period);
		if (guest_workload == BUSY)
			spin_until(nr_irqs);
		else
			wfi_until(nr_irqs);
		break;
	case STORM_WL:
		for (i = 0; i < nr_irqs; i++) {
			for (k = 0; k < STORM; k++) {
				guest_timer_arm(guest_now() + STORM_AHEAD * period);
				guest_timer_stop();
			}
			arm(guest_now() + period);
			spin_until(i + 1);
		}
		break;
	case PAST:
		for (i = 0; i < nr_irqs; i++) {
			u64 now = guest_now();

			arm(i % 2 ? now + 1 : now - 1);
			spin_until(i + 1);
			udelay(cycles_to_usec(period) / 4);
		}
		break;
	}
	/* Exactly once each: what comes within two more periods is extra. */
	udelay(cycles_to_usec(period) * 2);
	GUEST_DONE();
}

static struct kvm_vcpu *vcpu;
static pthread_t vcpu_thread;
/* The host CPU the vCPU thread runs on, but for the migrate workload. */
static int vcpu_cpu = 1;

/* Set before the host kicks a vCPU whose run it gives up. */
static bool vcpu_abandoned;

/* The vCPU thread's /proc schedstat at its end. */
static struct kvt_sched vcpu_sched;

/* As kvt_run_until_done(), but a KVM_RUN ended by a signal may end it. */
static void *vcpu_main(void *arg)
{
	struct ucall uc;
	bool done;

	while (!(done = kvt_vcpu_run_intr(vcpu)) && !READ_ONCE(vcpu_abandoned))
		;
	vcpu_sched = kvt_read_schedstat();
	if (!done)
		return NULL;
	assert_on_unhandled_exception(vcpu);
	kvt_get_ucall(vcpu, &uc, BIT_ULL(UCALL_DONE));
	return NULL;
}

static void kick_handler(int sig)
{
}

/*
 * The time a run may take, from the vCPU thread's start: 8 times the guest
 * time of its deadlines (past waits a quarter period more each), and 2 s.
 */
static u64 run_budget_ns(u64 period_ns)
{
	return 2000000000ULL + 8 * (nr_irqs + 2) * period_ns;
}

/*
 * Wait for the vCPU thread until @budget_ns after @start.  Returns false
 * if the run is given up: the thread is then kicked out of KVM_RUN
 * (immediate_exit, and a signal without SA_RESTART) and joined.
 */
static bool join_vcpu(const struct timespec *start, u64 budget_ns)
{
	struct timespec limit;
	u64 ns;
	int i;

	ns = start->tv_nsec + budget_ns;
	limit.tv_sec = start->tv_sec + ns / 1000000000ULL;
	limit.tv_nsec = ns % 1000000000ULL;
	if (!pthread_timedjoin_np(vcpu_thread, NULL, &limit))
		return true;
	WRITE_ONCE(vcpu_abandoned, true);
	vcpu->run->immediate_exit = 1;
	for (i = 0; i < 10; i++) {
		pthread_kill(vcpu_thread, SIGUSR1);
		clock_gettime(CLOCK_REALTIME, &limit);
		limit.tv_sec++;
		if (!pthread_timedjoin_np(vcpu_thread, NULL, &limit))
			return false;
	}
	TEST_FAIL("the vCPU thread does not leave KVM_RUN");
	return false;
}

/* The host's rescheduling IPIs so far, summed over CPUs. */
static u64 resched_ipis(void)
{
	char line[1024];
	u64 total = 0;
	FILE *f = fopen("/proc/interrupts", "r");

	TEST_ASSERT(f, "/proc/interrupts: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		char *p, *end;

		if (!strstr(line, "Rescheduling"))
			continue;
		p = strchr(line, ':');
		TEST_ASSERT(p, "bad /proc/interrupts line: %s", line);
		for (p++;; p = end) {
			u64 v = strtoull(p, &end, 10);

			if (end == p)
				break;
			total += v;
		}
	}
	fclose(f);
	return total;
}

#define MAX_CPUS	16

/* Per host CPU, the time it was not idle so far, in USER_HZ ticks. */
static int cpu_busy(u64 *busy)
{
	char line[512];
	int n = 0;
	FILE *f = fopen("/proc/stat", "r");

	TEST_ASSERT(f, "/proc/stat: %s", strerror(errno));
	while (fgets(line, sizeof(line), f) && n < MAX_CPUS) {
		u64 v[8] = { 0 };
		int cpu;

		if (strncmp(line, "cpu", 3) || !isdigit(line[3]))
			continue;
		if (sscanf(line, "cpu%d %lu %lu %lu %lu %lu %lu %lu %lu", &cpu,
			   &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
			   &v[7]) != 9)
			continue;
		/* user nice system idle iowait irq softirq steal */
		busy[n++] = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
	}
	fclose(f);
	return n;
}

/* kvm_vtimer's counters of this VM ("total" line), by name. */
struct module_stats {
	bool present;
	u64 starts, cancels, migrations, irqs, early, wakeups, ipis, advance_ns;
	u64 running_advance_ns, spin_ns, untrapped_ns;
};

static struct module_stats read_module_stats(struct kvm_vm *vm)
{
	struct module_stats s = { 0 };
	char line[1024];

	if (!kvt_vtimer_total(vm, line, sizeof(line)))
		return s;
	s.present = true;
	s.starts = kvt_vtimer_field(line, "starts");
	s.cancels = kvt_vtimer_field(line, "cancels");
	s.migrations = kvt_vtimer_field(line, "migrations");
	s.irqs = kvt_vtimer_field(line, "irqs");
	s.early = kvt_vtimer_field(line, "early");
	s.wakeups = kvt_vtimer_field(line, "wakeups");
	s.ipis = kvt_vtimer_field(line, "ipis");
	s.advance_ns = kvt_vtimer_field(line, "advance_ns");
	s.running_advance_ns = kvt_vtimer_field(line, "running_advance_ns");
	s.spin_ns = kvt_vtimer_field(line, "spin_ns");
	s.untrapped_ns = kvt_vtimer_field(line, "untrapped_ns");
	return s;
}

static void run_one(const char *backend, enum mode mode, enum workload wl, int rep)
{
	u64 exits0, exits1, calls0, calls1, wfis0, wfis1, ipis0, ipis1;
	struct timespec t0, t1, start;
	struct module_stats ms;
	s64 samples[MAX_IRQS];
	char buf[4000];
	struct kvt_migrator migrator;
	pthread_attr_t attr;
	u64 busy0[MAX_CPUS], busy1[MAX_CPUS];
	int nr_cpus;
	struct kvm_vm *vm;
	int fd, len, early = 0;
	u64 i, count;
	bool done;

	vm = host_vm_create(&vcpu);
	guest_workload = wl;
	guest_mode = mode;
	sync_global_to_guest(vm, nr_irqs);
	sync_global_to_guest(vm, period);
	sync_global_to_guest(vm, guest_workload);
	sync_global_to_guest(vm, guest_mode);

	fd = vcpu_get_stats_fd(vcpu);
	nr_cpus = cpu_busy(busy0);
	exits0 = kvt_vcpu_stat(fd, "exits");
	calls0 = kvt_vcpu_stat(fd, CALL_EXIT_STAT);
	wfis0 = kvt_vcpu_stat(fd, "wfi_exit_stat");
	ipis0 = resched_ipis();
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pthread_attr_init(&attr);
	if (wl != MIGRATE) {
		/*
		 * Same CPU for every run: under -icount, QEMU runs the host's
		 * CPUs round-robin, and how soon a vCPU sees an interrupt
		 * depends on its place in that order.
		 */
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(vcpu_cpu, &set);
		pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
	}
	vcpu_abandoned = false;
	clock_gettime(CLOCK_REALTIME, &start);
	pthread_create(&vcpu_thread, &attr, vcpu_main, NULL);
	pthread_attr_destroy(&attr);
	if (wl == MIGRATE)
		kvt_migrator_start(&migrator, vcpu_thread);
	done = join_vcpu(&start, run_budget_ns(period * 1000000000ULL / counter_hz));
	if (wl == MIGRATE)
		kvt_migrator_stop(&migrator);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ipis1 = resched_ipis();
	exits1 = kvt_vcpu_stat(fd, "exits");
	calls1 = kvt_vcpu_stat(fd, CALL_EXIT_STAT);
	wfis1 = kvt_vcpu_stat(fd, "wfi_exit_stat");
	cpu_busy(busy1);
	close(fd);
	ms = read_module_stats(vm);

	sync_global_from_guest(vm, irq_count);
	sync_global_from_guest(vm, extra_irqs);
	sync_global_from_guest(vm, late);
	TEST_ASSERT(irq_count == nr_irqs || !done, "%lu interrupts, not %lu",
		    irq_count, nr_irqs);
	count = irq_count > WARMUP ? irq_count - WARMUP : 0;
	memcpy(samples, late, sizeof(samples));
	for (i = 0; i < count; i++)
		early += samples[i] < 0;
	TEST_ASSERT(!strcmp(backend, "intree") || ms.present,
		    "kvm_vtimer loaded, but the VM has no vtimer statistics");

	len = snprintf(buf, sizeof(buf),
		       "{\"backend\": \"%s\", \"mode\": \"%s\", \"workload\": \"%s\", \"rep\": %d, \"hz\": %lu, \"irqs\": %lu, \"early\": %d, \"extra\": %lu, \"lost\": %d, \"exits\": %lu, \"%s\": %lu, \"wfi_exits\": %lu, \"ipis\": %lu, \"guest_ns\": %lld",
		       backend, mode_names[mode], workload_names[wl],
		       rep, counter_hz, count, early, extra_irqs, !done, exits1 - exits0,
		       CALL_EXIT_FIELD, calls1 - calls0 - CALL_EXIT_UCALLS, wfis1 - wfis0,
		       ipis1 - ipis0,
		       (t1.tv_sec - t0.tv_sec) * 1000000000LL +
		       (t1.tv_nsec - t0.tv_nsec));
	if (ms.present)
		len += snprintf(buf + len, sizeof(buf) - len,
				", \"hrtimer_starts\": %lu, \"hrtimer_cancels\": %lu, \"module\": {\"irqs\": %lu, \"early\": %lu, \"wakeups\": %lu, \"ipis\": %lu, \"migrations\": %lu, \"advance_ns\": %lu, \"running_advance_ns\": %lu, \"spin_ns\": %lu, \"untrapped_ns\": %lu}",
				ms.starts, ms.cancels, ms.irqs, ms.early,
				ms.wakeups, ms.ipis, ms.migrations,
				ms.advance_ns, ms.running_advance_ns,
				ms.spin_ns, ms.untrapped_ns);
	else
		len += snprintf(buf + len, sizeof(buf) - len,
				", \"hrtimer_starts\": null, \"hrtimer_cancels\": null");
	len += snprintf(buf + len, sizeof(buf) - len,
			", \"thread\": {\"run_ns\": %lu, \"wait_ns\": %lu, \"slices\": %lu}",
			vcpu_sched.run_ns, vcpu_sched.wait_ns, vcpu_sched.slices);
	len += snprintf(buf + len, sizeof(buf) - len, ", \"cpu_busy\": [");
	for (i = 0; i < (u64)nr_cpus; i++)
		len += snprintf(buf + len, sizeof(buf) - len, "%s%lu",
				i ? "," : "", busy1[i] - busy0[i]);
	len += snprintf(buf + len, sizeof(buf) - len, "], \"lateness\": [");
	for (i = 0; i < count && len < (int)sizeof(buf) - 32; i++)
		len += snprintf(buf + len, sizeof(buf) - len, "%s%lld",
				i ? "," : "", (long long)samples[i]);
	TEST_ASSERT(i == count, "output line too long for %lu samples", count);
	snprintf(buf + len, sizeof(buf) - len, "]}");
	printf("# kvt-bench %s\n", buf);
	fflush(stdout);

	if (!strcmp(backend, "intree")) {
		if (early || extra_irqs || !done)
			ksft_print_msg("intree/%s/%s: %d early, %lu extra%s\n",
				       mode_names[mode], workload_names[wl], early,
				       extra_irqs, done ? "" : "; lost, given up");
	} else {
		TEST_ASSERT(done, "%s/%s/%s: not done within %lu ms: a timer interrupt was lost",
			    backend, mode_names[mode], workload_names[wl],
			    run_budget_ns(period * 1000000000ULL / counter_hz) / 1000000);
		TEST_ASSERT(!early, "%s/%s/%s: %d interrupts before their deadline",
			    backend, mode_names[mode], workload_names[wl], early);
		TEST_ASSERT(!extra_irqs, "%s/%s/%s: %lu interrupts after the last",
			    backend, mode_names[mode], workload_names[wl], extra_irqs);
	}
	TEST_ASSERT(!ms.early, "%s/%s/%s: kvm_vtimer counted %lu early deliveries",
		    backend, mode_names[mode], workload_names[wl], ms.early);
	host_vm_free(vm);
	host_after_run();
}

/* A comma-separated list of NAMES[0..n): as a bit mask. */
static int parse_list(char *list, const char * const *names, int n, const char *what)
{
	int mask = 0, i;
	char *tok;

	for (tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
		for (i = 0; i < n; i++)
			if (!strcmp(tok, names[i]))
				break;
		TEST_ASSERT(i < n, "unknown %s %s", what, tok);
		mask |= 1 << i;
	}
	return mask;
}

int main(int argc, char *argv[])
{
	int opt, reps = 5, rep, b, m, w, workloads = (1 << NR_WORKLOADS) - 1;
	int modes = 0;
	u64 period_us = 1000, measured = 200;
	const char *ko = NULL, *params = "";
	bool have[NR_MODES];

	while ((opt = getopt(argc, argv, "c:k:m:o:r:n:p:w:")) != -1) {
		switch (opt) {
		case 'k':
			ko = optarg;
			break;
		case 'o':
			params = optarg;
			break;
		case 'c':
			vcpu_cpu = atoi(optarg);
			break;
		case 'm':
			modes = parse_list(optarg, mode_names, NR_MODES, "timer mode");
			break;
		case 'r':
			reps = atoi(optarg);
			break;
		case 'n':
			measured = strtoull(optarg, NULL, 0);
			break;
		case 'p':
			period_us = strtoull(optarg, NULL, 0);
			break;
		case 'w':
			workloads = parse_list(optarg, workload_names, NR_WORKLOADS,
					       "workload");
			break;
		default:
			exit(KSFT_FAIL);
		}
	}
	TEST_ASSERT(ko, "usage: %s -k KO [-o PARAMS] [-r N] [-n N] [-p US] [-c CPU] [-m M] [-w W]",
		    argv[0]);
	TEST_ASSERT(reps > 0 && measured > 0 && measured <= MAX_IRQS && period_us > 0,
		    "bad -r, -n (1..%d) or -p", MAX_IRQS);
	nr_irqs = measured + WARMUP;
	/* Kicks a vCPU out of KVM_RUN (join_vcpu()): no SA_RESTART. */
	TEST_ASSERT(!sigaction(SIGUSR1, &(struct sigaction){ .sa_handler = kick_handler },
			       NULL), "sigaction: %s", strerror(errno));
	if (kvt_module_loaded()) {
		ksft_print_msg("%s is loaded: the in-tree timer cannot be measured\n",
			       KVT_MODULE_NAME);
		return KSFT_SKIP;
	}

	/* The counter frequency, for the period in ticks; the modes there are. */
	counter_hz = host_probe(have);
	period = period_us * counter_hz / 1000000;
	for (m = 0; m < NR_MODES; m++)
		TEST_ASSERT(have[m] || !(modes & (1 << m)),
			    "timer mode %s is not available on this host", mode_names[m]);
	if (!modes)
		for (m = 0; m < NR_MODES; m++)
			modes |= have[m] << m;

	/* Clean CPUs to start from; the RISC-V sweep's VM is made here. */
	host_after_run();
	for (rep = 0; rep < reps; rep++) {
		for (b = 0; b < 2; b++) {
			if (b)
				kvt_load_module(ko, params);
			for (m = 0; m < NR_MODES; m++)
				for (w = 0; w < NR_WORKLOADS; w++)
					if ((modes & (1 << m)) && (workloads & (1 << w)))
						run_one(b ? "vtimer" : "intree", m, w, rep);
			if (b)
				kvt_unload_module();
		}
	}
	printf("# kvt-bench-done\n");
	return 0;
}
