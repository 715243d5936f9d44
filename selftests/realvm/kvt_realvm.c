// SPDX-License-Identifier: GPL-2.0
/*
 * kvt_realvm: one step of the real-guest tier, run in the emulated host.
 *
 * It starts Debian's QEMU with KVM on Debian's guest kernel and our guest
 * initramfs (selftests/realvm/guest-init.sh), reads the guest's serial
 * console line by line, stamps each line with the host's CLOCK_MONOTONIC
 * and acts on the guest's "KVT ..." lines:
 *
 *   KVT mark NAME GCLOCK     a point in time: the guest's clock and ours
 *   KVT move on|off          move the vCPU threads between host CPUs
 *                            every MOVE_MS, or pin them where they are
 *   KVT save                 migrate the VM to a file, quit QEMU, start a
 *                            new one from the file (save/restore)
 *   KVT stats NAME GIRQS     read the module's statistics of the VM; the
 *                            guest's timer interrupt count is GIRQS
 *   KVT rmmod                try to unload kvm_vtimer: must be refused
 *                            while the VM runs (when it is loaded)
 *   KVT tick GCLOCK GIRQS    a periodic sample (after a restore)
 *   KVT result KEY VALUE     a figure to report
 *   KVT done                 the guest finished its step
 *
 * Every guest line is copied to stdout.  The step's checks print
 * "# FAIL: why" and make the exit status 1; figures are printed as
 * "# key: value".  Usage:
 *
 *   kvt_realvm [-l] [-H] [-T FUNC,...] STEP VCPUS TIMEOUT_S [LOOPS]
 *
 * LOOPS is passed to the guest (kvt.loops=, cyclictest's loop count).
 *
 * A save stops the VM first (HMP "stop", then "migrate" to a file; the
 * restored VM is continued with "cont"), so that the guest's timers are
 * saved armed and the guest cannot run while KVM logs its dirty pages.  -l
 * saves live instead, the guest running until the migration ends; -H backs
 * the guest's memory with 2 MB hugetlbfs pages.  Both reach in-tree RISC-V
 * KVM problems of Linux 6.12 in this emulated host whatever the timer
 * (Documentation/testing.rst, "Real guests"): a live save of a busy guest
 * takes about 100 s, in which the guest's vCPU thread waits to run (RCU
 * stalls in the guest), and a write fault on a huge page under dirty
 * logging fails KVM_RUN with -EEXIST.  A save slower than SAVE_SLOW_S
 * logs the kernel stacks of QEMU's threads every SAVE_SLOW_S.  -T counts
 * the calls of the named host kernel functions over the save, and the time
 * in them, with ftrace's function profiler (a kernel with the "trace"
 * variant, configs/trace.config).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "../host/line_out.h"

#ifdef __riscv
#define QEMU		"/usr/bin/qemu-system-riscv64"
#define MACHINE		"virt"
#define CONSOLE		"ttyS0"
#define LIBDIR		"/usr/lib/riscv64-linux-gnu"
#elif defined(__aarch64__)
#define QEMU		"/usr/bin/qemu-system-aarch64"
#define MACHINE		"virt,gic-version=3"
#define CONSOLE		"ttyAMA0"
#define LIBDIR		"/usr/lib/aarch64-linux-gnu"
#else
#error "riscv64 or arm64 only"
#endif

#define GUEST_KERNEL	"/guest/kernel"
#define GUEST_INITRD	"/guest/initrd.cpio"
#define STATE_FILE	"/tmp/kvt-vm.state"
#define MON		"/tmp/kvt-mon"
#define GUEST_MEM	"256M"
#define GUEST_MEM_MB	256
#define HUGE_DIR	"/dev/hugepages"
#define HUGE_MB		2
#define TRACEFS		"/sys/kernel/tracing"
/* A save that takes longer than this has the QEMU threads' stacks logged. */
#define SAVE_SLOW_S	10
#define MOVE_MS		10
#define MAX_VCPUS	8
#define MAX_MARKS	32
#define LINE_LEN	4096
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))

/* sleep 1 in the guest, measured on the host's clock: 1 s to this. */
#define SLEEP1_MAX_S	1.2
/* Guest clock against host clock over a step: at most this far apart. */
#define DRIFT_MAX_S	0.05
#define DRIFT_MAX_PPM	2000.0
/* After a restore: guest timer interrupts per second when idle. */
#define IDLE_IRQS_MAX	500.0

