# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
# Sourced by the build scripts: the toolchain that builds Rust-enabled 6.12
# kernels here (Debian rustc-web + rust-web-src, clang/LLVM 19, bindgen-cli).

KVT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KVT_CACHE=${KVT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kvm-vtimer}
KVT_BUILD=${KVT_BUILD:-$KVT_ROOT/build}
KVT_JOBS=${KVT_JOBS:-$(($(nproc) + 1))}

PATH=$(llvm-config-19 --bindir):$PATH:$HOME/.cargo/bin
KVT_RUSTC=/usr/bin/rustc
KVT_BINDGEN=$(command -v bindgen || true)
LIBCLANG_PATH=$(llvm-config-19 --libdir)
export PATH LIBCLANG_PATH KVT_ROOT KVT_CACHE KVT_BUILD KVT_JOBS

# The standard library source of the rustc RUSTC, which the kernel builds
# with it: DIR/rustc-VERSION/library (DIR: /usr/src, where rust-web-src of
# the same version as rustc-web puts it).  Not the newest there: another
# version's does not build.
kvt_rust_lib_src() {
	local rustc=$1 dir=${2:-/usr/src} version lib others
	version=$("$rustc" --version 2>/dev/null | awk '$1 == "rustc" { print $2 }') || true
	if [ -z "$version" ]; then
		echo "env.sh: no version from $rustc --version; install rustc-web" \
			"(scripts/setup-deps.sh)" >&2
		return 1
	fi
	lib=$dir/rustc-$version/library
	if [ ! -d "$lib" ]; then
		others=$(find "$dir" -mindepth 1 -maxdepth 1 -name 'rustc-*' -printf '%f\n' \
			2>/dev/null | sort -V | paste -sd ' ') || true
		echo "env.sh: no $lib for $rustc $version (in $dir: ${others:-none});" \
			"install rust-web-src of the same version as rustc-web" \
			"(scripts/setup-deps.sh)" >&2
		return 1
	fi
	echo "$lib"
}
KVT_RUST_LIB_SRC=$(kvt_rust_lib_src "$KVT_RUSTC") || return 1

# The installed version of Debian's linux-source-6.12, the kernels' source
# (empty if it is not installed).
kvt_linux_version() {
	{ dpkg-query -W -f='${Status} ${Version}\n' linux-source-6.12 2>/dev/null || true; } |
		sed -n 's/^install ok installed //p'
}

# KVT_LINUX_VERSION=VERSION pins the kernel source to that Debian version of
# linux-source-6.12 (scripts/setup-deps.sh installs it): another one
# installed stops every build.
kvt_check_linux_version() {
	local have
	[ -n "${KVT_LINUX_VERSION:-}" ] || return 0
	have=$(kvt_linux_version)
	[ "$have" = "$KVT_LINUX_VERSION" ] && return 0
	if [ -n "$have" ]; then have="$have is installed"; else have="is not installed"; fi
	echo "env.sh: KVT_LINUX_VERSION=$KVT_LINUX_VERSION, but linux-source-6.12" \
		"$have; install it with" \
		"KVT_LINUX_VERSION=$KVT_LINUX_VERSION scripts/setup-deps.sh (as root)," \
		"or unset KVT_LINUX_VERSION" >&2
	return 1
}
kvt_check_linux_version || return 1

# One line when linux-source-6.12 is not the version the previous kernel
# build found (kept in $KVT_CACHE/linux-source-6.12.last): it is part of
# every kernel's key (kvt_src_key), so kernels built from the old one are
# not used.
kvt_note_linux_version() {
	local last=$KVT_CACHE/linux-source-6.12.last now was=
	now=$(kvt_linux_version)
	[ -n "$now" ] || return 0
	[ ! -e "$last" ] || was=$(cat "$last")
	if [ -n "$was" ] && [ "$was" != "$now" ]; then
		echo "build-kernel: linux-source-6.12 changed: $was -> $now," \
			"kernels will be rebuilt (unless cached for $now)" >&2
	fi
	[ "$was" = "$now" ] || echo "$now" > "$last"
}

# Arguments every kernel and module make invocation needs.
kvt_kmake_args() {
	local arch=$1
	echo "ARCH=$arch LLVM=1 RUSTC=$KVT_RUSTC BINDGEN=$KVT_BINDGEN RUST_LIB_SRC=$KVT_RUST_LIB_SRC"
}

kvt_cross() {
	case $1 in
	riscv) echo riscv64-linux-gnu- ;;
	arm64) echo aarch64-linux-gnu- ;;
	*) echo "unknown ARCH $1" >&2; return 1 ;;
	esac
}

kvt_image() {
	case $1 in
	riscv) echo arch/riscv/boot/Image ;;
	arm64) echo arch/arm64/boot/Image ;;
	esac
}

kvt_sha() {
	sha256sum | cut -c1-16
}

