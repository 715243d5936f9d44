#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Install everything the test bed needs on a Debian bookworm machine.
# Idempotent: a second run checks and installs nothing.
set -euo pipefail

APT_BACKPORTS="clang-19 lld-19 llvm-19 libclang-19-dev qemu-system-misc qemu-system-arm"
# The second line of APT_MAIN builds arm64-ecv's patched QEMU
# (scripts/build-qemu.sh; meson comes from PyPI into its own venv).
APT_MAIN="make flex bison bc libelf-dev libssl-dev cpio xz-utils python3 rsync
	gcc-riscv64-linux-gnu gcc-aarch64-linux-gnu libc6-dev-riscv64-cross
	libc6-dev-arm64-cross rustc-web rust-web-src
	dpkg-dev ninja-build pkg-config python3-venv libglib2.0-dev libpixman-1-dev
	libfdt-dev"
# The kernels' source; KVT_LINUX_VERSION=VERSION installs exactly that
# Debian version (env.sh then refuses any other).
LINUX_SOURCE=linux-source-6.12
# The Rust tools the scripts run, as COMMAND:PACKAGE: cargo (`cargo install
# bindgen-cli`, `make host-test`) and rustfmt (the style test).  A machine
# with rustup has them in ~/.cargo/bin; else Debian's, of the same version as
# rustc-web (which they require).
RUST_TOOLS="cargo:cargo-web rustfmt:rustfmt-web"
BINDGEN_VERSION=0.73.1
BACKPORTS_LIST=/etc/apt/sources.list.d/kvm-vtimer-backports.sources

missing() {
	local p
	for p in "$@"; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
			grep -q 'install ok installed' || echo "$p"
	done
}

# The installed version of package $1, empty if it is not installed.
installed_version() {
	{ dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null || true; } |
		sed -n 's/^install ok installed //p'
}

# A command on PATH or in ~/.cargo/bin (rustup's, cargo install's).
have() {
	command -v "$1" >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/$1" ]
}

# shellcheck disable=SC2086
need_bp=$(missing $APT_BACKPORTS)
# shellcheck disable=SC2086
need_main=$(missing $APT_MAIN)
if [ -n "${KVT_LINUX_VERSION:-}" ]; then
	need_linux=
	[ "$(installed_version "$LINUX_SOURCE")" = "$KVT_LINUX_VERSION" ] ||
		need_linux=$LINUX_SOURCE=$KVT_LINUX_VERSION
else
	need_linux=$(missing "$LINUX_SOURCE")
fi
need_rust=
for t in $RUST_TOOLS; do
	have "${t%%:*}" || need_rust="$need_rust ${t#*:}"
done
need_rust=${need_rust# }
need_bindgen=
have bindgen || need_bindgen=1

if [ -z "$need_bp$need_main$need_linux$need_rust$need_bindgen" ]; then
	echo "setup-deps: everything is installed"
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	# shellcheck disable=SC2086
	echo "setup-deps: missing:" $need_bp $need_main $need_linux $need_rust \
		${need_bindgen:+bindgen-cli} >&2
	echo "setup-deps: run as root: sudo" \
		"${KVT_LINUX_VERSION:+KVT_LINUX_VERSION=$KVT_LINUX_VERSION }$0" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if [ -n "$need_bp$need_main$need_linux$need_rust" ]; then
	if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		cat > "$BACKPORTS_LIST" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	fi
	apt-get update -q
	# shellcheck disable=SC2086
	[ -z "$need_main" ] || apt-get install -y -q --no-install-recommends $need_main
	# shellcheck disable=SC2086
	[ -z "$need_bp" ] || apt-get install -y -q --no-install-recommends -t bookworm-backports $need_bp
fi

if [ -n "$need_linux" ] && [ -n "${KVT_LINUX_VERSION:-}" ]; then
	# Older or newer than the installed one; it must still be in the archive.
	if ! apt-cache show "$need_linux" >/dev/null 2>&1; then
		echo "setup-deps: KVT_LINUX_VERSION=$KVT_LINUX_VERSION: no such $LINUX_SOURCE" \
			"in the apt sources; they have:" \
			"$(apt-cache madison "$LINUX_SOURCE" | awk '{ print $3 }' | paste -sd ' ')" >&2
		exit 1
	fi
	echo "setup-deps: installing $LINUX_SOURCE $KVT_LINUX_VERSION" \
		"(KVT_LINUX_VERSION; was: $(installed_version "$LINUX_SOURCE" | grep . || echo none))"
	apt-get install -y -q --no-install-recommends --allow-downgrades "$need_linux"
elif [ -n "$need_linux" ]; then
	apt-get install -y -q --no-install-recommends "$need_linux"
fi

if [ -n "$need_rust" ]; then
	# rustc-web's version exactly: a newer cargo-web would upgrade rustc-web,
	# and with it the key of every cached kernel.
	rust_version=$(dpkg-query -W -f='${Version}' rustc-web)
	pkgs=
	for p in $need_rust; do pkgs="$pkgs $p=$rust_version"; done
	# shellcheck disable=SC2086
	if ! apt-get install -y -q --no-install-recommends $pkgs; then
		echo "setup-deps: could not install${pkgs} (the cargo and rustfmt of" \
			"rustc-web $rust_version)." >&2
		echo "setup-deps: install them (apt-get install${pkgs}) or rustup's" \
			"cargo and rustfmt (in ~/.cargo/bin), then run $0 again" >&2
		exit 1
	fi
fi

if [ -n "$need_bindgen" ]; then
	cargo=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
	if [ ! -x "$cargo" ]; then
		echo "setup-deps: no cargo to install bindgen-cli with:" \
			"apt-get install cargo-web, or rustup's in ~/.cargo/bin" >&2
		exit 1
	fi
	LIBCLANG_PATH=$(llvm-config-19 --libdir) \
		"$cargo" install --locked --version "$BINDGEN_VERSION" bindgen-cli
fi
echo "setup-deps: done"
