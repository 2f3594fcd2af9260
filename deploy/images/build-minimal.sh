#!/usr/bin/env bash
# build-minimal.sh [--force] [OUT_DIR]
#
# Builds the "minimal" guest image from Debian packages only (apt-get download + dpkg-deb -x):
#   OUT_DIR/vmlinuz       the Debian cloud kernel (bzImage) that linux-image-cloud-amd64 depends on
#   OUT_DIR/initrd.img    gzip'd cpio: busybox-static, dropbear, the virtio/vfat/iso9660/ACPI
#                         button modules and /init (deploy/images/minimal/rootfs), which reads a
#                         NoCloud config drive (label CIDATA), then runs dropbear
#   OUT_DIR/manifest.json kernel version, package versions, sha256 of each file, the kernel
#                         command line to use, the inputs hash
#   OUT_DIR/SHA256SUMS    sha256sum -c format, for the cache check
# Default OUT_DIR: /var/cache/cloud/images/minimal. Skips the build when OUT_DIR already holds a
# complete image made from the same inputs (this script, minimal/rootfs, lib.sh, the .deb files
# apt would download); --force (or FORCE=1) rebuilds anyway. Writes OUT_DIR.tmp, then renames.
# Needs root. See deploy/images/README.md.
set -euo pipefail

# shellcheck disable=SC2034 # used by log/die in lib.sh
IMAGE=build-minimal
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$SCRIPT_DIR/lib.sh"

usage() {
	sed -n '2,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
	exit "${1:-0}"
}

FORCE=${FORCE:-0}
OUT_DIR=
while (($#)); do
	case $1 in
	--force) FORCE=1 ;;
	-h | --help) usage 0 ;;
	-*) usage 2 >&2 ;;
	*)
		[[ -z $OUT_DIR ]] || usage 2 >&2
		OUT_DIR=$1
		;;
	esac
	shift
done
OUT_DIR=$(make_abs "${OUT_DIR:-/var/cache/cloud/images/minimal}")
OUT_DIR=${OUT_DIR%/}

# The kernel command line the VMM should pass (it adds its own extras, e.g. tsc_early_khz=).
CMDLINE="console=ttyS0 quiet cryptomgr.notests"
KERNEL_META=linux-image-cloud-amd64
# Userland packages. libgmp10 is needed by dropbear but is not a declared dependency of
# dropbear-bin; the library closure is checked below with the image's own loader.
# qemu-guest-agent lets the host re-address a guest restored from memory under a new address;
# the libraries after it are its closure (glib and what glib needs).
USER_PACKAGES=(busybox-static dropbear-bin libtomcrypt1 libtommath1 libgmp10 zlib1g libcrypt1 libc6
	qemu-guest-agent libglib2.0-0 libnuma1 libudev1 liburing2 libpcre2-8-0)
# Kernel modules to load at boot, in this order (busybox modprobe pulls in the dependencies:
# virtio, virtio_ring, virtio_pci_modern_dev/legacy_dev, failover/net_failover, fat, cdrom).
# virtio_pci for q35/pc (virtio-*-pci), virtio_mmio for microvm (virtio-*-device); virtio_rng
# first so the SSH host key generation never waits for entropy; button+evdev let acpid see the
# ACPI power button (QMP system_powerdown). ext4/jbd2/mbcache/crc16/crc32c_generic are wanted
# for a data disk and are accepted when built into the kernel (they are in the Debian cloud kernel).
MODULES=(
	virtio_mmio virtio_pci virtio_rng virtio_blk virtio_net
	vfat nls_cp437 nls_ascii nls_utf8 isofs
	ext4 jbd2 mbcache crc16 crc32c_generic
	button evdev
)
# Modules in the image but loaded later, off the boot's path: virtio_console (the guest agent's
# virtio-serial port) is loaded by usr/lib/cloud-minimal/guest-agent once SSH answers.
LATE_MODULES=(virtio_console)
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}

