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
#
# ARCH selects the module's architecture for the plain module build.

KDIR ?= /lib/modules/$(shell uname -r)/build
ARCH ?= riscv
CONFIGS ?=
PYTHON ?= python3
# rustup's cargo, also when ~/.cargo/bin is not on PATH.
CARGO ?= $(shell command -v cargo || echo $(HOME)/.cargo/bin/cargo)
export PATH := $(PATH):$(HOME)/.cargo/bin

.PHONY: modules clean deps host-test check run kernels

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
check: host-test
	$(PYTHON) scripts/kvt.py suite --cargo-log build/cargo-test.log \
		--unittest-log build/unittest.log $(CONFIGS)

run: deps
	$(PYTHON) scripts/kvt.py run
