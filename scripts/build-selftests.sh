#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# build-selftests.sh ARCH [VARIANT]: build the upstream KVM selftests the
# plan runs, and ours, static, for ARCH, from the kernel source the host
# kernel (of VARIANT) was built from.
# Prints the directory holding the binaries.
set -euo pipefail
arch=${1:?usage: build-selftests.sh riscv|arm64 [debug|rt]}
variant=${2:-}
. "$(dirname "$0")/env.sh"

kdir=$(kvt_kernel_dir "$arch" "$variant")
name=$arch${variant:+-$variant}
[ -e "$kdir/.kvt-ready" ] || { echo "build-selftests: build the $name kernel first" >&2; exit 1; }
src=$(readlink -f "$kdir/source")
key=$({ echo "$kdir"; cat "$0"; find "$KVT_ROOT/selftests/kvm" -type f -print0 |
	sort -z | xargs -0 cat; } | kvt_sha)
out=$KVT_CACHE/selftests-$name-$key
if [ -e "$out/.kvt-ready" ]; then
	echo "$out"
	exit 0
fi

case $arch in
riscv)
	tests="arch_timer get-reg-list steal_time kvm_create_max_vcpus"
	ours="kvt_sbi_timer kvt_timer_onereg kvt_busy_gap kvt_rmmod kvt_bench kvt_fuzz kvt_stress" ;;
arm64)
	tests="arch_timer get-reg-list steal_time kvm_create_max_vcpus
		aarch64/arch_timer_edge_cases aarch64/vgic_irq"
	ours="kvt_arm64_onereg kvt_arm64_offset kvt_cntpct kvt_rmmod kvt_arm64_user_irqchip
		kvt_arm64_declined kvt_bench kvt_busy_gap kvt_arm64_fuzz kvt_stress" ;;
esac
rm -rf "$out"
mkdir -p "$out"
start=$SECONDS
targets=
for t in $tests; do targets="$targets $out/$t"; done
# shellcheck disable=SC2086
make -s -C "$src/tools/testing/selftests/kvm" -j"$KVT_JOBS" ARCH="$arch" \
	CROSS_COMPILE="$(kvt_cross "$arch")" OUTPUT="$out" \
	KHDR_INCLUDES="-isystem $kdir/headers/include" \
	EXTRA_CFLAGS=-static LDFLAGS=-static $targets >&2
if [ -n "$ours" ]; then
	# Ours, on the same library, flags and headers (selftests/kvm/).
	make -s -C "$src/tools/testing/selftests/kvm" -f "$KVT_ROOT/selftests/kvm/Makefile.kvt" \
		-j"$KVT_JOBS" ARCH="$arch" CROSS_COMPILE="$(kvt_cross "$arch")" OUTPUT="$out" \
		KHDR_INCLUDES="-isystem $kdir/headers/include" \
		EXTRA_CFLAGS=-static LDFLAGS=-static \
		KVT_SRC="$KVT_ROOT/selftests/kvm" KVT_TESTS="$ours" kvt >&2
fi
echo "build-selftests: $arch selftests built in $((SECONDS - start)) s" >&2
touch "$out/.kvt-ready"
exec 9>"$KVT_CACHE/.lock"
flock 9
kvt_prune
echo "$out"
