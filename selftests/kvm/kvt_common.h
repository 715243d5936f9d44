/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * What kvm_vtimer's selftests share on every architecture: loading and
 * unloading the module, its reference count and its debugfs statistics, a
 * vCPU run and its ucall, a vCPU thread joined with a watchdog, vCPU
 * statistics, a migrating thread, a pseudo-random sequence and hostile
 * values drawn from it.
 */
#ifndef KVT_COMMON_H
#define KVT_COMMON_H

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "kvm_util.h"
#include "ucall_common.h"

#define KVT_MODULE_NAME		"kvm_vtimer"
#define KVT_REFCNT		"/sys/module/" KVT_MODULE_NAME "/refcnt"
#define KVT_DEBUGFS_KVM		"/sys/kernel/debug/kvm"

/* Seconds a vCPU run may take before the test calls its interrupt lost. */
#define KVT_WATCHDOG_S		120

/* Whether kvm_vtimer is loaded. */
static inline bool kvt_module_loaded(void)
{
	return !access("/sys/module/" KVT_MODULE_NAME, F_OK);
}

/* kvm_vtimer's reference count (one per VM that uses it); -1 if unloaded. */
static inline long kvt_module_refcnt(void)
{
	char buf[32] = "";
	long n;
	int fd;

	fd = open(KVT_REFCNT, O_RDONLY);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	TEST_ASSERT(n > 0, "read " KVT_REFCNT);
	return strtol(buf, NULL, 10);
}

/* Load kvm_vtimer from @path with @params ("" for none). */
static inline void kvt_load_module(const char *path, const char *params)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	TEST_ASSERT(fd >= 0, "open %s: %s", path, strerror(errno));
	TEST_ASSERT(!syscall(SYS_finit_module, fd, params, 0),
		    "loading %s: %s", path, strerror(errno));
	close(fd);
}

/* Unload kvm_vtimer, which no VM may hold. */
static inline void kvt_unload_module(void)
{
	TEST_ASSERT(!syscall(SYS_delete_module, KVT_MODULE_NAME, O_NONBLOCK),
		    "unloading " KVT_MODULE_NAME " with no VM: %s", strerror(errno));
}

/* kvm_vtimer's debugfs file of @vm, read-only; NULL if the VM has none. */
static inline FILE *kvt_vtimer_fopen(struct kvm_vm *vm)
{
	char path[128];

	snprintf(path, sizeof(path), KVT_DEBUGFS_KVM "/%d-%d/vtimer",
		 getpid(), vm->fd);
	return fopen(path, "r");
}

/* kvm_vtimer's statistics of @vm, if it has them: the "total" line. */
static inline bool kvt_vtimer_total(struct kvm_vm *vm, char *line, size_t len)
{
	bool found = false;
	FILE *f = kvt_vtimer_fopen(vm);

	if (!f)
		return false;
	while (!found && fgets(line, len, f))
		found = !strncmp(line, "total ", 6);
	fclose(f);
	return found;
}

/* The number after " @key=" in @line of that file ("total ..."). */
static inline u64 kvt_vtimer_field(const char *line, const char *key)
{
	char pat[32];
	const char *p;

	snprintf(pat, sizeof(pat), " %s=", key);
	p = strstr(line, pat);
	TEST_ASSERT(p, "no %s in kvm_vtimer's statistics: %s", key, line);
	return strtoull(p + strlen(pat), NULL, 10);
}

/*
 * Join @thread, a vCPU thread whose guest may wait in WFI, where a lost
 * interrupt would block it for ever: fail after @secs seconds, saying so.
 */
static inline void kvt_join_or_fail(pthread_t thread, void **ret, int secs,
				    const char *what)
{
	struct timespec limit;

	clock_gettime(CLOCK_REALTIME, &limit);
	limit.tv_sec += secs;
	TEST_ASSERT(!pthread_timedjoin_np(thread, ret, &limit),
		    "%s: the vCPU did not finish in %d s: a timer interrupt was lost",
		    what, secs);
}

/*
 * A vCPU statistic from its binary stats fd.  Open the fd before the vCPU
 * runs: KVM_GET_STATS_FD takes the vCPU mutex, which KVM_RUN holds while
 * the vCPU blocks; reading the fd does not.
 */
