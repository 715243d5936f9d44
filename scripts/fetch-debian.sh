#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# fetch-debian.sh ARCH: fetch (or reuse) Debian trixie userspace and a guest
# kernel for ARCH (riscv or arm64), for the emulated host's initramfs:
#
#   vmm/           rootfs: qemu-system-riscv64 / qemu-system-aarch64, busybox
#   guest/         rootfs for the L2 guest: busybox, cyclictest, stress-ng
#   guest-kernel   Debian's linux-image-ARCH kernel, loadable by -kernel
#   guest-kernel.config  its config
#   versions.txt   "package version arch" of every .deb unpacked
#   sets.txt       "set package" for every .deb unpacked (vmm, guest, kernel)
#   resolved.txt   "set package version arch" of everything apt resolved
#   unused.txt     the resolved packages not unpacked (see below)
#
# apt runs on a private root ($KVT_CACHE/apt-trixie-ARCH: its own sources,
# lists, empty dpkg status and .deb cache), so the machine's apt state is
# never touched and nothing Essential is forced in.  Packages are unpacked
# with dpkg-deb -x; no maintainer script runs.
#
# Of each set's resolved closure only what the binaries need is unpacked:
# the set's own packages, then, until nothing changes, every package that
# holds a library some unpacked ELF file NEEDs (plus libgcc-s1, which glibc
# dlopens, and opensbi, the target of a qemu-system-riscv symlink).  That
# leaves out what the binaries never load: adduser/passwd/PAM (maintainer
# scripts), python3 (rt-tests' hwlatdetect), mesa's GBM backend with LLVM
# (dlopened, stress-ng's GPU stressor only; libgbm1's gbm/ is removed),
# qemu-system-data (ROMs and keymaps for other machines, VNC).  Every
# dynamic ELF file of each rootfs is then checked: its interpreter and all
# its NEEDED libraries must resolve inside the rootfs.
#
# The result is keyed by the resolved package versions and this script; the
# last line printed is its directory.
set -euo pipefail
arch=${1:?usage: fetch-debian.sh riscv|arm64}
. "$(dirname "$0")/env.sh"

case $arch in
riscv)
	darch=riscv64 triplet=riscv64-linux-gnu
	qemu_pkg=qemu-system-riscv qemu_bin=qemu-system-riscv64
	qemu_unused=qemu-system-riscv32
	;;
arm64)
	darch=arm64 triplet=aarch64-linux-gnu
	qemu_pkg=qemu-system-arm qemu_bin=qemu-system-aarch64
	qemu_unused=qemu-system-arm
	;;
*) echo "fetch-debian: unknown ARCH $arch" >&2; exit 1 ;;
esac
vmm_pkgs="$qemu_pkg qemu-system-common busybox-static"
vmm_bins="usr/bin/$qemu_bin usr/bin/busybox"
guest_pkgs="busybox-static rt-tests stress-ng"
guest_bins="usr/bin/busybox usr/bin/cyclictest usr/bin/stress-ng"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
script=$(readlink -f "$0")

mkdir -p "$KVT_CACHE"
exec 9>"$KVT_CACHE/.debian-lock"
flock 9
start=$SECONDS

# The private apt root.
aptroot=$KVT_CACHE/apt-trixie-$arch
archives=$aptroot/var/cache/apt/archives
# Read first (APT_CONFIG), so the machine's /etc/apt is never read.
kvt_apt_root "$aptroot" \
	"deb [signed-by=$keyring] http://deb.debian.org/debian trixie main" \
	"APT::Architecture \"$darch\";" "APT::Architectures { \"$darch\"; };" \
	'pkgCacheGen::Essential "none";' 'APT::Install-Recommends "false";' \
	'APT::Install-Suggests "false";'
export APT_CONFIG=$aptroot/apt.conf

