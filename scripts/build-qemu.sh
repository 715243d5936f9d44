#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# build-qemu.sh: build (or reuse) the emulated host's QEMU with the fixes in
# patches/qemu, for the configs whose plan entry says `qemu_build = true`
# (arm64-ecv: QEMU 10.0 does not apply CNTPOFF_EL2 on a CPU without EL3;
# Documentation/arm64.rst, "QEMU and CNTPOFF").
#
# The source is Debian's: trixie's qemu source package, fetched through a
# private apt root ($KVT_CACHE/apt-src-trixie; the machine's apt sources are
# not touched), unpacked with Debian's own patches, then ours.  Only
# qemu-system-aarch64 is built, for the virt machine, with TCG.  The result
# lives in the cache, keyed by the source version, our patches and this
# script; the last line printed is the QEMU binary.  Offline, the newest
# built one is reused with a warning.
set -euo pipefail
. "$(dirname "$0")/env.sh"

mkdir -p "$KVT_CACHE"
exec 9>"$KVT_CACHE/.qemu-lock"
flock 9

keyring=/usr/share/keyrings/debian-archive-keyring.gpg
aptroot=$KVT_CACHE/apt-src-trixie
kvt_apt_root "$aptroot" \
	"deb-src [signed-by=$keyring] http://deb.debian.org/debian trixie main"
export APT_CONFIG=$aptroot/apt.conf

newest_ready() {
	# shellcheck disable=SC2012
	ls -dt "$KVT_CACHE"/qemu-aarch64-*/.kvt-ready 2>/dev/null | head -n 1 || true
}

version=
if apt-get -qq update --error-on=any >&2; then
	version=$(apt-cache showsrc qemu 2>/dev/null | sed -n 's/^Version: //p' |
		sort -V | tail -n 1)
fi
if [ -z "$version" ]; then
	ready=$(newest_ready)
	if [ -n "$ready" ]; then
		echo "build-qemu: WARNING: no source version from apt; reusing" \
			"${ready%/.kvt-ready}" >&2
		echo "${ready%/.kvt-ready}/qemu-system-aarch64"
		exit 0
	fi
	echo "build-qemu: no qemu source package in trixie, and no built QEMU" >&2
	exit 1
fi

key=$({
	echo "$version"
	cat "$KVT_ROOT"/patches/qemu/*.patch
	cat "$0"
} | kvt_sha)
out=$KVT_CACHE/qemu-aarch64-$key
if [ -e "$out/.kvt-ready" ]; then
	echo "build-qemu: QEMU $version (patched) is cached" >&2
	echo "$out/qemu-system-aarch64"
	exit 0
fi

start=$SECONDS
rm -rf "$out"
mkdir -p "$out/dl"
echo "build-qemu: fetching the source of qemu $version" >&2
(cd "$out/dl" && apt-get -qq source --download-only "qemu=$version" >&2)
if ! dpkg-source -x "$out"/dl/qemu_*.dsc "$out/src" > "$out/unpack.log" 2>&1; then
	cat "$out/unpack.log" >&2
	exit 1
fi
for p in "$KVT_ROOT"/patches/qemu/*.patch; do
	echo "build-qemu: applying $(basename "$p")" >&2
	patch -d "$out/src" -p1 --batch --forward --quiet < "$p"
done

# QEMU 10.0 wants meson >= 1.5 (bookworm has 1.0): a venv of ours, which
# QEMU's own build venv inherits.
venv=$KVT_CACHE/meson-venv
if ! "$venv/bin/meson" --version 2>/dev/null | grep -q '^1\.5\.'; then
	rm -rf "$venv"
	python3 -m venv "$venv"
	"$venv/bin/pip" -q install 'meson==1.5.2' >&2
fi

# configure's and ninja's output go to a log, shown only on failure.
mkdir -p "$out/build"
log=$out/build.log
echo "build-qemu: building qemu-system-aarch64 (log: $log)" >&2
if ! (
	cd "$out/build"
	"$out/src/configure" --python="$venv/bin/python3" \
		--target-list=aarch64-softmmu --with-devices-aarch64=minimal \
		--without-default-features --without-default-devices \
		--enable-tcg --enable-fdt=system --disable-docs \
		--disable-install-blobs --disable-download --disable-werror \
		--with-pkgversion="Debian $version + kvm-vtimer patches/qemu"
	ninja -j "$KVT_JOBS" qemu-system-aarch64
) > "$log" 2>&1; then
	tail -n 40 "$log" >&2
	echo "build-qemu: the build failed; the whole log is $log" >&2
	exit 1
fi
cp "$out/build/qemu-system-aarch64" "$out/"
rm -rf "$out/dl" "$out/src" "$out/build" "$log" "$out/unpack.log"
echo "$version" > "$out/version"
touch "$out/.kvt-ready"
echo "build-qemu: QEMU $version built in $((SECONDS - start)) s" >&2
echo "$out/qemu-system-aarch64"