static const char *step;
static const char *loops = "2000";
static bool huge, live;
/* -T: kernel functions the host's function profiler counts over the save. */
static const char *trace_funcs;
static int vcpus;
static bool failed;
static bool vtimer_loaded;
static double t_start;

struct mark {
	char name[32];
	double host;
	double guest;
};

static struct mark marks[MAX_MARKS];
static int nr_marks;

struct vm_stats {
	bool valid;
	unsigned long long irqs, early;
	unsigned long long guest_irqs;
};

static struct vm_stats stats_before, stats_after;

/* Ticks after the restore: guest clock gaps and interrupt counts. */
static double tick_prev_g = -1, tick_max_gap, tick_min_gap = 1e9;
static int nr_ticks;
static int nr_restores;
static double save_secs, restore_host_gap;
static double last_line_host;
static bool want_save;

static pid_t qemu_pid;
static int serial_fd = -1;
static pthread_mutex_t move_lock = PTHREAD_MUTEX_INITIALIZER;
static bool moving;
static atomic_bool mover_stop;
static int nr_cpus;
static unsigned long nr_moves;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fail(const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	line_out("# FAIL: %s", buf);
	failed = true;
}

/* ------------------------------------------------------------ QEMU */

static void make_fifo(const char *path)
{
	unlink(path);
	if (mkfifo(path, 0600)) {
		line_out("# FAIL: mkfifo %s: %s", path, strerror(errno));
		exit(1);
	}
}

static int mon_in = -1, mon_out = -1;

/* Append the arguments before the NULL to @argv, at *@argc. */
static void __attribute__((sentinel)) add_args(const char **argv, int *argc, ...)
{
	const char *arg;
	va_list ap;

	va_start(ap, argc);
	while ((arg = va_arg(ap, const char *)))
		argv[(*argc)++] = arg;
	va_end(ap);
}

static pid_t start_qemu(bool incoming)
{
	char smp[16], append[256], incoming_uri[64];
	const char *argv[48];
	int serial[2], argc = 0;
	pid_t pid;

	make_fifo(MON ".in");
	make_fifo(MON ".out");
	snprintf(smp, sizeof(smp), "%d", vcpus);
	snprintf(append, sizeof(append),
		 "console=%s rdinit=/init loglevel=4 kvt.step=%s kvt.vcpus=%d kvt.loops=%s",
		 CONSOLE, step, vcpus, loops);
	snprintf(incoming_uri, sizeof(incoming_uri), "file:%s", STATE_FILE);

	add_args(argv, &argc, QEMU, "-M", MACHINE, NULL);
#ifdef __riscv
	add_args(argv, &argc, "-bios", "none", NULL);
#endif
	add_args(argv, &argc, "-accel", "kvm",
		 "-cpu", "host",
		 "-smp", smp,
		 "-m", GUEST_MEM, NULL);
	if (huge)
		add_args(argv, &argc, "-mem-path", HUGE_DIR, "-mem-prealloc", NULL);
	add_args(argv, &argc, "-nodefaults",
		 "-display", "none",
		 "-serial", "stdio",
		 "-monitor", "pipe:" MON,
		 "-kernel", GUEST_KERNEL,
		 "-initrd", GUEST_INITRD,
		 "-append", append, NULL);
	if (incoming)
		add_args(argv, &argc, "-incoming", incoming_uri, NULL);
	argv[argc] = NULL;

	if (pipe2(serial, O_CLOEXEC)) {
		line_out("# FAIL: pipe: %s", strerror(errno));
		exit(1);
	}
	pid = fork();
	if (pid < 0) {
		line_out("# FAIL: fork: %s", strerror(errno));
		exit(1);
	}
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		dup2(null, STDIN_FILENO);
		dup2(serial[1], STDOUT_FILENO);
		dup2(serial[1], STDERR_FILENO);
		setenv("LD_LIBRARY_PATH", LIBDIR, 1);
		execv(argv[0], (char **)argv);
		dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(serial[1]);
	if (serial_fd >= 0)
		close(serial_fd);
	serial_fd = serial[0];
	/* O_RDWR: opening either end of a FIFO so never blocks. */
	if (mon_in >= 0)
		close(mon_in);
	if (mon_out >= 0)
		close(mon_out);
	mon_in = open(MON ".in", O_RDWR | O_CLOEXEC);
	mon_out = open(MON ".out", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	line_out("# kvt_realvm: started %s%s (pid %d)", QEMU,
		 incoming ? " -incoming" : "", pid);
	return pid;
}

/* Send a monitor command; what the monitor says up to its next prompt. */
static void monitor(const char *cmd, char *reply, size_t size, double secs)
{
	double end = now() + secs;
	size_t used = 0;

	/* Drop what an earlier command left unread. */
	while (read(mon_out, reply, size) > 0)
		;
	if (write(mon_in, cmd, strlen(cmd)) < 0 || write(mon_in, "\n", 1) < 0) {
		fail("write to QEMU's HMP pipe: %s", strerror(errno));
		return;
	}
	reply[0] = '\0';
	while (now() < end && used < size - 1) {
		struct pollfd p = { .fd = mon_out, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 50) <= 0)
			continue;
		n = read(mon_out, reply + used, size - 1 - used);
		if (n <= 0)
			continue;
		used += n;
		reply[used] = '\0';
		if (used > strlen(cmd) + 8 && strstr(reply + used - 8, "(qemu) "))
			break;
	}
}