# Offline, reuse the newest result; without one, try the lists and .debs
# of the last successful update.
if ! apt-get -qq update --error-on=any >&2; then
	# shellcheck disable=SC2012
	ready=$(ls -dt "$KVT_CACHE/debian-$arch-"*/.kvt-ready 2>/dev/null | head -n 1 || true)
	if [ -n "$ready" ]; then
		echo "fetch-debian: WARNING: apt-get update failed; reusing ${ready%/.kvt-ready}" >&2
		echo "${ready%/.kvt-ready}"
		exit 0
	fi
	echo "fetch-debian: WARNING: apt-get update failed; trying the cached lists" >&2
fi

# "SET package version arch" for everything apt would install for PKGS.
resolve() {
	local set=$1
	shift
	apt-get -q -s install --no-install-recommends "$@" |
		sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) [^[]*\[\([^]]*\)\]).*/\1 \2 \3/p' |
		sort | sed "s/^/$set /"
}
# shellcheck disable=SC2086
vmm_res=$(resolve vmm $vmm_pkgs)
# shellcheck disable=SC2086
guest_res=$(resolve guest $guest_pkgs)
# The metapackage's real image only; its dependencies (kmod,
# initramfs-tools, ...) are not wanted.
kernel_res=$(resolve kernel "linux-image-$darch" | awk '$2 ~ /^linux-image-[0-9]/')
resolved=$(printf '%s\n' "$vmm_res" "$guest_res" "$kernel_res")
kernel_line=$(awk '$1 == "kernel"' <<< "$resolved")
if [ -z "$kernel_line" ] || [ "$(wc -l <<< "$kernel_line")" != 1 ]; then
	echo "fetch-debian: no single linux-image-6.* for linux-image-$darch" >&2
	exit 1
fi
read -r _ kpkg kver _ <<< "$kernel_line"

key=$({ echo "$resolved"; sha256sum < "$script"; } | kvt_sha)
out=$KVT_CACHE/debian-$arch-$key
if [ -e "$out/.kvt-ready" ]; then
	echo "fetch-debian: $arch trixie packages are cached" >&2
	echo "$out"
	exit 0
fi

# Download (or find in the private cache) every resolved .deb.
# shellcheck disable=SC2086
apt-get -qq install --download-only -y --no-install-recommends $vmm_pkgs >&2
# shellcheck disable=SC2086
apt-get -qq install --download-only -y --no-install-recommends $guest_pkgs >&2
deb_of() { echo "$archives/${1}_${2//:/%3a}_$3.deb"; }
if [ ! -e "$(deb_of "$kpkg" "$kver" "$darch")" ]; then
	(cd "$archives/partial" && apt-get -qq download "$kpkg=$kver" >&2 &&
		mv "$(basename "$(deb_of "$kpkg" "$kver" "$darch")")" ..)
fi
while read -r _ p v a; do
	[ -e "$(deb_of "$p" "$v" "$a")" ] ||
		{ echo "fetch-debian: $(deb_of "$p" "$v" "$a") was not downloaded" >&2; exit 1; }
done <<< "$resolved"

echo "fetch-debian: building $out" >&2
tmp=$out.tmp
rm -rf "$out" "$tmp"
mkdir -p "$tmp/stage"
echo "$resolved" > "$tmp/resolved.txt"

# "soname package" for the libraries of every resolved package.
awk '$1 != "kernel" { print $2, $3, $4 }' "$tmp/resolved.txt" | sort -u |
	while read -r p v a; do
		dpkg-deb --fsys-tarfile "$(deb_of "$p" "$v" "$a")" | tar -t |
			sed -n -e "s|^\./\(usr/\)\{0,1\}lib/$triplet/\([^/]*\.so[^/]*\)\$|\2 $p|p" \
				-e "s|^\./\(usr/\)\{0,1\}lib/\([^/]*\.so[^/]*\)\$|\2 $p|p"
	done > "$tmp/libindex"