# The kernel source tree with our patch series applied; keyed by the Debian
# source version and the patches.
kvt_src_key() {
	{
		dpkg-query -W -f='${Version}\n' linux-source-6.12
		cat "$KVT_ROOT"/patches/linux-6.12/*.patch 2>/dev/null || true
	} | kvt_sha
}

# The config fragment of a kernel: configs/ARCH.config, and for a VARIANT
# (debug, rt) configs/VARIANT.config laid over it.  A symbol the variant sets
# (to a value or "is not set") replaces the base's line for it.
kvt_fragment() {
	local arch=$1 variant=${2:-} syms overlay
	if [ -z "$variant" ]; then
		cat "$KVT_ROOT/configs/$arch.config"
		return
	fi
	[ -e "$KVT_ROOT/configs/$variant.config" ] ||
		{ echo "no configs/$variant.config" >&2; return 1; }
	# The variant's options, and those it has on this architecture only
	# (configs/VARIANT-ARCH.config, if any).
	overlay=$(cat "$KVT_ROOT/configs/$variant.config" \
		"$KVT_ROOT/configs/$variant-$arch.config" 2>/dev/null || true)
	syms=$(echo "$overlay" | sed -n -e 's/^\(CONFIG_[A-Za-z0-9_]*\)=.*/\1/p' \
		-e 's/^# \(CONFIG_[A-Za-z0-9_]*\) is not set/\1/p')
	grep -v -w -F "$syms" "$KVT_ROOT/configs/$arch.config" || true
	echo "$overlay"
}

# A built kernel: the source key, the config fragment and the toolchain.
# The plain kernel's key is what it was before variants existed.
kvt_kernel_key() {
	local arch=$1 variant=${2:-}
	{
		kvt_src_key
		kvt_fragment "$arch" "$variant"
		"$KVT_RUSTC" --version
		clang --version | head -n 1
	} | kvt_sha
}

# kernel-ARCH-KEY, or kernel-ARCH-VARIANT-KEY.
kvt_kernel_dir() {
	echo "$KVT_CACHE/kernel-$1${2:+-$2}-$(kvt_kernel_key "$1" "${2:-}")"
}

# Whether a run uses cache entry $1: a .kvt-user-PID file in it (kvt.py's
# claim()) whose process lives.
kvt_in_use() {
	local f
	for f in "$1"/.kvt-user-*; do
		[ -e "$f" ] || continue
		kill -0 "${f##*-}" 2>/dev/null && return 0
	done
	return 1
}

# A private apt root DIR (fetch-debian.sh, build-qemu.sh) whose only source
# is the line SOURCE, so that the machine's /etc/apt is never read or
# changed: its directories, an empty dpkg status, and DIR/apt.conf with the
# settings every root needs, then each further argument as one more line.
# The caller exports APT_CONFIG=DIR/apt.conf.
kvt_apt_root() {
	local dir=$1 source=$2 line
	shift 2
	mkdir -p "$dir/etc/apt/apt.conf.d" "$dir/etc/apt/preferences.d" \
		"$dir/etc/apt/sources.list.d" "$dir/var/lib/apt/lists/partial" \
		"$dir/var/cache/apt/archives/partial" "$dir/var/lib/dpkg" "$dir/var/log/apt"
	: > "$dir/var/lib/dpkg/status"
	echo "$source" > "$dir/etc/apt/sources.list"
	{
		echo "Dir \"$dir/\";"
		echo "Dir::State::status \"$dir/var/lib/dpkg/status\";"
		echo 'Acquire::Languages "none";'
		echo 'APT::Sandbox::User "root";'
		for line in "$@"; do echo "$line"; done
	} > "$dir/apt.conf"
}

# Drop cache entries that are no longer useful: unfinished builds older
# than KVT_BUILDING_MIN minutes; all but the newest two kernels and three
# selftest builds per architecture and variant (the name without its -KEY),
# and all but the newest two patched QEMUs (scripts/build-qemu.sh), that no
# run uses now; and sources no kept kernel was built from.  Runs
# under the cache lock.
: "${KVT_BUILDING_MIN:=120}"
kvt_prune() {
	local kind keep d group
	for kind in kernel selftests qemu; do
		keep=2
		[ "$kind" = selftests ] && keep=3
		for d in "$KVT_CACHE/$kind-"*; do
			[ -d "$d" ] || continue
			[ -e "$d/.kvt-ready" ] && continue
			# Unfinished: a build that failed, or one that runs now
			# (selftests build outside the lock): only an old one goes.
			[ -n "$(find "$d" -maxdepth 0 -mmin -"$KVT_BUILDING_MIN")" ] || rm -rf "$d"
		done
		# Newest first; none at all is fine (a fresh cache).
		# shellcheck disable=SC2012
		{ ls -dt "$KVT_CACHE/$kind-"* 2>/dev/null || true; } |
			while read -r d; do
				group=${d%-*}
				echo "$group $d"
			done | awk -v keep="$keep" '++n[$1] > keep { print $2 }' |
			while read -r d; do
				[ -e "$d/.kvt-ready" ] || continue
				kvt_in_use "$d" || rm -rf "$d"
			done
	done
	for d in "$KVT_CACHE"/src-*; do
		[ -d "$d" ] || continue
		case $d in *.tmp) continue ;; esac
		if ! readlink "$KVT_CACHE"/kernel-*/source 2>/dev/null | grep -qx "$d"; then
			[ "$d" = "${KVT_SRC_IN_USE:-}" ] || rm -rf "$d"
		fi
	done
}