static int wait_qemu(double secs)
{
	double end = now() + secs;
	int status;

	while (now() < end) {
		pid_t r = waitpid(qemu_pid, &status, WNOHANG);

		if (r == qemu_pid)
			return status;
		usleep(20000);
	}
	kill(qemu_pid, SIGKILL);
	waitpid(qemu_pid, &status, 0);
	return -1;
}

/* ------------------------------------------------------------ vCPU threads */

static int vcpu_tids(pid_t pid, pid_t *tids)
{
	char path[300], comm[64];
	struct dirent *d;
	int n = 0;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	dir = opendir(path);
	if (!dir)
		return 0;
	while ((d = readdir(dir)) && n < MAX_VCPUS) {
		int fd, len, id;

		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/comm", pid, d->d_name);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		len = read(fd, comm, sizeof(comm) - 1);
		close(fd);
		if (len <= 0)
			continue;
		comm[len] = '\0';
		if (sscanf(comm, "CPU %d/KVM", &id) == 1 && id < MAX_VCPUS)
			tids[n++] = atoi(d->d_name);
	}
	closedir(dir);
	return n;
}

static void pin(pid_t tid, int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu % nr_cpus, &set);
	sched_setaffinity(tid, sizeof(set), &set);
}

/* Pin each vCPU thread to a CPU of its own, then rotate them every MOVE_MS. */
static void *mover(void *arg)
{
	unsigned int round = 0;

	(void)arg;
	while (!atomic_load(&mover_stop)) {
		pid_t tids[MAX_VCPUS];
		int n;

		usleep(MOVE_MS * 1000);
		pthread_mutex_lock(&move_lock);
		if (moving && qemu_pid > 0) {
			n = vcpu_tids(qemu_pid, tids);
			for (int i = 0; i < n; i++)
				pin(tids[i], i + round);
			round++;
			nr_moves++;
		}
		pthread_mutex_unlock(&move_lock);
	}
	return NULL;
}

/* ------------------------------------------------------------ statistics */

/*
 * The "total" line of the module's statistics file of the VM QEMU runs,
 * which is also logged as the figure "vtimer_NAME".
 */
static bool read_vm_stats(struct vm_stats *s, const char *name)
{
	char path[300], line[1024], prefix[32];
	struct dirent *d;
	bool found = false;
	DIR *dir;
	FILE *f;

	s->valid = false;
	dir = opendir("/sys/kernel/debug/kvm");
	if (!dir)
		return false;
	snprintf(prefix, sizeof(prefix), "%d-", qemu_pid);
	while ((d = readdir(dir))) {
		if (strncmp(d->d_name, prefix, strlen(prefix)))
			continue;
		snprintf(path, sizeof(path), "/sys/kernel/debug/kvm/%s/vtimer", d->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f)) {
			if (strncmp(line, "total ", 6))
				continue;
			if (sscanf(line, "total irqs=%llu early=%llu", &s->irqs, &s->early) == 2)
				found = true;
			line[strcspn(line, "\n")] = '\0';
			line_out("# vtimer_%s: %s", name, line + 6);
		}
		fclose(f);
	}
	closedir(dir);
	s->valid = found;
	return found;
}

/* ------------------------------------------------------------ guest lines */

/* The guest kernel's reports, and QEMU's when KVM_RUN fails. */
static const char *const splats[] = {
	"BUG:", "WARNING:", "Oops", "rcu: INFO:", "soft lockup", "Call Trace",
	"Kernel panic", "hung_task", "detected stalls", "kvm run failed",
};

