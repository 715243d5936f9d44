# SPDX-License-Identifier: GPL-2.0
#
# kvm_vtimer.  On a host whose kernel carries patches/linux-6.12 and has
# CONFIG_RUST=y:
#
#	make KDIR=/path/to/kernel/build && sudo insmod kvm_vtimer.ko
#
# (kbuild itself reads Kbuild: `make -C $KDIR M=$PWD` works as well.)
# On a development machine (Debian bookworm, root), everything runs under QEMU:
#
#	make run	boot the emulated RISC-V host, insmod, run arch_timer
#	make check	host unit tests + the selftest plan on every config
#	make bench	the timer benchmark, in-tree against ours (build/bench/)
#	make check-debug, make check-rt	the plan on debug and PREEMPT_RT kernels
#	make realvm	Debian's QEMU and guest kernel in the emulated hosts
#
# ARCH selects the module's architecture for the plain module build.

KDIR ?= /lib/modules/$(shell uname -r)/build
ARCH ?= riscv
CONFIGS ?=
PYTHON ?= python3
# rustup's cargo, also when ~/.cargo/bin is not on PATH.
CARGO ?= $(shell command -v cargo || echo $(HOME)/.cargo/bin/cargo)
export PATH := $(PATH):$(HOME)/.cargo/bin

.PHONY: modules clean deps host-test check check-debug check-rt run bench kernels realvm

modules:
	$(MAKE) -C $(KDIR) M=$(CURDIR) ARCH=$(ARCH) LLVM=1 modules

clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) clean 2>/dev/null || true
	rm -rf build host/target

deps:
	scripts/setup-deps.sh

kernels: deps
	scripts/build-kernel.sh riscv
	scripts/build-kernel.sh arm64

# Host tests: the timer logic (cargo) and the test bed itself (unittest).
# Their outputs are saved so that the suite's summary line counts them.
host-test: SHELL := /bin/bash
host-test: deps
	mkdir -p build
	cd host && $(CARGO) test --locked 2>&1 | tee ../build/cargo-test.log; \
		exit $${PIPESTATUS[0]}
	$(PYTHON) -m unittest discover -s scripts -p 'test_*.py' 2>&1 | \
		tee build/unittest.log; exit $${PIPESTATUS[0]}

# One boot per config (CONFIGS= picks some); the last line is
# "N passed, N failed, N skipped", host tests included.
# Then the real-guest tier's short version (realvm.py --short, one step on
# every config of selftests/realvm.toml), counted in the same summary line.
check: host-test
	rm -f build/realvm-short/results.txt
	-$(PYTHON) scripts/realvm.py --short $(CONFIGS)
	$(PYTHON) scripts/kvt.py suite --cargo-log build/cargo-test.log \
		--unittest-log build/unittest.log \
		--results-log build/realvm-short/results.txt $(CONFIGS)

# The same plan on the debug kernels (KASAN, lockdep, DEBUG_ATOMIC_SLEEP,
# DEBUG_OBJECTS_TIMERS, KMEMLEAK, UBSAN) and on PREEMPT_RT (configs/*.config,
# the configs with `variant` in selftests/plan.toml).
check-debug: deps
	$(PYTHON) scripts/kvt.py suite --variant debug $(CONFIGS)

check-rt: deps
	$(PYTHON) scripts/kvt.py suite --variant rt $(CONFIGS)

# Then a short benchmark (one repetition, riscv-sstc) for its summary;
# exit status 4 is "kvt_bench not built".
run: deps
	$(PYTHON) scripts/kvt.py run
	$(PYTHON) scripts/bench.py --reps 1 --out build/bench-run riscv-sstc || test $$? = 4

# The timer benchmark (Documentation/benchmarks.rst): every config with
# `bench = true` (CONFIGS= picks some), 5 interleaved repetitions of
# kvt_bench and kvt_busy_gap; JSON, plot and table in build/bench/, and one
# line per goal (met, MISSED, not measured).  BENCH_ARGS adds options, e.g.
# --publish, or --strict to fail on a MISSED goal.
bench: deps
	$(PYTHON) scripts/bench.py $(BENCH_ARGS) $(CONFIGS)

# The real-guest tier (Documentation/testing.rst, "Real guests"): Debian's
# QEMU runs Debian's guest kernel with KVM inside every config of
# selftests/realvm.toml (CONFIGS= picks some), in-tree / ours / in-tree.
realvm: deps
	$(PYTHON) scripts/realvm.py $(CONFIGS)