# Unpack one package into stage/PACKAGE: /bin, /lib, ... moved under /usr,
# documentation and what the VMM never loads removed.
unpack() {
	local p=$1 s=$tmp/stage/$1 v a d
	[ -d "$s" ] && return 0
	read -r _ _ v a < <(awk -v p="$p" '$2 == p' "$tmp/resolved.txt" | head -n 1)
	mkdir -p "$s"
	dpkg-deb -x "$(deb_of "$p" "$v" "$a")" "$s"
	for d in bin sbin lib lib32 lib64 libx32; do
		if [ ! -d "$s/$d" ] || [ -L "$s/$d" ]; then continue; fi
		mkdir -p "$s/usr/$d"
		cp -a "$s/$d/." "$s/usr/$d/"
		rm -rf "${s:?}/$d"
	done
	rm -rf "$s"/usr/share/{doc,doc-base,man,info,locale,lintian,bug} \
		"$s"/usr/share/{bash-completion,applications,icons,pixmaps,menu} \
		"$s"/usr/share/initramfs-tools
	case $p in
	"$qemu_pkg")
		# The other-width emulator (and its aliases); opensbi for riscv32.
		rm -f "$s/usr/bin/$qemu_unused" "$s"/usr/share/qemu/opensbi-riscv32-*
		find "$s/usr/bin" -lname "$qemu_unused" -delete
		;;
	qemu-system-common)
		# For scripts/simpletrace.py, never read by QEMU.
		rm -f "$s/usr/share/qemu/trace-events-all"
		;;
	libc6)
		# iconv modules for charsets other than the ones built into
		# libc (UTF-8, ASCII, Latin-1, UCS): 6 MB on riscv64, 19 MB on
		# arm64 (64K-aligned), and nothing here converts to them.
		rm -rf "$s/usr/lib/$triplet/gconv"
		;;
	libgbm1)
		# mesa's dlopened GBM backend (-> libgallium -> libLLVM):
		# only stress-ng's GPU stressor would load it, and the guest
		# has no GPU.
		rm -rf "$s/usr/lib/$triplet/gbm"
		;;
	opensbi)
		# -bios default's target of usr/share/qemu/opensbi-riscv64-*
		# (KVM forces -bios none): keep just that one.
		find "$s/usr/lib" -type f ! -path "*/$triplet/opensbi/generic/fw_dynamic.bin" -delete
		find "$s/usr/lib" -depth -type d -empty -delete
		;;
	esac
	find "$s" -depth -type d -empty -delete
	mkdir -p "$s"
}

# The NEEDED sonames of the ELF files under DIR.
needed() {
	find "$1" -type f -print0 | xargs -0r readelf -d -W /dev/null 2>/dev/null |
		sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p' | sort -u
}