static struct mark *find_mark(const char *name)
{
	for (int i = 0; i < nr_marks; i++)
		if (!strcmp(marks[i].name, name))
			return &marks[i];
	return NULL;
}

static bool guest_line(char *line, double t)
{
	char name[32];
	double g;
	unsigned long long girqs;

	last_line_host = t;
	line_out("%s", line);
	for (size_t i = 0; i < ARRAY_SIZE(splats); i++)
		if (strstr(line, splats[i]))
			fail("guest kernel report: %s", line);
	if (strncmp(line, "KVT ", 4))
		return false;
	line += 4;
	if (sscanf(line, "mark %31s %lf", name, &g) == 2) {
		if (nr_marks < MAX_MARKS) {
			snprintf(marks[nr_marks].name, sizeof(marks[0].name), "%s", name);
			marks[nr_marks].host = t;
			marks[nr_marks].guest = g;
			nr_marks++;
		}
	} else if (!strncmp(line, "move on", 7)) {
		pthread_mutex_lock(&move_lock);
		moving = true;
		pthread_mutex_unlock(&move_lock);
	} else if (!strncmp(line, "move off", 8)) {
		pthread_mutex_lock(&move_lock);
		moving = false;
		pthread_mutex_unlock(&move_lock);
	} else if (!strncmp(line, "save", 4)) {
		want_save = true;
	} else if (sscanf(line, "stats %31s %llu", name, &girqs) == 2) {
		/*
		 * "before" and "after" bracket the load; any other name is a
		 * figure only (a restored VM's statistics start again).
		 */
		static struct vm_stats other;
		struct vm_stats *s = !strcmp(name, "before") ? &stats_before :
				     !strcmp(name, "after") ? &stats_after : &other;

		if (vtimer_loaded)
			read_vm_stats(s, name);
		s->guest_irqs = girqs;
	} else if (!strncmp(line, "rmmod", 5)) {
		if (vtimer_loaded) {
			if (syscall(SYS_delete_module, "kvm_vtimer", O_NONBLOCK) == 0)
				fail("kvm_vtimer unloaded while a VM uses it");
			else if (errno != EBUSY && errno != EWOULDBLOCK)
				fail("rmmod kvm_vtimer with a VM: %s, not EBUSY", strerror(errno));
			else
				line_out("# rmmod_while_running: refused (%s)", strerror(errno));
		}
	} else if (sscanf(line, "tick %lf %llu", &g, &girqs) == 2) {
		if (tick_prev_g >= 0 && nr_restores) {
			double gap = g - tick_prev_g;

			if (gap > tick_max_gap)
				tick_max_gap = gap;
			if (gap < tick_min_gap)
				tick_min_gap = gap;
			nr_ticks++;
		}
		tick_prev_g = g;
	} else if (!strncmp(line, "result ", 7)) {
		char key[64], val[128];

		if (sscanf(line + 7, "%63s %127[^\n]", key, val) == 2)
			line_out("# %s: %s", key, val);
	} else if (!strncmp(line, "done", 4)) {
		return true;
	}
	return false;
}

static char line_buf[LINE_LEN];
static size_t line_used;

/*
 * Read what the guest's console has within @wait_ms and act on its whole
 * lines.  Returns 1 on "KVT done", -1 at the end of QEMU's output, else 0.
 */
/*
 * Read what the guest's console has sent and act on each whole line.  A line
 * is timestamped when its first byte arrives: the guest's UART sends a byte
 * per exit, so the end of a line comes tens of ms after the guest wrote its
 * clock into it, and by a varying amount.
 */
static int pump(int wait_ms)
{
	struct pollfd p = { .fd = serial_fd, .events = POLLIN };
	static double line_t;
	int done = 0;
	ssize_t n;
	double t;
	char *nl;

	if (poll(&p, 1, wait_ms) <= 0)
		return 0;
	n = read(serial_fd, line_buf + line_used, sizeof(line_buf) - line_used - 1);
	if (n < 0 && errno == EINTR)
		return 0;
	if (n <= 0)
		return -1;
	t = now();
	if (!line_used)
		line_t = t;
	line_used += n;
	line_buf[line_used] = '\0';
	while (!done && (nl = memchr(line_buf, '\n', line_used))) {
		*nl = '\0';
		if (nl > line_buf && nl[-1] == '\r')
			nl[-1] = '\0';
		done = guest_line(line_buf, line_t);
		line_used -= nl + 1 - line_buf;
		memmove(line_buf, nl + 1, line_used);
		/* The rest came in this read. */
		line_t = t;
	}
	if (line_used == sizeof(line_buf) - 1)
		line_used = 0;
	return done;
}

