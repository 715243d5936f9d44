// SPDX-License-Identifier: GPL-2.0
/*
 * The emulated host's /init: there is no shell for riscv64 in the package
 * registries this project may use, so this small static program is the
 * whole user space of the test host.
 *
 * It mounts the pseudo filesystems, then executes /plan line by line:
 *
 *   phase NAME                       announce a phase (a KTAP comment)
 *   run TIMEOUT ID PROG [ARGS...]    run a program, one KTAP result
 *   insmod TIMEOUT ID PATH [PARAMS]  load a module, one KTAP result
 *   rmmod TIMEOUT ID NAME            unload a module, one KTAP result
 *   cat PATH                         copy a file to the console
 *   write PATH STRING                write STRING to a file (debugfs, sysfs)
 *   kmemleak TIMEOUT ID              scan for leaks, one KTAP result: ok if
 *                                    kmemleak lists nothing, then clear it
 *
 * Everything a step prints is indented by four spaces, so the unindented
 * "ok N ID" / "not ok N ID # ..." lines are ours alone.  A step that runs
 * longer than TIMEOUT seconds is killed with its process group and reported
 * "not ok N ID # TIMEOUT", once its tasks' states, the kernel's blocked
 * tasks and all CPUs' backtraces are on the console; one that SIGKILL does
 * not end within REAP_WAIT_S seconds is left behind.  Exit status 4
 * (KSFT_SKIP) is reported as SKIP.  When the plan is done the host powers
 * off.
 *
 * Run as any other process than PID 1 (the runner's own tests do), it mounts
 * nothing, reads the plan named by its first argument and just exits.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "line_out.h"

#define KSFT_SKIP	4
#define MAX_ARGS	64
#define LINE_MAX_LEN	4096
/* How long a killed step may take to go. */
#define REAP_WAIT_S	30

static int test_nr;
static int is_init;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void mount_fs(const char *src, const char *dst, const char *type)
{
	mkdir(dst, 0755);
	if (mount(src, dst, type, 0, NULL) && errno != EBUSY)
		line_out("# init: mount %s on %s: %s", type, dst, strerror(errno));
}

static void result(int ok, const char *id, double secs, const char *fmt, ...)
{
	char why[256] = "";
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(why, sizeof(why), fmt, ap);
		va_end(ap);
	}
	line_out("%s %d %s # time=%.1fs%s%s", ok ? "ok" : "not ok", ++test_nr, id,
		 secs, why[0] ? " " : "", why);
}

/* Echo the child's output, indented, until EOF or the deadline. */
static int relay(int fd, double deadline)
{
	char buf[LINE_MAX_LEN];
	size_t used = 0;

	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		double left = deadline - now();
		ssize_t n;
		char *nl;
		int r;

		if (left <= 0)
			return -1;
		r = poll(&pfd, 1, (int)(left * 1000) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			continue;
		n = read(fd, buf + used, sizeof(buf) - used - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		used += n;
		buf[used] = '\0';
		while ((nl = memchr(buf, '\n', used))) {
			*nl = '\0';
			line_out("    %s", buf);
			used -= nl + 1 - buf;
			memmove(buf, nl + 1, used);
		}
		if (used == sizeof(buf) - 1) {
			buf[used] = '\0';
			line_out("    %s", buf);
			used = 0;
		}
	}
	if (used) {
		buf[used] = '\0';
		line_out("    %s", buf);
	}
	return 0;
}

static int write_file(const char *path, const char *str)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, str, strlen(str));
	close(fd);
	if (n < 0)
		return -errno;
	return 0;
}

/* One task's line for show_stuck(), if it is in SID's session or blocked. */
static void show_task(const char *pid, const char *tid, pid_t sid)
{
	char path[560], buf[512], wchan[128] = "-", state;
	int session;
	char *r;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%s/task/%s/stat", pid, tid);
	f = fopen(path, "re");
	if (!f)
		return;
	r = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
	fclose(f);
	/* "TID (comm) S PPID PGRP SID ..." */
	if (!r || sscanf(r + 1, " %c %*d %*d %d", &state, &session) != 2)
		return;
	if (session != sid && state != 'D')
		return;
	snprintf(path, sizeof(path), "/proc/%s/task/%s/wchan", pid, tid);
	f = fopen(path, "re");
	if (f) {
		if (!fgets(wchan, sizeof(wchan), f) || !wchan[0])
			snprintf(wchan, sizeof(wchan), "-");
		fclose(f);
	}
	r[1] = '\0';
	line_out("# init:   %s %c wchan=%s", buf, state, wchan);
}