static inline u64 kvt_vcpu_stat(int fd, const char *name)
{
	struct kvm_stats_header header;
	struct kvm_stats_desc *descs, *desc;
	u64 value = 0;
	bool found = false;

	read_stats_header(fd, &header);
	descs = read_stats_descriptors(fd, &header);
	for (u32 i = 0; i < header.num_desc; i++) {
		desc = get_stats_descriptor(descs, i, &header);
		if (!strcmp(desc->name, name)) {
			read_stat_data(fd, &header, desc, &value, 1);
			found = true;
			break;
		}
	}
	free(descs);
	TEST_ASSERT(found, "no vCPU statistic %s", name);
	return value;
}

/*
 * The ucall @vcpu's guest stopped at, into @uc, which must be one of
 * @ucalls (a mask of BIT_ULL(UCALL_*)): a guest assertion fails the test, and
 * so does any other ucall.  Returns the ucall.
 */
static inline u64 kvt_get_ucall(struct kvm_vcpu *vcpu, struct ucall *uc, u64 ucalls)
{
	u64 cmd = get_ucall(vcpu, uc);

	if (cmd == UCALL_ABORT)
		REPORT_GUEST_ASSERT(*uc);
	if (cmd >= 64 || !(ucalls & BIT_ULL(cmd)))
		TEST_FAIL("unexpected ucall %lu", cmd);
	return cmd;
}

/*
 * One KVM_RUN of @vcpu, which a signal may end (EINTR: KVM_EXIT_INTR, or
 * immediate_exit set).  Returns false if one did; fails the test on any
 * other error.
 */
static inline bool kvt_vcpu_run_intr(struct kvm_vcpu *vcpu)
{
	int ret = __vcpu_run(vcpu);

	if (ret == -1 && errno == EINTR)
		return false;
	TEST_ASSERT(!ret, KVM_IOCTL_ERROR(KVM_RUN, ret));
	return true;
}

/* Run @vcpu until its guest is done; a guest assertion fails the test. */
static inline void kvt_run_until_done(struct kvm_vcpu *vcpu)
{
	struct ucall uc;

	vcpu_run(vcpu);
	kvt_get_ucall(vcpu, &uc, BIT_ULL(UCALL_DONE));
}

/*
 * Run @vcpu to its guest's next stop: the stage of its GUEST_SYNC
 * (GUEST_SYNC(stage)), or 0 when done.  For a guest that does not wait
 * for interrupts: no watchdog.
 */
static inline u64 kvt_run_to_sync(struct kvm_vcpu *vcpu)
{
	struct ucall uc;

	vcpu_run(vcpu);
	if (kvt_get_ucall(vcpu, &uc, BIT_ULL(UCALL_SYNC) | BIT_ULL(UCALL_DONE)) == UCALL_SYNC)
		return uc.args[1];
	return 0;
}

/*
 * The calling thread's /proc schedstat: the time it ran, the time it waited
 * runnable on a run queue (ns), and how many times it ran; all 0 if the
 * kernel has no schedstat.
 */
struct kvt_sched {
	u64 run_ns, wait_ns, slices;
};

static inline struct kvt_sched kvt_read_schedstat(void)
{
	FILE *f = fopen("/proc/thread-self/schedstat", "r");
	struct kvt_sched s = { 0 };

	if (!f)
		return s;
	if (fscanf(f, "%lu %lu %lu", &s.run_ns, &s.wait_ns, &s.slices) != 3)
		s = (struct kvt_sched){ 0 };
	fclose(f);
	return s;
}

struct kvt_vcpu_run {
	struct kvm_vcpu *vcpu;
	struct ucall uc;
	u64 cmd;
	struct kvt_sched sched;
};

static inline void *kvt_vcpu_run_thread(void *arg)
{
	struct kvt_vcpu_run *run = arg;

	vcpu_run(run->vcpu);
	run->sched = kvt_read_schedstat();
	run->cmd = get_ucall(run->vcpu, &run->uc);
	return NULL;
}

/*
 * Host: run @vcpu once, in a thread, until its next ucall, which goes to
 * @uc; fail if it takes more than KVT_WATCHDOG_S seconds (a guest waiting
 * for an interrupt that never comes) or if the guest failed an assertion.
 * Returns the ucall; @sched, if not NULL, gets the thread's schedstat.
 */