/* Write VAL to the file PATH; false (and a FAIL line) if that fails. */
static bool write_file(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n = -1;

	if (fd >= 0) {
		n = write(fd, val, strlen(val));
		close(fd);
	}
	if (n != (ssize_t)strlen(val)) {
		fail("write %s to %s: %s", val, path, strerror(errno));
		return false;
	}
	return true;
}

/*
 * Room for the guest's memory in 2 MB pages, on a hugetlbfs at HUGE_DIR:
 * two guests' worth, since a restore starts the new QEMU only after the
 * old one is gone but the kernel may free its pages late.
 */
static bool setup_huge(void)
{
	char val[32];
	long have = 0;
	FILE *f;

	mkdir(HUGE_DIR, 0755);
	if (mount("hugetlbfs", HUGE_DIR, "hugetlbfs", 0, NULL) && errno != EBUSY) {
		fail("mount hugetlbfs on %s: %s", HUGE_DIR, strerror(errno));
		return false;
	}
	snprintf(val, sizeof(val), "%d", 2 * GUEST_MEM_MB / HUGE_MB);
	if (!write_file("/proc/sys/vm/nr_hugepages", val))
		return false;
	f = fopen("/proc/sys/vm/nr_hugepages", "re");
	if (!f || fscanf(f, "%ld", &have) != 1)
		have = 0;
	if (f)
		fclose(f);
	if (have < GUEST_MEM_MB / HUGE_MB) {
		fail("only %ld huge pages of %d MB for a %d MB guest", have, HUGE_MB,
		     GUEST_MEM_MB);
		return false;
	}
	return true;
}

/*
 * Log the kernel stack of every QEMU thread: where a slow save waits.
 * Frames are "function+off/len"; the offsets go.
 */
static void dump_stacks(pid_t pid)
{
	char path[320], comm[64], buf[4096], out[1024];
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	d = opendir(path);
	if (!d)
		return;
	while ((de = readdir(d))) {
		size_t used = 0;
		char *line, *save;
		ssize_t n;
		int fd;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/comm", pid, de->d_name);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		n = fd >= 0 ? read(fd, comm, sizeof(comm) - 1) : -1;
		if (fd >= 0)
			close(fd);
		comm[n > 0 ? n - 1 : 0] = '\0';
		snprintf(path, sizeof(path), "/proc/%d/task/%s/stack", pid, de->d_name);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
		if (fd >= 0)
			close(fd);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		out[0] = '\0';
		for (line = strtok_r(buf, "\n", &save); line && used < sizeof(out) - 80;
		     line = strtok_r(NULL, "\n", &save)) {
			char *fn = strchr(line, ']');
			char *plus;

			fn = fn ? fn + 2 : line;
			plus = strchr(fn, '+');
			if (plus)
				*plus = '\0';
			used += snprintf(out + used, sizeof(out) - used, "%s%s",
					 used ? " < " : "", fn);
		}
		line_out("# stack %s (%s): %s", de->d_name, comm, out);
	}
	closedir(d);
}

/*
 * A VM saved stopped comes back paused: continue it once QEMU has loaded
 * the file ("inmigrate" no more).
 */
static bool resume_restored(void)
{
	char reply[1024];
	double end = now() + 600;

	while (now() < end) {
		monitor("info status", reply, sizeof(reply), 2);
		if (strstr(reply, "running"))
			return true;
		if (strstr(reply, "paused") && !strstr(reply, "inmigrate")) {
			monitor("cont", reply, sizeof(reply), 2);
			continue;
		}
		usleep(100000);
	}
	fail("the restored VM did not run within 600 s");
	return false;
}

/*
 * -T FUNCS: count calls of (and time spent in) the host kernel functions
 * FUNCS, a comma-separated list, over the save, with ftrace's function
 * profiler (CONFIG_FUNCTION_PROFILER, the "trace" kernel variant).  The
 * figures show where a slow save's time goes (Documentation/testing.rst,
 * "What real guests found").
 */