/*
 * A step past its deadline: where are its tasks, and the kernel's?  The
 * state and wait channel of every task of the step's session and of every
 * blocked one, then the kernel's blocked tasks and every CPU's backtrace
 * (sysrq w and l) on the console.  A step stuck in the kernel (state D)
 * does not die of SIGKILL: this is all there would be to see of it.
 */
static void show_stuck(pid_t sid)
{
	struct dirent *p, *t;
	char path[300];
	DIR *procs, *tasks;

	line_out("# init: step %d past its deadline; its tasks and the blocked ones:",
		 (int)sid);
	procs = opendir("/proc");
	while (procs && (p = readdir(procs))) {
		if (p->d_name[0] < '1' || p->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/task", p->d_name);
		tasks = opendir(path);
		while (tasks && (t = readdir(tasks)))
			if (t->d_name[0] != '.')
				show_task(p->d_name, t->d_name, sid);
		if (tasks)
			closedir(tasks);
	}
	if (procs)
		closedir(procs);
	/* Not on the machine that runs the runner's own tests. */
	if (is_init) {
		write_file("/proc/sysrq-trigger", "w");
		write_file("/proc/sysrq-trigger", "l");
	}
}

/* Reap PID within SECS seconds: 1 if it exited, 0 if it is still there. */
static int reap(pid_t pid, int *status, int secs)
{
	double deadline = now() + secs;

	for (;;) {
		pid_t r = waitpid(pid, status, WNOHANG);

		if (r == pid || (r < 0 && errno != EINTR))
			return 1;
		if (now() >= deadline)
			return 0;
		usleep(10000);
	}
}

static void step_run(int timeout, const char *id, char **argv)
{
	double start = now(), deadline = start + timeout;
	int pipefd[2], status = 0, timed_out, unkillable = 0;
	pid_t pid;

	if (pipe2(pipefd, O_CLOEXEC)) {
		result(0, id, 0, "pipe: %s", strerror(errno));
		return;
	}
	pid = fork();
	if (pid < 0) {
		result(0, id, 0, "fork: %s", strerror(errno));
		close(pipefd[0]);
		close(pipefd[1]);
		return;
	}
	if (pid == 0) {
		setsid();
		dup2(pipefd[1], STDOUT_FILENO);
		dup2(pipefd[1], STDERR_FILENO);
		execv(argv[0], argv);
		dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(pipefd[1]);
	timed_out = relay(pipefd[0], deadline) < 0;
	if (!timed_out) {
		/* Output closed; the program may still be finishing. */
		while (waitpid(pid, &status, WNOHANG) == 0) {
			if (now() >= deadline) {
				timed_out = 1;
				break;
			}
			usleep(10000);
		}
	}
	if (timed_out) {
		show_stuck(pid);
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
		unkillable = !reap(pid, &status, REAP_WAIT_S);
	}
	close(pipefd[0]);

	if (unkillable)
		result(0, id, now() - start,
		       "TIMEOUT %ds, still there %ds after SIGKILL (see the blocked tasks above)",
		       timeout, REAP_WAIT_S);
	else if (timed_out)
		result(0, id, now() - start, "TIMEOUT %ds", timeout);
	else if (WIFSIGNALED(status))
		result(0, id, now() - start, "signal=%d", WTERMSIG(status));
	else if (WEXITSTATUS(status) == KSFT_SKIP)
		result(1, id, now() - start, "SKIP");
	else if (WEXITSTATUS(status))
		result(0, id, now() - start, "exit=%d", WEXITSTATUS(status));
	else
		result(1, id, now() - start, NULL);
}

static void step_insmod(const char *id, const char *path, char **params)
{
	char args[LINE_MAX_LEN] = "";
	double start = now();
	int fd, ret;

	for (; *params; params++) {
		strncat(args, *params, sizeof(args) - strlen(args) - 2);
		strcat(args, " ");
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		result(0, id, 0, "open %s: %s", path, strerror(errno));
		return;
	}
	ret = syscall(SYS_finit_module, fd, args, 0);
	close(fd);
	if (ret)
		result(0, id, now() - start, "finit_module: %s", strerror(errno));
	else
		result(1, id, now() - start, NULL);
}

static void step_rmmod(const char *id, const char *name)
{
	double start = now();

	if (syscall(SYS_delete_module, name, O_NONBLOCK))
		result(0, id, now() - start, "delete_module: %s", strerror(errno));
	else
		result(1, id, now() - start, NULL);
}

static void step_cat(const char *path)
{
	char buf[LINE_MAX_LEN];
	FILE *f = fopen(path, "re");

	if (!f) {
		line_out("# cat %s: %s", path, strerror(errno));
		return;
	}
	while (fgets(buf, sizeof(buf), f)) {
		buf[strcspn(buf, "\n")] = '\0';
		line_out("    %s", buf);
	}
	fclose(f);
}

static void step_write(const char *path, const char *str)
{
	int ret = write_file(path, str);

	if (ret)
		line_out("# init: write %s to %s: %s", str, path, strerror(-ret));
}

#define KMEMLEAK		"/sys/kernel/debug/kmemleak"
/* kmemleak reports no object younger than 5 s (MSECS_MIN_AGE). */
#define KMEMLEAK_MIN_AGE_S	6

/*
 * Let the last objects age, scan twice (kmemleak reports an unreferenced
 * object only once its contents did not change between two scans), list
 * what it reports and clear the list for the next phase.  Passes when the
 * list is empty.
 */
static void step_kmemleak(int timeout, const char *id)
{
	char buf[LINE_MAX_LEN];
	double start = now();
	int leaks = 0, ret;
	FILE *f;

	sleep(KMEMLEAK_MIN_AGE_S);
	for (int i = 0; i < 2; i++) {
		ret = write_file(KMEMLEAK, "scan");
		if (ret) {
			result(0, id, now() - start, "scan: %s", strerror(-ret));
			return;
		}
	}
	f = fopen(KMEMLEAK, "re");
	if (!f) {
		result(0, id, now() - start, "open " KMEMLEAK ": %s", strerror(errno));
		return;
	}
	while (fgets(buf, sizeof(buf), f)) {
		buf[strcspn(buf, "\n")] = '\0';
		line_out("    %s", buf);
		if (strstr(buf, "unreferenced object"))
			leaks++;
	}
	fclose(f);
	write_file(KMEMLEAK, "clear");
	if (now() - start > timeout)
		result(0, id, now() - start, "TIMEOUT %ds", timeout);
	else if (leaks)
		result(0, id, now() - start, "%d unreferenced objects", leaks);
	else
		result(1, id, now() - start, NULL);
}

static int split(char *line, char **argv)
{
	int argc = 0;
	char *tok, *save;

	for (tok = strtok_r(line, " \t\n", &save); tok && argc < MAX_ARGS;
	     tok = strtok_r(NULL, " \t\n", &save))
		argv[argc++] = tok;
	argv[argc] = NULL;
	return argc;
}

static int count_tests(FILE *plan)
{
	char line[LINE_MAX_LEN];
	int n = 0;

	while (fgets(line, sizeof(line), plan))
		if (!strncmp(line, "run ", 4) || !strncmp(line, "insmod ", 7) ||
		    !strncmp(line, "rmmod ", 6) || !strncmp(line, "kmemleak ", 9))
			n++;
	rewind(plan);
	return n;
}

int main(int main_argc, char **main_argv)
{
	char line[LINE_MAX_LEN], *argv[MAX_ARGS + 1];
	const char *plan_path = "/plan";
	FILE *plan;
	int argc;

	is_init = getpid() == 1;
	if (is_init) {
		mount_fs("proc", "/proc", "proc");
		mount_fs("sysfs", "/sys", "sysfs");
		mount_fs("devtmpfs", "/dev", "devtmpfs");
		mount_fs("debugfs", "/sys/kernel/debug", "debugfs");
		mount_fs("tmpfs", "/tmp", "tmpfs");
		setenv("PATH", "/bin", 1);
	} else if (main_argc > 1) {
		plan_path = main_argv[1];
	}

	plan = fopen(plan_path, "re");
	if (!plan) {
		line_out("# init: no %s: %s", plan_path, strerror(errno));
		goto off;
	}
	line_out("KTAP version 1");
	line_out("1..%d", count_tests(plan));
	while (fgets(line, sizeof(line), plan)) {
		argc = split(line, argv);
		if (argc == 0 || argv[0][0] == '#')
			continue;
		if (!strcmp(argv[0], "phase") && argc == 2)
			line_out("# phase %s", argv[1]);
		else if (!strcmp(argv[0], "cat") && argc == 2)
			step_cat(argv[1]);
		else if (!strcmp(argv[0], "write") && argc == 3)
			step_write(argv[1], argv[2]);
		else if (!strcmp(argv[0], "kmemleak") && argc == 3)
			step_kmemleak(atoi(argv[1]), argv[2]);
		else if (!strcmp(argv[0], "run") && argc >= 4)
			step_run(atoi(argv[1]), argv[2], &argv[3]);
		else if (!strcmp(argv[0], "insmod") && argc >= 4)
			step_insmod(argv[2], argv[3], &argv[4]);
		else if (!strcmp(argv[0], "rmmod") && argc == 4)
			step_rmmod(argv[2], argv[3]);
		else
			line_out("# init: bad plan line: %s", argv[0]);
	}
	fclose(plan);
off:
	line_out("# init: plan done, powering off");
	if (!is_init)
		return 0;
	sync();
	reboot(RB_POWER_OFF);
	return 0;
}
