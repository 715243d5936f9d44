#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# build-kernel.sh ARCH [VARIANT]: build (or reuse) the emulated host's kernel
# for ARCH (riscv or arm64) from Debian's linux-source-6.12 with
# patches/linux-6.12 applied and configs/ARCH.config on top of allnoconfig.
# A VARIANT (debug, rt) lays configs/VARIANT.config over ARCH.config.  The
# result lives in the cache outside the repository, keyed by what went into
# it; the last line printed is its directory.  With KVT_LINUX_VERSION set,
# a linux-source-6.12 of another version is refused (env.sh); a version
# other than the last build's is said in one line.
set -euo pipefail
arch=${1:?usage: build-kernel.sh riscv|arm64 [debug|rt]}
variant=${2:-}
. "$(dirname "$0")/env.sh"

mkdir -p "$KVT_CACHE"
exec 9>"$KVT_CACHE/.lock"
flock 9
kvt_note_linux_version

src=$KVT_CACHE/src-$(kvt_src_key)
if [ ! -e "$src/.kvt-ready" ]; then
	echo "build-kernel: extracting linux-source-6.12 into $src" >&2
	rm -rf "$src" "$src.tmp"
	mkdir -p "$src.tmp"
	tar -xf /usr/src/linux-source-6.12.tar.xz -C "$src.tmp" --strip-components=1
	for p in "$KVT_ROOT"/patches/linux-6.12/*.patch; do
		[ -e "$p" ] || continue
		echo "build-kernel: applying $(basename "$p")" >&2
		patch -d "$src.tmp" -p1 --batch --forward --quiet < "$p"
	done
	touch "$src.tmp/.kvt-ready"
	mv "$src.tmp" "$src"
fi

out=$(kvt_kernel_dir "$arch" "$variant")
name=$arch${variant:+-$variant}
if [ -e "$out/.kvt-ready" ]; then
	echo "build-kernel: $name kernel is cached" >&2
	echo "$out"
	exit 0
fi

rm -rf "$out"
mkdir -p "$out/build"
frag=$out/fragment.config
kvt_fragment "$arch" "$variant" > "$frag"
# shellcheck disable=SC2046
kmake() { make -s -C "$src" O="$out/build" $(kvt_kmake_args "$arch") "$@"; }

start=$SECONDS
kmake KCONFIG_ALLCONFIG="$frag" allnoconfig >&2
missing=
while IFS= read -r line; do
	case $line in CONFIG_*=*) ;; *) continue ;; esac
	grep -qx "$line" "$out/build/.config" || missing="$missing $line"
done < "$frag"
if [ -n "$missing" ]; then
	echo "build-kernel: options the config did not take:$missing" >&2
	kmake rustavailable >&2 || true
	exit 1
fi
kmake -j"$KVT_JOBS" Image modules >&2
kmake headers_install INSTALL_HDR_PATH="$out/headers" >&2
ln -sfn "$src" "$out/source"
echo "build-kernel: $name kernel built in $((SECONDS - start)) s" >&2
touch "$out/.kvt-ready"
KVT_SRC_IN_USE=$src kvt_prune
echo "$out"