static bool trace_start(void)
{
	char funcs[1024], *f, *save;
	int fd, traced = 0;

	if (!trace_funcs)
		return true;
	if (access(TRACEFS "/trace_stat", F_OK) &&
	    mount("tracefs", TRACEFS, "tracefs", 0, NULL)) {
		fail("mount tracefs on %s: %s", TRACEFS, strerror(errno));
		return false;
	}
	/*
	 * The names, a line each, in one open: the filter is what the file
	 * holds at close (a name not followed by a new line would run into
	 * the next write's).  The profiler counts only the filter's
	 * functions; an empty filter would count every function.
	 */
	fd = open(TRACEFS "/set_ftrace_filter", O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0) {
		fail("open set_ftrace_filter: %s", strerror(errno));
		return false;
	}
	snprintf(funcs, sizeof(funcs), "%s", trace_funcs);
	for (f = strtok_r(funcs, ",", &save); f; f = strtok_r(NULL, ",", &save)) {
		char name[160];
		int len = snprintf(name, sizeof(name), "%s\n", f);

		/* A static function may be inlined: not there to count. */
		if (write(fd, name, len) != len) {
			line_out("# kvt_realvm: cannot trace %s: %s", f, strerror(errno));
			continue;
		}
		traced++;
	}
	close(fd);
	if (!traced) {
		fail("none of %s can be traced", trace_funcs);
		return false;
	}
	return write_file(TRACEFS "/function_profile_enabled", "1");
}

/* The profile per CPU, summed by function: "# trace: FUNC hits us". */
static void trace_stop(void)
{
	struct { char name[128]; unsigned long hits; double us; } sum[64];
	char path[128], line[512];
	int n = 0;

	if (!trace_funcs)
		return;
	write_file(TRACEFS "/function_profile_enabled", "0");
	for (int cpu = 0; cpu < MAX_VCPUS; cpu++) {
		FILE *f;

		snprintf(path, sizeof(path), TRACEFS "/trace_stat/function%d", cpu);
		f = fopen(path, "re");
		if (!f)
			break;
		while (fgets(line, sizeof(line), f)) {
			char name[128];
			unsigned long hits;
			double us;
			int i;

			/* "  make_xfence_request   1234   5678.123 us   ..." */
			if (sscanf(line, " %127s %lu %lf", name, &hits, &us) != 3)
				continue;
			for (i = 0; i < n && strcmp(sum[i].name, name); i++)
				;
			if (i == n) {
				if (n == (int)ARRAY_SIZE(sum))
					continue;
				snprintf(sum[n].name, sizeof(sum[n].name), "%s", name);
				sum[n].hits = 0;
				sum[n].us = 0;
				n++;
			}
			sum[i].hits += hits;
			sum[i].us += us;
		}
		fclose(f);
	}
	for (int i = 0; i < n; i++)
		line_out("# trace: %s %lu calls %.0f us", sum[i].name, sum[i].hits, sum[i].us);
}

static void save_restore(void)
{
	char reply[8192];
	double t0 = now(), end = t0 + 600;
	double next_dump = t0 + SAVE_SLOW_S;
	bool done = false;
	int status;

	unlink(STATE_FILE);
	if (!trace_start())
		return;
	if (!live)
		monitor("stop", reply, sizeof(reply), 5);
	monitor("migrate file:" STATE_FILE, reply, sizeof(reply), 5);
	while (now() < end) {
		monitor("info migrate", reply, sizeof(reply), 2);
		if (strstr(reply, "completed")) {
			done = true;
			break;
		}
		if (strstr(reply, "failed") || strstr(reply, "cancelled")) {
			fail("migration to a file: %s", reply);
			break;
		}
		if (now() > next_dump) {
			line_out("# kvt_realvm: the save takes %.0f s so far; QEMU's threads:",
				 now() - t0);
			dump_stacks(qemu_pid);
			next_dump += SAVE_SLOW_S;
		}
		usleep(100000);
	}
	trace_stop();
	if (!done) {
		if (!failed)
			fail("migration to a file did not complete in 600 s");
		return;
	}
	save_secs = now() - t0;
	monitor("quit", reply, sizeof(reply), 2);
	status = wait_qemu(60);
	if (status < 0)
		fail("QEMU did not quit after the save");
	/* What the old QEMU still wrote, up to its end: nothing is lost. */
	while (pump(1000) >= 0)
		;
	pthread_mutex_lock(&move_lock);
	qemu_pid = start_qemu(true);
	pthread_mutex_unlock(&move_lock);
	if (!live && !resume_restored())
		return;
	last_line_host = now();
	nr_restores++;
	restore_host_gap = now() - t0;
	line_out("# kvt_realvm: saved in %.2f s, restored %.2f s after the save began",
		 save_secs, restore_host_gap);
}