require_root
ensure_tools dpkg-deb:dpkg apt-get:apt cpio:cpio depmod:kmod modprobe:kmod gzip:gzip \
	sha256sum:coreutils chroot:coreutils find:findutils flock:util-linux

# --- resolve the inputs ---
apt_ready "$KERNEL_META"
KERNEL_PKG=$(apt-cache depends "$KERNEL_META" | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
[[ -n $KERNEL_PKG ]] || die "cannot resolve the kernel package $KERNEL_META depends on"
KVER=${KERNEL_PKG#linux-image-}
PACKAGES=("$KERNEL_PKG" "${USER_PACKAGES[@]}")
for p in "${PACKAGES[@]}"; do apt_ready "$p"; done
URIS=$(apt_uris "${PACKAGES[@]}")
[[ $(wc -l <<<"$URIS") -eq ${#PACKAGES[@]} ]] || die "apt-get download --print-uris did not list every package"

INPUTS_HASH=$(
	{
		echo "cloud-images minimal format 1"
		echo "cmdline $CMDLINE"
		echo "modules ${MODULES[*]} late ${LATE_MODULES[*]}"
		echo "packages ${PACKAGES[*]}"
		printf 'deb %s\n' "$URIS"
		printf 'script %s\n' "$(sha256_of "$SCRIPT_DIR/build-minimal.sh")" "$(sha256_of "$SCRIPT_DIR/lib.sh")"
		tree_digest "$SCRIPT_DIR/minimal/rootfs"
	} | sha256sum | cut -d' ' -f1
)
log "kernel $KERNEL_PKG, inputs $INPUTS_HASH"

take_lock "$OUT_DIR"
if [[ $FORCE != 1 ]] && up_to_date "$OUT_DIR" "$INPUTS_HASH"; then
	log "$OUT_DIR is up to date (inputs $INPUTS_HASH): nothing to do"
	exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/build-minimal.XXXXXX")
chmod 0755 "$WORK" # apt-get download runs as _apt and must reach $WORK/debs
cleanup() { rm -rf "$WORK" "$OUT_DIR.tmp"; }
trap cleanup EXIT

# --- download and unpack ---
log "downloading ${#PACKAGES[@]} packages"
download_debs "$WORK/debs" "${PACKAGES[@]}"
PKGROOT=$WORK/pkgs
mkdir -p "$PKGROOT"
PKG_JSON=()
for deb in "$WORK"/debs/*.deb; do
	name=$(dpkg-deb -f "$deb" Package)
	version=$(dpkg-deb -f "$deb" Version)
	log "unpacking $name $version"
	dpkg-deb -x "$deb" "$PKGROOT"
	PKG_JSON+=("{\"name\": $(json_str "$name"), \"version\": $(json_str "$version"), \"deb\": $(json_str "$(basename "$deb")"), \"sha256\": \"$(sha256_of "$deb")\"}")
	if [[ $name == "$KERNEL_PKG" ]]; then KERNEL_PKG_VERSION=$version; fi
done
[[ -n ${KERNEL_PKG_VERSION:-} ]] || die "the kernel package was not downloaded"
VMLINUZ=$PKGROOT/boot/vmlinuz-$KVER
[[ -f $VMLINUZ ]] || die "no /boot/vmlinuz-$KVER in $KERNEL_PKG"
# packages after the /usr merge ship /usr/lib/modules: depmod -b wants <base>/lib/modules
if [[ ! -d $PKGROOT/lib/modules/$KVER && -d $PKGROOT/usr/lib/modules/$KVER ]]; then
	mkdir -p "$PKGROOT/lib"
	ln -s ../usr/lib/modules "$PKGROOT/lib/modules"
fi
MODDIR=$PKGROOT/lib/modules/$KVER
[[ -d $MODDIR ]] || die "no modules for $KVER in $KERNEL_PKG"
log "depmod $KVER (the .deb ships no modules.dep)"
depmod -b "$PKGROOT" "$KVER"

# --- the initramfs tree (merged /usr: /bin, /sbin, /usr/sbin -> /usr/bin; /lib -> /usr/lib) ---
STAGE=$WORK/initramfs
mkdir -p "$STAGE"/{usr/bin,usr/lib/x86_64-linux-gnu,usr/lib64,etc/cloud-minimal,dev,proc,sys,run,tmp,mnt,root,var/log}
ln -s usr/bin "$STAGE/bin"
ln -s usr/bin "$STAGE/sbin"
ln -s bin "$STAGE/usr/sbin"
ln -s usr/lib "$STAGE/lib"
ln -s usr/lib64 "$STAGE/lib64"
chmod 1777 "$STAGE/tmp"
chmod 0700 "$STAGE/root"

log "busybox applets"
install -m 0755 "$PKGROOT/bin/busybox" "$STAGE/usr/bin/busybox"
while read -r applet; do
	[[ -n $applet && ! -e $STAGE/usr/bin/$applet && ! -L $STAGE/usr/bin/$applet ]] || continue
	ln -s busybox "$STAGE/usr/bin/$applet"
done < <("$STAGE/usr/bin/busybox" --list)

log "dropbear, qemu-ga and their library closure (resolved with the image's own loader)"
install -m 0755 "$PKGROOT/usr/sbin/dropbear" "$STAGE/usr/bin/dropbear"
install -m 0755 "$PKGROOT/usr/bin/dropbearkey" "$STAGE/usr/bin/dropbearkey"
install -m 0755 "$PKGROOT/usr/sbin/qemu-ga" "$STAGE/usr/bin/qemu-ga"

# resolve_in_root ROOT PATH: PATH (absolute inside ROOT) with its symlinks followed inside ROOT
resolve_in_root() {
	local root=$1 path=$2 target i
	for ((i = 0; i < 40; i++)); do
		if [[ -L $root$path ]]; then
			target=$(readlink "$root$path")
			if [[ $target == /* ]]; then path=$target; else path=$(dirname "$path")/$target; fi
			path=$(realpath -m -s "$path")
		else
			[[ -e $root$path ]] || return 1
			printf '%s\n' "$path"
			return 0
		fi
	done
	return 1
}
LOADER_PATH=$(resolve_in_root "$PKGROOT" /lib64/ld-linux-x86-64.so.2) || die "no dynamic loader in libc6"
LOADER=$PKGROOT$LOADER_PATH
install -m 0755 "$LOADER" "$STAGE/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$STAGE/usr/lib64/ld-linux-x86-64.so.2"
LIBS=()
for bin in "$STAGE/usr/bin/dropbear" "$STAGE/usr/bin/dropbearkey" "$STAGE/usr/bin/qemu-ga"; do
	listing=$("$LOADER" --library-path "$PKGROOT/lib/x86_64-linux-gnu:$PKGROOT/usr/lib/x86_64-linux-gnu" --list "$bin") ||
		die "ld.so --list failed for $bin"
	if grep -q 'not found' <<<"$listing"; then
		die "unresolved libraries for $(basename "$bin"): $(grep 'not found' <<<"$listing" | tr -s ' \t\n' ' ')"
	fi
	while read -r soname arrow path _; do
		[[ $arrow == "=>" && $path == "$PKGROOT"/* ]] || continue
		[[ $soname == */ld-linux-x86-64.so.2 || $soname == ld-linux-x86-64.so.2 ]] && continue
		[[ -e $STAGE/usr/lib/x86_64-linux-gnu/$soname ]] && continue
		real=$(resolve_in_root "$PKGROOT" "${path#"$PKGROOT"}") || die "cannot resolve $path"
		install -m 0644 "$PKGROOT$real" "$STAGE/usr/lib/x86_64-linux-gnu/$soname"
		LIBS+=("$soname")
	done <<<"$listing"
done
log "libraries: ${LIBS[*]}"

log "kernel modules"
STAGE_MODDIR=$STAGE/usr/lib/modules/$KVER
mkdir -p "$STAGE_MODDIR"
for f in modules.builtin modules.builtin.modinfo modules.order; do
	if [[ -f $MODDIR/$f ]]; then cp "$MODDIR/$f" "$STAGE_MODDIR/$f"; fi
done
LOAD=()
BUILTIN=()
NKO=0
for mod in "${MODULES[@]}" "${LATE_MODULES[@]}"; do
	deps=$(modprobe -d "$PKGROOT" -S "$KVER" --show-depends "$mod" 2>&1) || die "kernel module $mod: $deps"
	top=
	while read -r kind path _; do
		case $kind in
		insmod)
			rel=${path#"$MODDIR"/}
			if [[ ! -f $STAGE_MODDIR/$rel ]]; then
				mkdir -p "$(dirname "$STAGE_MODDIR/$rel")"
				cp "$path" "$STAGE_MODDIR/$rel"
				NKO=$((NKO + 1))
			fi
			top=$(basename "$rel" .ko)
			;;
		builtin) top= ;;
		*) die "unexpected modprobe output for $mod: $kind $path" ;;
		esac
	done <<<"$deps"
	if [[ " ${LATE_MODULES[*]} " == *" $mod "* ]]; then continue; fi
	if [[ -n $top ]]; then LOAD+=("$mod"); else BUILTIN+=("$mod"); fi
done
depmod -b "$STAGE" "$KVER"
printf '%s\n' "${LOAD[@]}" >"$STAGE/etc/cloud-minimal/modules"
log "$NKO module files; loaded at boot: ${LOAD[*]}; built in: ${BUILTIN[*]}"

log "/init and configuration from minimal/rootfs"
cp -a "$SCRIPT_DIR/minimal/rootfs/." "$STAGE/"
chown -R 0:0 "$STAGE"
chmod 0755 "$STAGE/init" "$STAGE"/usr/lib/cloud-minimal/{ready,console,shutdown,udhcpc.script,guest-agent} "$STAGE/etc/acpi/PWRF/00000080"
chmod 0600 "$STAGE/etc/shadow"
cat >"$STAGE/etc/cloud-minimal/build-info" <<EOF
IMAGE=minimal
KERNEL=$KVER
KERNEL_PACKAGE=$KERNEL_PKG $KERNEL_PKG_VERSION
INPUTS_SHA256=$INPUTS_HASH
EOF
# devtmpfs is mounted over /dev at boot; these are for the chroot self-test (dropbear writes to
# /dev/urandom: without the node it would leave a regular file) and a fallback
mknod -m 0600 "$STAGE/dev/console" c 5 1
mknod -m 0666 "$STAGE/dev/null" c 1 3
mknod -m 0666 "$STAGE/dev/random" c 1 8
mknod -m 0666 "$STAGE/dev/urandom" c 1 9

log "self-test in a chroot of the initramfs tree"
chroot "$STAGE" /usr/sbin/dropbear -V >/dev/null 2>&1 || die "dropbear does not run in the image"
chroot "$STAGE" /usr/bin/qemu-ga --version >/dev/null 2>&1 || die "qemu-ga does not run in the image"
chroot "$STAGE" /usr/bin/dropbearkey -t ed25519 -f /tmp/selftest_key >/dev/null 2>&1 ||
	die "dropbearkey does not run in the image"
rm -f "$STAGE/tmp/selftest_key"
expected=$'instance-id\ti-1\npublic-keys.0\tssh-ed25519 AAAA a\nethernets.e.routes.0.to\t0.0.0.0/0\nethernets.e.routes.0.via\t10.0.0.1'
got=$(printf 'instance-id: "i-1" # c\npublic-keys:\n  - ssh-ed25519 AAAA a\nethernets:\n  e:\n    routes: [{to: 0.0.0.0/0, via: 10.0.0.1}]\n' |
	chroot "$STAGE" /usr/bin/awk -f /usr/lib/cloud-minimal/yaml.awk)
[[ $got == "$expected" ]] || die "yaml.awk self-test failed: $got"
got=$(printf 'Content-Type: multipart/mixed; boundary="==b=="\n\n--==b==\nContent-Type: text/cloud-config\n\n#cloud-config\nx: 1\n--==b==\nContent-Type: text/x-shellscript\n\n#!/bin/sh\n--==b==--\n' |
	chroot "$STAGE" /usr/bin/awk -v out=/tmp/selftest -f /usr/lib/cloud-minimal/mime.awk && cat "$STAGE/tmp/selftest.001")
rm -f "$STAGE"/tmp/selftest.*
[[ $got == $'#cloud-config\nx: 1' ]] || die "mime.awk self-test failed: $got"
chroot "$STAGE" /bin/sh -n /init || die "/init has a syntax error"
stray=$(find "$STAGE/dev" "$STAGE/tmp" -mindepth 1 ! -type c)
[[ -z $stray ]] || die "the self-test left files behind: $stray"

# --- pack ---
mkdir -p "$WORK/out"
log "packing initrd.img"
find "$STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(
	cd "$STAGE"
	find . -mindepth 1 -printf '%P\0' | LC_ALL=C sort -z |
		cpio --null --create --format=newc --owner=0:0 --reproducible --quiet
) | gzip -9 -n >"$WORK/out/initrd.img"
install -m 0644 "$VMLINUZ" "$WORK/out/vmlinuz"