# select_set SET PACKAGE...: unpack the set's packages and the fixpoint of
# the providers of their NEEDED libraries; print the chosen packages.
select_set() {
	local set=$1 p n q
	shift
	local -A chosen=() have=()
	local queue=("$@")
	# Not NEEDED but used: libgcc_s (dlopened by glibc), the target of
	# usr/share/qemu/opensbi-riscv64-* (-bios default).
	for p in libgcc-s1 opensbi; do
		if awk -v s="$set" -v p="$p" '$1 == s && $2 == p { f = 1 } END { exit !f }' \
			"$tmp/resolved.txt"; then
			queue+=("$p")
		fi
	done
	for p in "${queue[@]}"; do chosen[$p]=1; done
	while [ ${#queue[@]} -gt 0 ]; do
		p=${queue[0]}
		queue=("${queue[@]:1}")
		unpack "$p"
		while read -r n; do
			if [ -z "$n" ] || [ -n "${have[$n]:-}" ]; then continue; fi
			have[$n]=1
			q=$(awk -v n="$n" '$1 == n { print $2 }' "$tmp/libindex" |
				while read -r q; do
					awk -v s="$set" -v q="$q" '$1 == s && $2 == q { print q; exit }' \
						"$tmp/resolved.txt"
				done | awk 'NR == 1')
			# None: the check below reports it.
			if [ -z "$q" ] || [ -n "${chosen[$q]:-}" ]; then continue; fi
			chosen[$q]=1
			queue+=("$q")
		done < <(needed "$tmp/stage/$p")
	done
	printf '%s\n' "${!chosen[@]}" | sort
}

# in_root ROOT PATH: PATH resolved inside ROOT (symlinks, absolute ones
# too, followed as the target system would); fails if it does not exist.
in_root() {
	local root=$1 rest=${2#/} out='' comp t n=0
	while [ -n "$rest" ]; do
		comp=${rest%%/*}
		if [ "$comp" = "$rest" ]; then rest=; else rest=${rest#*/}; fi
		case $comp in
		'' | .) continue ;;
		..) out=${out%/*}; continue ;;
		esac
		if [ -L "$root$out/$comp" ]; then
			n=$((n + 1))
			[ $n -le 40 ] || return 1
			t=$(readlink "$root$out/$comp")
			case $t in
			/*) out='' rest=${t#/}${rest:+/$rest} ;;
			*) rest=$t${rest:+/$rest} ;;
			esac
		else
			out=$out/$comp
		fi
	done
	[ -e "$root$out" ] && echo "$root$out"
}

# check_root ROOT BINARY...: the binaries exist; every dynamic ELF file's
# interpreter and NEEDED libraries resolve inside ROOT (RUNPATH, with
# $ORIGIN, then ld.so's default /usr/lib/TRIPLET and /usr/lib: there is no
# ld.so.cache).
check_root() {
	local root=$1 bad=0 f kind val runpath d found b
	shift
	for b in "$@"; do
		[ -f "$root/$b" ] || { echo "fetch-debian: MISSING /$b in $root" >&2; bad=1; }
	done
	while IFS=$'\t' read -r f kind val runpath; do
		found=
		case $kind in
		interp) in_root "$root" "$val" > /dev/null && found=1 ;;
		needed)
			if [[ $val == */* ]]; then
				in_root "$root" "$val" > /dev/null && found=1
			else
				for d in ${runpath//:/ } /usr/lib/$triplet /usr/lib; do
					in_root "$root" "$d/$val" > /dev/null && { found=1; break; }
				done
			fi
			;;
		esac
		[ -n "$found" ] || {
			echo "fetch-debian: MISSING $kind $val of $f" >&2
			bad=1
		}
	done < <(find "$root" -type f -print0 | xargs -0r readelf -d -l -W /dev/null 2>/dev/null |
		awk -v OFS='\t' -v root="$root" '
			function flush(  i, dir) {
				dir = f; sub(/\/[^\/]*$/, "", dir)
				gsub(/\$ORIGIN|\$\{ORIGIN\}/, dir, rp)
				for (i = 1; i <= n; i++) print f, "needed", need[i], rp
				n = 0; rp = ""
			}
			function val(  v) { v = $0; sub(/.*\[/, "", v); sub(/\]$/, "", v); return v }
			/^File: / { flush(); f = substr($0, 7); if (index(f, root) == 1) f = substr(f, length(root) + 1) }
			/Requesting program interpreter:/ { v = $0; sub(/.*interpreter: /, "", v); sub(/\]$/, "", v); print f, "interp", v }
			/\(NEEDED\)/ { need[++n] = val() }
			/\((RUNPATH|RPATH)\)/ { rp = val() }
			END { flush() }')
	while IFS= read -r -d '' f; do
		in_root "$root" "/${f#"$root"/}" > /dev/null ||
			echo "fetch-debian: warning: dangling symlink ${f#"$root"} -> $(readlink "$f")" >&2
	done < <(find "$root" -type l -print0)
	[ $bad = 0 ] || { echo "fetch-debian: $root is incomplete" >&2; exit 1; }
}

# Assemble a merged-/usr rootfs from staged packages.
assemble() {
	local root=$1 p
	shift
	mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib"
	ln -s usr/bin "$root/bin"
	ln -s usr/sbin "$root/sbin"
	ln -s usr/lib "$root/lib"
	for p in "$@"; do cp -a "$tmp/stage/$p/." "$root/"; done
	if [ -d "$root/usr/lib64" ]; then ln -s usr/lib64 "$root/lib64"; fi
}

: > "$tmp/sets.txt"
for set in vmm guest; do
	if [ $set = vmm ]; then pkgs=$vmm_pkgs bins=$vmm_bins; else pkgs=$guest_pkgs bins=$guest_bins; fi
	# shellcheck disable=SC2086
	members=$(select_set "$set" $pkgs)
	# shellcheck disable=SC2086
	assemble "$tmp/$set" $members
	# shellcheck disable=SC2086
	check_root "$tmp/$set" $bins
	for b in $bins; do
		interp=$(readelf -l -W "$tmp/$set/$b" 2>/dev/null |
			sed -n 's/.*interpreter: \(.*\)\]$/\1/p')
		echo "fetch-debian: $set: /$b: ${interp:-static}" >&2
	done
	awk -v s=$set '{ print s, $0 }' <<< "$members" >> "$tmp/sets.txt"
done

# The guest kernel: only the image (and its config) from the package.
mkdir -p "$tmp/kernel"
dpkg-deb --fsys-tarfile "$(deb_of "$kpkg" "$kver" "$darch")" |
	tar -x -C "$tmp/kernel" --wildcards './boot/vmlinu*' './boot/config-*'
image=$(find "$tmp/kernel/boot" -name 'vmlinu*' | awk 'NR == 1')
magic=$(head -c 2 "$image" | od -An -tx1 | tr -d ' \n')
if [ "$arch" = riscv ] && [ "$magic" = 1f8b ]; then
	# QEMU's riscv -kernel loads ELF, uImage or a flat Image, not gzip.
	gunzip -c < "$image" > "$tmp/guest-kernel"
else
	cp "$image" "$tmp/guest-kernel"
fi
cp "$tmp/kernel/boot/config-"* "$tmp/guest-kernel.config"
echo "fetch-debian: guest kernel from ${image#"$tmp/kernel"}: $(file -b "$tmp/guest-kernel")" >&2
echo "kernel $kpkg" >> "$tmp/sets.txt"
rm -rf "$tmp/kernel" "$tmp/stage" "$tmp/libindex"

sort -o "$tmp/sets.txt" "$tmp/sets.txt"
awk '{ print $2 }' "$tmp/sets.txt" | sort -u |
	while read -r p; do
		awk -v p="$p" '$2 == p { print $2, $3, $4; exit }' "$tmp/resolved.txt"
	done > "$tmp/versions.txt"
awk 'NR == FNR { u[$1 " " $2] = 1; next } !(($1 " " $2) in u)' \
	"$tmp/sets.txt" "$tmp/resolved.txt" > "$tmp/unused.txt"

mb() { du -s --apparent-size --block-size=1M "$1" | cut -f1; }
echo "fetch-debian: vmm $(mb "$tmp/vmm") MB, guest $(mb "$tmp/guest") MB," \
	"guest-kernel $(mb "$tmp/guest-kernel") MB; $(wc -l < "$tmp/unused.txt") resolved packages not needed" >&2
touch "$tmp/.kvt-ready"
mv "$tmp" "$out"

# Keep the newest two results; drop .debs no longer in the archive.
for d in "$KVT_CACHE/debian-$arch-"*; do
	[ -e "$d/.kvt-ready" ] || rm -rf "$d"
done
# shellcheck disable=SC2012
ls -dt "$KVT_CACHE/debian-$arch-"* | tail -n +3 | while read -r d; do rm -rf "$d"; done
apt-get -qq autoclean > /dev/null
echo "fetch-debian: $arch done in $((SECONDS - start)) s" >&2
echo "$out"