/*
 * A restored guest silent for this long has QEMU's state and threads
 * logged once: where a hang after a restore is.
 */
#define SILENT_S	30

static void dump_silent(void)
{
	char reply[4096];

	line_out("# kvt_realvm: no guest output for %d s after the restore", SILENT_S);
	monitor("info status", reply, sizeof(reply), 2);
	line_out("# %s", reply);
	monitor("info registers", reply, sizeof(reply), 2);
	for (char *l = strtok(reply, "\n"); l; l = strtok(NULL, "\n"))
		if (strstr(l, " pc ") || strstr(l, "PC=") || strstr(l, "mip") ||
		    strstr(l, "mie ") || strstr(l, "sscratch") || strstr(l, "x4/tp"))
			line_out("# %s", l);
	dump_stacks(qemu_pid);
}

/* Read the guest's console until "KVT done", QEMU's exit or the deadline. */
static bool run_guest(double deadline)
{
	bool dumped = false;

	for (;;) {
		double left = deadline - now();
		int r;

		if (nr_restores && !dumped && now() - last_line_host > SILENT_S) {
			dump_silent();
			dumped = true;
		}

		if (left <= 0) {
			fail("the guest did not finish in time (last line %.1f s ago)",
			     now() - last_line_host);
			return false;
		}
		r = pump(left > 1 ? 1000 : (int)(left * 1000) + 1);
		if (r > 0)
			return true;
		if (r < 0) {
			fail("QEMU's output ended before the guest finished");
			return false;
		}
		if (want_save) {
			want_save = false;
			save_restore();
			if (failed)
				return false;
		}
	}
}

/* ------------------------------------------------------------ checks */

static void check_clock(void)
{
	struct mark *a = find_mark("start"), *z = find_mark("end");

	for (int i = 1; i < nr_marks; i++) {
		char prev[40];
		double host;

		/* "sleep1" marks end a guest `sleep 1` begun at the mark before. */
		if (strncmp(marks[i].name, "sleep1", 6))
			continue;
		snprintf(prev, sizeof(prev), "%s", marks[i - 1].name);
		host = marks[i].host - marks[i - 1].host;
		line_out("# sleep_1s_host_s: %.4f (guest %.4f)", host,
			 marks[i].guest - marks[i - 1].guest);
		if (marks[i].guest - marks[i - 1].guest < 1.0)
			fail("guest sleep 1 took %.4f s of guest time",
			     marks[i].guest - marks[i - 1].guest);
		if (host > SLEEP1_MAX_S)
			fail("guest sleep 1 took %.4f s of host time (at most %.1f)",
			     host, SLEEP1_MAX_S);
	}
	/*
	 * Only the boot step's marks all follow a quiet console (the others
	 * follow output that the UART is still sending): its span is the
	 * drift check, the others' are figures.
	 */
	if (a && z && !nr_restores) {
		double host = z->host - a->host, guest = z->guest - a->guest;
		double diff = guest - host, ppm = host > 0 ? diff / host * 1e6 : 0;

		line_out("# clock_span_s: host %.3f guest %.3f", host, guest);
		line_out("# clock_drift_ms: %.2f (%.0f ppm)", diff * 1000, ppm);
		if (!strcmp(step, "boot") && fabs(diff) > DRIFT_MAX_S &&
		    fabs(ppm) > DRIFT_MAX_PPM)
			fail("guest clock drifted %.1f ms (%.0f ppm) against the host's",
			     diff * 1000, ppm);
	}
}

static void check_restore(void)
{
	if (!nr_restores)
		return;
	line_out("# restore: save %.2f s; guest tick gaps after it: %d, min %.3f s, max %.3f s",
		 save_secs, nr_ticks, tick_min_gap, tick_max_gap);
	if (nr_ticks < 3)
		fail("only %d guest ticks after the restore", nr_ticks);
	/*
	 * The guest sleeps 0.25 s between ticks: its clock must go on from
	 * where it was saved (no jump by the time the VM was stopped) and
	 * never back.
	 */
	if (tick_min_gap < 0.25)
		fail("a guest tick gap of %.3f s: a sleep 0.25 ended early or the clock went back",
		     tick_min_gap);
	if (tick_max_gap > 1.25)
		fail("a guest tick gap of %.3f s after the restore: a clock jump or a late timer",
		     tick_max_gap);
}