file_json() {
	printf '{"sha256": "%s", "size": %s}' "$(sha256_of "$WORK/out/$1")" "$(stat -c %s "$WORK/out/$1")"
}
json_list() {
	local out="" x
	for x in "$@"; do out+="${out:+, }$(json_str "$x")"; done
	printf '[%s]' "$out"
}
pkgs_json=""
for p in "${PKG_JSON[@]}"; do pkgs_json+="${pkgs_json:+,
    }$p"; done
cat >"$WORK/out/manifest.json" <<EOF
{
  "format_version": 1,
  "image": "minimal",
  "description": "Debian cloud kernel + busybox/dropbear initramfs that reads a NoCloud (CIDATA) config drive",
  "arch": "x86_64",
  "inputs_sha256": "$INPUTS_HASH",
  "built_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "builder": "deploy/images/build-minimal.sh",
  "kernel": {
    "version": $(json_str "$KVER"),
    "package": $(json_str "$KERNEL_PKG"),
    "package_version": $(json_str "$KERNEL_PKG_VERSION"),
    "meta_package": $(json_str "$KERNEL_META")
  },
  "boot": {
    "kernel": "vmlinuz",
    "initrd": "initrd.img",
    "disk": null,
    "cmdline": $(json_str "$CMDLINE"),
    "machines": ["microvm", "q35"],
    "devices": ["virtio-rng (required: SSH host key entropy)", "virtio-blk config drive labelled CIDATA", "virtio-net"],
    "console": "ttyS0",
    "markers": {"init_start": "cloud-minimal: init start", "ready": "cloud-minimal: ready"}
  },
  "files": {
    "vmlinuz": $(file_json vmlinuz),
    "initrd.img": $(file_json initrd.img)
  },
  "modules_loaded": $(json_list "${LOAD[@]}"),
  "modules_builtin": $(json_list "${BUILTIN[@]}"),
  "packages": [
    $pkgs_json
  ]
}
EOF
(cd "$WORK/out" && sha256sum vmlinuz initrd.img manifest.json >SHA256SUMS)

log "installing into $OUT_DIR"
rm -rf "$OUT_DIR.tmp"
mkdir -p "$OUT_DIR.tmp"
cp -a "$WORK/out/." "$OUT_DIR.tmp/"
chmod 0755 "$OUT_DIR.tmp"
install_atomically "$OUT_DIR.tmp" "$OUT_DIR"
log "done: $OUT_DIR (vmlinuz $(stat -c %s "$OUT_DIR/vmlinuz") bytes, initrd.img $(stat -c %s "$OUT_DIR/initrd.img") bytes, kernel $KVER)"
