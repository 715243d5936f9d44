#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# build-module.sh ARCH [VARIANT]: build kvm_vtimer.ko out of tree against
# the cached host kernel for ARCH (and kernel VARIANT), in a copy of the
# sources under build/ so that two kernels never share objects.  Any compiler warning fails the
# build.  Prints the path of the module.
set -euo pipefail
arch=${1:?usage: build-module.sh riscv|arm64 [debug|rt]}
variant=${2:-}
. "$(dirname "$0")/env.sh"

kdir=$(kvt_kernel_dir "$arch" "$variant")
name=$arch${variant:+-$variant}
[ -e "$kdir/.kvt-ready" ] || { echo "build-module: build the $name kernel first" >&2; exit 1; }
mdir=$KVT_BUILD/module-$name
mkdir -p "$mdir"
rsync -a --delete --exclude '*.o' --exclude '*.ko' --exclude '.*.cmd' \
	--exclude '*.mod*' --exclude 'bindings_generated.rs' \
	--exclude 'Module.symvers' --exclude 'modules.order' \
	"$KVT_ROOT/Kbuild" "$KVT_ROOT/rust" "$KVT_ROOT/include" "$KVT_ROOT/shim" "$mdir/"
log=$mdir/build.log
# shellcheck disable=SC2046
if ! make -C "$kdir/build" M="$mdir" $(kvt_kmake_args "$arch") -j"$KVT_JOBS" modules > "$log" 2>&1; then
	cat "$log" >&2
	echo "build-module: $name build failed" >&2
	exit 1
fi
if grep -qi 'warning' "$log"; then
	cat "$log" >&2
	echo "build-module: $name build has warnings" >&2
	exit 1
fi
echo "$mdir/kvm_vtimer.ko"