static inline u64 kvt_vcpu_run_watched_sched(struct kvm_vcpu *vcpu, struct ucall *uc,
					     const char *what, struct kvt_sched *sched)
{
	struct kvt_vcpu_run run = { .vcpu = vcpu };
	pthread_t thread;

	TEST_ASSERT(!pthread_create(&thread, NULL, kvt_vcpu_run_thread, &run),
		    "creating the vCPU thread");
	kvt_join_or_fail(thread, NULL, KVT_WATCHDOG_S, what);
	if (run.cmd == UCALL_ABORT)
		REPORT_GUEST_ASSERT(run.uc);
	*uc = run.uc;
	if (sched)
		*sched = run.sched;
	return run.cmd;
}

static inline u64 kvt_vcpu_run_watched(struct kvm_vcpu *vcpu, struct ucall *uc,
				       const char *what)
{
	return kvt_vcpu_run_watched_sched(vcpu, uc, what, NULL);
}

/* A fast pseudo-random sequence (xorshift64), reproducible from its seed. */
static inline u64 kvt_xorshift(u64 *s)
{
	u64 x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

/*
 * A host thread that moves another between the host's CPUs, every 1 ms on
 * average: each wait is drawn from 0.5 to 1.5 ms, with no timer slack.  So
 * its moves fall at any time relative to the target's own timers, not in
 * step with them (a fixed 1 ms sleep, 50 us of slack, lets the moves lock
 * to a phase of a 1 ms timer of the target's: how often they find it
 * running, and so the rescheduling IPIs, would depend on that phase).
 */
struct kvt_migrator {
	pthread_t thread;
	pthread_t target;
	bool stop;
};

static inline void *kvt_migrator_main(void *arg)
{
	struct kvt_migrator *m = arg;
	long nr_cpus = sysconf(_SC_NPROCESSORS_ONLN);
	u64 seed = 0x9e3779b97f4a7c15ULL;
	cpu_set_t set;
	long cpu = 0;

	prctl(PR_SET_TIMERSLACK, 1UL);
	while (!READ_ONCE(m->stop)) {
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		pthread_setaffinity_np(m->target, sizeof(set), &set);
		cpu = (cpu + 1) % nr_cpus;
		usleep(500 + kvt_xorshift(&seed) % 1001);
	}
	return NULL;
}

static inline void kvt_migrator_start(struct kvt_migrator *m, pthread_t target)
{
	m->target = target;
	m->stop = false;
	pthread_create(&m->thread, NULL, kvt_migrator_main, m);
}

static inline void kvt_migrator_stop(struct kvt_migrator *m)
{
	WRITE_ONCE(m->stop, true);
	pthread_join(m->thread, NULL);
}

/*
 * Parse the command line, whose options all take a number: @opts as for
 * getopt(), each letter followed by ':', and @vals[i] for the i-th letter.
 * Any other option fails the test.
 */
static inline void kvt_number_opts(int argc, char *argv[], const char *opts, u64 *vals[])
{
	const char *p;
	int opt;

	while ((opt = getopt(argc, argv, opts)) != -1) {
		p = strchr(opts, opt);
		if (opt == ':' || opt == '?' || !p)
			exit(KSFT_FAIL);
		*vals[(p - opts) / 2] = strtoull(optarg, NULL, 0);
	}
}

/*
 * A hostile deadline or register value from the sequence @s: mostly
 * boundaries (0, 1, the sign bit, all ones, 32-bit edges), values near
 * @now (behind or ahead, by a little or by a power of two), or anything.
 */
static inline u64 kvt_hostile_value(u64 *s, u64 now)
{
	static const u64 fixed[] = {
		0, 1, 2, 0x7fffffffffffffffULL, 0x8000000000000000ULL,
		-2ULL, -1ULL, 0xffffffffULL, 0x100000000ULL,
	};
	u64 r = kvt_xorshift(s);

	switch (r % 8) {
	case 0:
		return fixed[(r >> 8) % ARRAY_SIZE(fixed)];
	case 1:
		return now - ((r >> 8) % 1000);
	case 2:
		return now + ((r >> 8) % 1000);
	case 3:
		return now + (1ULL << ((r >> 8) % 64));
	case 4:
		return now - (1ULL << ((r >> 8) % 64));
	case 5:
		return now + ((r >> 8) % 20000);
	default:
		return kvt_xorshift(s);
	}
}

#endif