/* Whether the guest's timer interrupts come from the hardware. */
static bool direct_timer(void)
{
#ifdef __riscv
	char line[1024];
	bool sstc = false;
	FILE *f = fopen("/proc/cpuinfo", "re");

	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "isa", 3) && strstr(line, "_sstc"))
			sstc = true;
	if (f)
		fclose(f);
	return sstc;
#else
	/* arm64: the guest's virtual timer, which the hardware raises. */
	return true;
#endif
}

static void check_stats(void)
{
	long long d_irqs, d_guest, slack;

	if (!stats_before.valid && !stats_after.valid) {
		if (vtimer_loaded && (stats_before.guest_irqs || stats_after.guest_irqs))
			fail("no kvm_vtimer statistics for the VM");
		return;
	}
	if (!stats_before.valid || !stats_after.valid) {
		fail("kvm_vtimer statistics missing at one end of the load");
		return;
	}
	d_irqs = stats_after.irqs - stats_before.irqs;
	d_guest = stats_after.guest_irqs - stats_before.guest_irqs;
	line_out("# load_irqs: module %lld, guest %lld; early %llu", d_irqs, d_guest,
		 stats_after.early);
	if (stats_after.early)
		fail("%llu early timer interrupts", stats_after.early);
	slack = 5 + d_guest / 200;
	if (direct_timer()) {
		/*
		 * The hardware raises the guest's timer interrupts and the
		 * module only wakes a blocked vCPU: at most one of ours per
		 * interrupt the guest takes (a few more may come between the
		 * guest's count and our read).
		 */
		if (d_irqs > d_guest + slack)
			fail("the module counted %lld wakeups, the guest took %lld interrupts",
			     d_irqs, d_guest);
		return;
	}
	/*
	 * SBI set_timer: the module raises every timer interrupt the guest
	 * takes, so none may be missing from its count.  It may count more:
	 * a set_timer clears a raised interrupt that the guest has not taken
	 * yet (the guest reprograms its clockevent with interrupts off, as
	 * its idle path does), and that raise is never taken.
	 */
	line_out("# load_raises_not_taken: %lld", d_irqs - d_guest);
	if (d_irqs < d_guest - slack)
		fail("the guest took %lld timer interrupts, the module raised %lld",
		     d_guest, d_irqs);
}

int main(int argc, char **argv)
{
	pthread_t mover_thread;
	double timeout;
	bool ok;

	while (argc > 1 && argv[1][0] == '-') {
		if (!strcmp(argv[1], "-l")) {
			live = true;
		} else if (!strcmp(argv[1], "-H")) {
			huge = true;
		} else if (!strcmp(argv[1], "-T") && argc > 2) {
			trace_funcs = argv[2];
			argv++;
			argc--;
		} else {
			break;
		}
		argv++;
		argc--;
	}
	if (argc != 4 && argc != 5) {
		fprintf(stderr,
			"usage: kvt_realvm [-l] [-H] [-T FUNC,...] STEP VCPUS TIMEOUT_S [LOOPS]\n");
		return 2;
	}
	if (argc == 5)
		loops = argv[4];
	step = argv[1];
	vcpus = atoi(argv[2]);
	timeout = atof(argv[3]);
	nr_cpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (nr_cpus < 1)
		nr_cpus = 1;
	vtimer_loaded = access("/sys/module/kvm_vtimer", F_OK) == 0;
	line_out("# kvt_realvm: step %s, %d vCPUs, kvm_vtimer %s", step, vcpus,
		 vtimer_loaded ? "loaded" : "not loaded");
	t_start = now();
	if (huge && !setup_huge())
		return 1;

	qemu_pid = start_qemu(false);
	pthread_create(&mover_thread, NULL, mover, NULL);
	ok = run_guest(t_start + timeout);
	atomic_store(&mover_stop, true);
	pthread_join(mover_thread, NULL);
	if (wait_qemu(ok ? 60 : 0) < 0 && ok)
		fail("QEMU did not exit after the guest powered off");
	line_out("# moves: %lu", nr_moves);
	check_clock();
	check_restore();
	check_stats();
	line_out("# wall_s: %.1f", now() - t_start);
	return failed ? 1 : 0;
}
