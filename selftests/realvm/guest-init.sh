#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The real-guest tier's guest /init (Documentation/testing.rst, "Real
# guests"): Debian's kernel, Debian's busybox, cyclictest and stress-ng.  It
# runs one step, named by kvt.step= on the kernel command line, and talks to
# kvt_realvm on the host through "KVT ..." lines on the console.

export PATH=/bin:/usr/bin:/sbin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/shm /tmp
mount -t tmpfs shm /dev/shm
mount -t tmpfs tmp /tmp

arg() {
	sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline
}
step=$(arg kvt.step)
vcpus=$(arg kvt.vcpus)
loops=$(arg kvt.loops)
[ -n "$loops" ] || loops=2000

# The guest's CLOCK_MONOTONIC in seconds, to the ns ("now at" of
# /proc/timer_list: busybox's date has no %N).
gclock() {
	ns=$(sed -n 's/^now at \([0-9]*\) nsecs.*/\1/p; /^now at/q' /proc/timer_list)
	echo "$((ns / 1000000000)).$(printf %09d $((ns % 1000000000)))"
}

# Timer interrupts the guest took, all CPUs (RISC-V: riscv-timer; arm64:
# arch_timer).
girqs() {
	awk '/riscv-timer|arch_timer/ {
		for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++)
			n += $i
	} END { print n + 0 }' /proc/interrupts
}

mark() {
	echo "KVT mark $1 $(gclock)"
}

cyclic() {
	# SCHED_FIFO 90, memory locked, 1 ms interval, one thread per vCPU
	# pinned to it; the histogram (1 us buckets, non-zero ones only) is
	# what the host turns into percentiles.
	cyclictest -m -p 90 -i 1000 -l "$1" -q -h 100000 -t "$vcpus" -a |
		awk '/^[0-9]+[[:space:]]/ {
			s = 0
			for (i = 2; i <= NF; i++)
				s += $i
			if (!s)
				next
		} { print }'
}

echo "KVT result guest_kernel $(uname -r)"
case $step in
boot)
	# The host timestamps a mark when its line arrives, so every mark
	# follows a quiet console (the boot's output drained, the mark
	# before it sent): a line queued behind another arrives later.
	sleep 1
	mark start
	for i in 1 2 3; do
		sleep 0.5
		mark "before$i"
		sleep 1
		mark "sleep1_$i"
	done
	sleep 5
	mark end
	;;
cyclic)
	mark start
	echo "KVT move on"
	cyclic "$loops"
	echo "KVT move off"
	mark end
	;;
saverestore)
	# Save while cyclictest runs, then sample the clock and the timer
	# interrupts every 0.25 s; after cyclictest, an idle stretch shows
	# whether the restored timer storms.
	mark start
	(cyclic "$loops" > /tmp/cyclic.out 2>&1; touch /tmp/cyclic.done) &
	cyc=$!
	sleep 1
	echo "KVT save"
	# The host stops the VM in this sleep: the vCPU is then in the kernel
	# (idle, or cyclictest's 1 ms wakeups), not in a user process.  A
	# riscv64 VM stopped while the vCPU ran user code could come back with
	# the user's tp in sscratch and loop in its exception entry, with
	# either timer (Documentation/testing.rst, "Real guests").
	sleep 2
	# Ticks while cyclictest runs (the restore happens then), and 8 more
	# after it.
	i=0
	while [ $i -lt 8 ]; do
		sleep 0.25
		echo "KVT tick $(gclock) $(girqs)"
		[ ! -e /tmp/cyclic.done ] || i=$((i + 1))
	done
	wait $cyc
	cat /tmp/cyclic.out
	a=$(girqs)
	t0=$(gclock)
	sleep 2
	b=$(girqs)
	t1=$(gclock)
	echo "KVT result idle_irqs_per_s $(awk "BEGIN { printf \"%.1f\", ($b - $a) / ($t1 - $t0) }")"
	echo "KVT stats restored $b"
	mark end
	;;
load)
	mark start
	echo "KVT stats before $(girqs)"
	stress-ng --timer "$vcpus" --timer-freq 2000 --cyclic 1 --cyclic-policy fifo \
		-t 10s --metrics-brief &
	pid=$!
	sleep 3
	echo "KVT rmmod"
	wait $pid
	echo "KVT result stress_ng_exit $?"
	echo "KVT stats after $(girqs)"
	mark end
	;;
*)
	echo "KVT result error unknown step '$step'"
	;;
esac
echo "KVT done"
poweroff -f
