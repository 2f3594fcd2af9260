#!/usr/bin/env bash
# build-debian12.sh [--force] [OUT_DIR]
#
# Builds the "debian-12" guest image: Debian 12 (bookworm) with stock cloud-init, from Debian
# packages only (debootstrap --variant=minbase from the mirror apt uses, then the bookworm-updates
# and bookworm-security updates):
#   OUT_DIR/disk.qcow2    compressed qcow2 root disk: a bare ext4 filesystem (no partition table,
#                         label cloudimg-rootfs); use it as a backing file (qemu-img create -b)
#   OUT_DIR/vmlinuz       the image's own kernel (from its /boot), for direct kernel boot
#   OUT_DIR/initrd.img    the image's own initrd (virtio modules only)
#   OUT_DIR/disk-efi.qcow2 the same root filesystem as a whole disk that boots through UEFI
#                         firmware (OVMF, q35): GPT, 1 = EFI system partition with GRUB at
#                         \EFI\BOOT\BOOTX64.EFI, 2 = the ext4 root (label cloudimg-rootfs)
#   OUT_DIR/manifest.json versions, sha256 of each file, the kernel command line, the inputs hash
#   OUT_DIR/SHA256SUMS    sha256sum -c format, for the cache check
# Default OUT_DIR: /var/cache/cloud/images/debian-12. Skips the build when OUT_DIR already holds a
# complete image made from the same inputs (this script, debian12/rootfs, lib.sh, the package
# versions apt resolves, the host's GRUB); --force (or FORCE=1) rebuilds. APT_UPDATE=1 refreshes
# the host's apt lists first. Writes OUT_DIR.tmp, then renames. Needs root.
# See deploy/images/README.md.
set -euo pipefail

# shellcheck disable=SC2034 # used by log/die in lib.sh
IMAGE=build-debian12
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$SCRIPT_DIR/lib.sh"

usage() {
	sed -n '2,22s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
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
OUT_DIR=$(make_abs "${OUT_DIR:-/var/cache/cloud/images/debian-12}")
OUT_DIR=${OUT_DIR%/}

SUITE=bookworm
# Kernel command line for direct kernel boot (the VMM adds its own extras, e.g. tsc_early_khz=).
CMDLINE="root=/dev/vda rw console=ttyS0 quiet"
# Virtual size of the root disk; the qcow2 stores only what is used. cloud-init's resizefs grows
# the filesystem when the VM's overlay is made larger (qemu-img create -b ... SIZE).
DISK_SIZE=${DISK_SIZE:-2G}
FS_LABEL=cloudimg-rootfs
# Kernel command line GRUB passes when disk-efi.qcow2 boots through the firmware: the root is
# partition 2, found by its label (initramfs-tools resolves LABEL= with blkid).
EFI_CMDLINE="root=LABEL=$FS_LABEL rw console=ttyS0 quiet"
# disk-efi.qcow2, DISK_SIZE as well: partition 1, the EFI system partition (FAT32, ESP_MIB), at
# 1 MiB; partition 2, the root filesystem, from its end to 1 MiB before the disk's (backup GPT)
ESP_MIB=64
ESP_LABEL=ESP
# GRUB modules built into BOOTX64.EFI (grub-mkimage adds their dependencies): nothing is loaded
# from disk later
GRUB_MODULES=(part_gpt fat ext2 search normal linux)
INCLUDE=(systemd-sysv linux-image-cloud-amd64 openssh-server cloud-init udev iproute2
	python3-cffi-backend ca-certificates)
# Installed with apt inside the chroot after debootstrap: systemd-resolved's postinst takes over
# /etc/resolv.conf and fails in debootstrap's second stage. cloud-guest-utils (growpart): cloud-init
# grows partition 2 of disk-efi.qcow2 when the overlay is bigger (disk.qcow2 has no partition).
EXTRA=(systemd-resolved cloud-guest-utils)
# Units that cost boot time and do nothing useful in these VMs.
MASK_UNITS=(systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer
	e2scrub_reap.service e2scrub_all.timer fstrim.timer man-db.timer dpkg-db-backup.timer)

require_root
ensure_tools debootstrap:debootstrap qemu-img:qemu-utils mkfs.ext4:e2fsprogs \
	sha256sum:coreutils flock:util-linux chroot:coreutils sfdisk:fdisk mkfs.vfat:dosfstools \
	mmd:mtools mcopy:mtools grub-mkimage:grub-common \
	/usr/lib/grub/x86_64-efi/modinfo.sh:grub-efi-amd64-bin
# (grub-efi-amd64-bin has no command: its modinfo.sh stands for the x86_64-efi modules)
# shellcheck disable=SC2016 # a dpkg-query format string
GRUB_VERSION=$(dpkg-query -W -f '${Version}' grub-efi-amd64-bin 2>/dev/null) || GRUB_VERSION=unknown

if [[ ${APT_UPDATE:-0} == 1 ]]; then
	log "apt-get update"
	apt_get update -qq >&2
fi
apt_ready linux-image-cloud-amd64

# --- the mirrors apt uses ---
repo_uri() {
	# shellcheck disable=SC2016 # an apt format string
	apt-get indextargets --format '$(REPO_URI)' 'Identifier: Packages' "Release: $1" 2>/dev/null | awk 'NR == 1'
}
MIRROR=${MIRROR:-$(repo_uri "$SUITE")}
SECURITY_MIRROR=${SECURITY_MIRROR:-$(repo_uri "$SUITE-security")}
[[ -n $MIRROR ]] || die "no apt source for $SUITE (set MIRROR=)"
MIRROR=${MIRROR%/}
SECURITY_MIRROR=${SECURITY_MIRROR%/}
log "mirror $MIRROR, security ${SECURITY_MIRROR:-none}"

# --- the inputs: the versions apt resolves for the "required" packages (what minbase installs)
# --- plus INCLUDE and their dependencies, from the host's apt lists ---
# shellcheck disable=SC2016 # an apt format string
REQUIRED=$(
	apt-get indextargets --format '$(FILENAME)' 'Identifier: Packages' "Release: $SUITE" |
		while read -r f; do /usr/lib/apt/apt-helper cat-file "$f"; done |
		awk '/^Package: / { p = $2 } /^Priority: required/ { print p }' | LC_ALL=C sort -u
)
[[ -n $REQUIRED ]] || die "cannot list the required packages of $SUITE"
# shellcheck disable=SC2086 # one word per package
RESOLVED=$(apt-get -s -o Dir::State::status=/dev/null install --no-install-recommends \
	$REQUIRED apt "${INCLUDE[@]}" "${EXTRA[@]}" 2>/dev/null | awk '$1 == "Inst" { print $2, $3 }' | tr -d '(' | LC_ALL=C sort)
[[ $(wc -l <<<"$RESOLVED") -gt 50 ]] || die "apt cannot resolve the package set"
INPUTS_HASH=$(
	{
		echo "cloud-images debian-12 format 1"
		echo "suite $SUITE mirror $MIRROR security $SECURITY_MIRROR"
		echo "cmdline $CMDLINE size $DISK_SIZE label $FS_LABEL"
		echo "efi cmdline $EFI_CMDLINE esp $ESP_MIB MiB $ESP_LABEL grub $GRUB_VERSION ${GRUB_MODULES[*]}"
		echo "include ${INCLUDE[*]} extra ${EXTRA[*]}"
		echo "mask ${MASK_UNITS[*]}"
		printf '%s\n' "$RESOLVED"
		printf 'script %s\n' "$(sha256_of "$SCRIPT_DIR/build-debian12.sh")" "$(sha256_of "$SCRIPT_DIR/lib.sh")"
		tree_digest "$SCRIPT_DIR/debian12/rootfs"
	} | sha256sum | cut -d' ' -f1
)
log "$(wc -l <<<"$RESOLVED") packages resolved, inputs $INPUTS_HASH"

# up to date: same inputs, every file intact, and every output there (an output directory of an
# older builder has no disk-efi.qcow2)
complete() {
	up_to_date "$1" "$2" || return 1
	local f
	for f in disk.qcow2 disk-efi.qcow2 vmlinuz initrd.img manifest.json; do
		grep -q "^[0-9a-f]\{64\}  $f\$" "$1/SHA256SUMS" || return 1
	done
}

take_lock "$OUT_DIR"
if [[ $FORCE != 1 ]] && complete "$OUT_DIR" "$INPUTS_HASH"; then
	log "$OUT_DIR is up to date (inputs $INPUTS_HASH): nothing to do"
	exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/build-debian12.XXXXXX")
ROOT=$WORK/rootfs
MOUNTS=()
unmount_all() {
	local i
	for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
		umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null || true
	done
	MOUNTS=()
}
cleanup() {
	local rc=$?
	unmount_all
	if ((rc != 0)) && [[ -d $WORK ]]; then
		mkdir -p "$OUT_DIR.build-logs"
		cp "$WORK"/*.log "$ROOT/debootstrap/debootstrap.log" "$OUT_DIR.build-logs/" 2>/dev/null || true
		log "build logs kept in $OUT_DIR.build-logs"
	fi
	# never rm -rf through a mount that is still there
	if grep -q " $ROOT/" /proc/mounts 2>/dev/null; then
		log "warning: $ROOT still has mounts; leaving $WORK"
	else
		rm -rf "$WORK"
	fi
	rm -rf "$OUT_DIR.tmp"
}
trap cleanup EXIT
mount_chroot_fs() {
	MOUNTS+=("$ROOT/proc")
	mount -t proc proc "$ROOT/proc"
	MOUNTS+=("$ROOT/sys")
	mount -t sysfs sysfs "$ROOT/sys"
	MOUNTS+=("$ROOT/dev")
	mount --bind /dev "$ROOT/dev"
	MOUNTS+=("$ROOT/dev/pts")
	mount --bind /dev/pts "$ROOT/dev/pts"
	MOUNTS+=("$ROOT/run")
	mount -t tmpfs tmpfs "$ROOT/run"
}
in_root() {
	chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
		DEBIAN_FRONTEND=noninteractive HOME=/root "$@"
}

# --- debootstrap ---
include=$(
	IFS=,
	echo "${INCLUDE[*]}"
)
log "debootstrap --variant=minbase $SUITE from $MIRROR (a few minutes)"
start=$SECONDS
debootstrap --variant=minbase --components=main --include="$include" "$SUITE" "$ROOT" "$MIRROR" \
	>"$WORK/debootstrap.log" 2>&1 || {
	tail -n 30 "$WORK/debootstrap.log" >&2
	die "debootstrap failed"
}
log "debootstrap done in $((SECONDS - start)) s"

# --- apt sources of the image, then the updates and security updates ---
rm -f "$ROOT/etc/apt/sources.list"
{
	printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
		"$MIRROR" "$SUITE" "$SUITE"
	if [[ -n $SECURITY_MIRROR ]]; then
		printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
			"$SECURITY_MIRROR" "$SUITE"
	fi
} >"$ROOT/etc/apt/sources.list.d/debian.sources"
# no services start inside the chroot
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
# DNS for apt inside the chroot (the image's own resolv.conf is put back below)
resolv_backup=
if [[ -e $ROOT/etc/resolv.conf || -L $ROOT/etc/resolv.conf ]]; then
	resolv_backup=$WORK/resolv.conf.image
	cp -P "$ROOT/etc/resolv.conf" "$resolv_backup"
	rm -f "$ROOT/etc/resolv.conf"
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
mount_chroot_fs
log "apt-get update and full-upgrade (bookworm-updates, bookworm-security)"
in_root apt-get -q update >"$WORK/apt.log" 2>&1 || {
	tail -n 20 "$WORK/apt.log" >&2
	die "apt-get update in the image failed"
}
in_root apt-get -q -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
	--no-install-recommends full-upgrade >>"$WORK/apt.log" 2>&1 || {
	tail -n 20 "$WORK/apt.log" >&2
	die "apt-get full-upgrade in the image failed"
}
log "apt-get install ${EXTRA[*]}"
in_root apt-get -q -y --no-install-recommends install "${EXTRA[@]}" >>"$WORK/apt.log" 2>&1 || {
	tail -n 20 "$WORK/apt.log" >&2
	die "apt-get install ${EXTRA[*]} in the image failed"
}

# only the kernel that linux-image-cloud-amd64 depends on
# shellcheck disable=SC2016 # a dpkg-query format string
KERNEL_PKG=$(in_root dpkg-query -W -f '${Depends}' linux-image-cloud-amd64 | sed 's/[,|]/\n/g' | awk '$1 ~ /^linux-image-/ { print $1; exit }')
[[ -n $KERNEL_PKG ]] || die "cannot resolve the image's kernel package"
KVER=${KERNEL_PKG#linux-image-}
# shellcheck disable=SC2016 # a dpkg-query format string
old_kernels=$(in_root dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' 'linux-image-[0-9]*' |
	awk -v keep="$KERNEL_PKG" '$1 ~ /^i/ && $2 != keep { print $2 }')
if [[ -n $old_kernels ]]; then
	log "removing superseded kernels: $(echo "$old_kernels" | tr '\n' ' ')"
	# shellcheck disable=SC2086 # one word per package
	in_root apt-get -q -y purge $old_kernels >>"$WORK/apt.log" 2>&1 || die "cannot remove $old_kernels"
fi

# --- configuration (debian12/rootfs), then the trimming the reference calls for ---
log "configuring the image"
cp -a "$SCRIPT_DIR/debian12/rootfs/." "$ROOT/"
chown -R 0:0 "$ROOT/etc/cloud/cloud.cfg.d" "$ROOT/etc/initramfs-tools" "$ROOT/etc/default/locale" \
	"$ROOT/etc/systemd/resolved.conf.d" "$ROOT/etc/fstab" "$ROOT/etc/hosts"
in_root systemctl enable systemd-networkd.service systemd-resolved.service >>"$WORK/apt.log" 2>&1
in_root systemctl mask "${MASK_UNITS[@]}" >>"$WORK/apt.log" 2>&1
log "update-initramfs (virtio modules only, zstd)"
in_root update-initramfs -u -k "$KVER" >>"$WORK/apt.log" 2>&1 || die "update-initramfs failed"

# versions for the manifest, before apt's lists go
# shellcheck disable=SC2016 # a dpkg-query format string
in_root dpkg-query -W -f '${Package}\t${Version}\n' | LC_ALL=C sort >"$WORK/packages.tsv"
KERNEL_PKG_VERSION=$(awk -F '\t' -v p="$KERNEL_PKG" '$1 == p { print $2 }' "$WORK/packages.tsv")
CLOUD_INIT_VERSION=$(awk -F '\t' '$1 == "cloud-init" { print $2 }' "$WORK/packages.tsv")

in_root apt-get -q clean >>"$WORK/apt.log" 2>&1
unmount_all
rm -f "$ROOT/usr/sbin/policy-rc.d"
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/debconf/*-old \
	"$ROOT"/var/lib/dpkg/*-old "$ROOT"/tmp/* "$ROOT"/var/tmp/*
mkdir -p "$ROOT/var/lib/apt/lists/partial"
# per-instance state must be made on the instance's first boot
rm -f "$ROOT"/etc/ssh/ssh_host_*
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id" "$ROOT/var/lib/systemd/random-seed" "$ROOT/var/lib/systemd/credential.secret"
: >"$ROOT/etc/hostname"
rm -rf "$ROOT"/var/lib/cloud/*
# resolv.conf: systemd-resolved's stub (what the systemd-resolved package set up)
rm -f "$ROOT/etc/resolv.conf"
if [[ -n $resolv_backup && -L $resolv_backup ]]; then
	cp -P "$resolv_backup" "$ROOT/etc/resolv.conf"
else
	ln -s ../run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"
fi
find "$ROOT/var/log" -type f -exec truncate -s 0 {} +
rm -f "$ROOT"/root/.bash_history

VMLINUZ=$ROOT/boot/vmlinuz-$KVER
INITRD=$ROOT/boot/initrd.img-$KVER
[[ -f $VMLINUZ && -f $INITRD ]] || die "no /boot/vmlinuz-$KVER or /boot/initrd.img-$KVER in the image"

# --- the disk: ext4 made from the tree (mke2fs -d: no loop device, no mount) ---
# make_rootfs FILE: the root filesystem from the tree, filling FILE (already of its final size)
make_rootfs() {
	mkfs.ext4 -q -F -L "$FS_LABEL" -d "$ROOT" -E root_owner=0:0 "$1"
	e2fsck -fn "$1" >/dev/null 2>&1 || die "e2fsck finds the new filesystem inconsistent"
}
mkdir -p "$WORK/out"
log "ext4 filesystem ($DISK_SIZE, label $FS_LABEL) from the tree"
start=$SECONDS
ROOTFS_BYTES=$(du -sb "$ROOT" | cut -f1)
truncate -s "$DISK_SIZE" "$WORK/disk.raw"
make_rootfs "$WORK/disk.raw"
log "qcow2 (compressed)"
qemu-img convert -q -c -f raw -O qcow2 "$WORK/disk.raw" "$WORK/out/disk.qcow2"
rm -f "$WORK/disk.raw"
log "disk.qcow2 done in $((SECONDS - start)) s"
install -m 0644 "$VMLINUZ" "$WORK/out/vmlinuz"
install -m 0644 "$INITRD" "$WORK/out/initrd.img"

# --- disk-efi.qcow2: GPT, 1 = EFI system partition (FAT32) with GRUB, 2 = the same tree as ext4;
# --- each partition made as a file, then written at its offset (no loop device, no mount) ---
# GRUB boots the image's /vmlinuz and /initrd.img symlinks (kept current by the kernel packages
# when the guest upgrades its kernel) when they point at this kernel
if [[ $(readlink "$ROOT/vmlinuz" 2>/dev/null) == "boot/vmlinuz-$KVER" &&
	$(readlink "$ROOT/initrd.img" 2>/dev/null) == "boot/initrd.img-$KVER" ]]; then
	GRUB_KERNEL=/vmlinuz GRUB_INITRD=/initrd.img
else
	GRUB_KERNEL=/boot/vmlinuz-$KVER GRUB_INITRD=/boot/initrd.img-$KVER
fi
start=$SECONDS
MIB=1048576
EFI_RAW=$WORK/disk-efi.raw
truncate -s "$DISK_SIZE" "$EFI_RAW"
EFI_DISK_BYTES=$(stat -c %s "$EFI_RAW")
ESP_START=$MIB
ESP_BYTES=$((ESP_MIB * MIB))
ROOT_START=$((ESP_START + ESP_BYTES))
ROOT_BYTES=$(((EFI_DISK_BYTES - MIB) / MIB * MIB - ROOT_START))
((ROOT_BYTES > ROOTFS_BYTES)) || die "DISK_SIZE $DISK_SIZE leaves no room for the root partition"
log "disk-efi: GPT, ESP $ESP_MIB MiB, root partition $((ROOT_BYTES / MIB)) MiB, GRUB $GRUB_VERSION"
sfdisk -q "$EFI_RAW" <<EOF >/dev/null
label: gpt
start=$((ESP_START / 512)), size=$((ESP_BYTES / 512)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system partition"
start=$((ROOT_START / 512)), size=$((ROOT_BYTES / 512)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="$FS_LABEL"
EOF
layout=$(sfdisk -d "$EFI_RAW" | awk '/ : start=/ { gsub(/[,=]/, " "); printf "%.0f %.0f ", $4 * 512, $6 * 512 }')
[[ $layout == "$ESP_START $ESP_BYTES $ROOT_START $ROOT_BYTES " ]] ||
	die "unexpected partition table: $layout"

# BOOTX64.EFI: GRUB with its modules and a built-in config inside; prefix is the directory it is
# loaded from on the ESP (GRUB adds the device), so normal mode reads \EFI\BOOT\grub.cfg
mkdir -p "$WORK/esp"
cat >"$WORK/esp/early.cfg" <<EOF
search --no-floppy --label --set=root $FS_LABEL
EOF
cat >"$WORK/esp/grub.cfg" <<EOF
# Written by deploy/images/build-debian12.sh. BOOTX64.EFI's built-in config has set root to the
# filesystem labelled $FS_LABEL (partition 2).
set default=0
set timeout=0
menuentry "Debian GNU/Linux 12 (bookworm)" {
	linux $GRUB_KERNEL $EFI_CMDLINE
	initrd $GRUB_INITRD
}
EOF
grub-mkimage -O x86_64-efi -d /usr/lib/grub/x86_64-efi -p /EFI/BOOT -c "$WORK/esp/early.cfg" \
	-o "$WORK/esp/BOOTX64.EFI" "${GRUB_MODULES[@]}" || die "grub-mkimage failed"
truncate -s "$ESP_BYTES" "$WORK/esp.img"
mkfs.vfat -F 32 -n "$ESP_LABEL" "$WORK/esp.img" >/dev/null
MTOOLS_SKIP_CHECK=1 mmd -i "$WORK/esp.img" ::/EFI ::/EFI/BOOT
MTOOLS_SKIP_CHECK=1 mcopy -i "$WORK/esp.img" "$WORK/esp/BOOTX64.EFI" "$WORK/esp/grub.cfg" ::/EFI/BOOT/
fsck.vfat -n "$WORK/esp.img" >/dev/null 2>&1 || die "fsck.vfat finds the ESP inconsistent"
dd if="$WORK/esp.img" of="$EFI_RAW" bs=1M seek=$((ESP_START / MIB)) conv=notrunc,sparse status=none
rm -f "$WORK/esp.img"
truncate -s "$ROOT_BYTES" "$WORK/root.img"
make_rootfs "$WORK/root.img"
dd if="$WORK/root.img" of="$EFI_RAW" bs=1M seek=$((ROOT_START / MIB)) conv=notrunc,sparse status=none
rm -f "$WORK/root.img"
sfdisk -q -V "$EFI_RAW" >/dev/null || die "sfdisk finds the partition table inconsistent"
log "qcow2 (compressed) of disk-efi"
qemu-img convert -q -c -f raw -O qcow2 "$EFI_RAW" "$WORK/out/disk-efi.qcow2"
rm -f "$EFI_RAW"
log "disk-efi.qcow2 done in $((SECONDS - start)) s"

file_json() {
	printf '{"sha256": "%s", "size": %s}' "$(sha256_of "$WORK/out/$1")" "$(stat -c %s "$WORK/out/$1")"
}
virtual_size() {
	qemu-img info --output=json "$1" | awk -F'[:,]' '/"virtual-size"/ { gsub(/ /, "", $2); print $2; exit }'
}
VSIZE=$(virtual_size "$WORK/out/disk.qcow2")
EFI_VSIZE=$(virtual_size "$WORK/out/disk-efi.qcow2")
pkgs_json=$(awk -F '\t' '{ printf "%s    {\"name\": \"%s\", \"version\": \"%s\"}", (NR > 1 ? ",\n" : ""), $1, $2 }' "$WORK/packages.tsv")
cat >"$WORK/out/manifest.json" <<EOF
{
  "format_version": 1,
  "image": "debian-12",
  "description": "Debian 12 (bookworm) minbase with systemd, OpenSSH and stock cloud-init (NoCloud)",
  "arch": "x86_64",
  "inputs_sha256": "$INPUTS_HASH",
  "built_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "builder": "deploy/images/build-debian12.sh",
  "kernel": {
    "version": $(json_str "$KVER"),
    "package": $(json_str "$KERNEL_PKG"),
    "package_version": $(json_str "$KERNEL_PKG_VERSION")
  },
  "cloud_init_version": $(json_str "$CLOUD_INIT_VERSION"),
  "boot": {
    "kernel": "vmlinuz",
    "initrd": "initrd.img",
    "disk": "disk.qcow2",
    "cmdline": $(json_str "$CMDLINE"),
    "machines": ["microvm", "q35"],
    "devices": ["virtio-blk root disk first (/dev/vda): a qcow2 overlay backed by disk.qcow2", "virtio-blk config drive labelled CIDATA", "virtio-net", "virtio-rng"],
    "console": "ttyS0",
    "markers": {"ssh_host_keys": "-----END SSH HOST KEY KEYS-----", "cloud_init_done": "Cloud-init v. * finished at"}
  },
  "disk": {
    "format": "qcow2",
    "virtual_size": $VSIZE,
    "filesystem": "ext4",
    "label": "$FS_LABEL",
    "partitioned": false,
    "rootfs_bytes": $ROOTFS_BYTES
  },
  "whole_disk": {
    "file": "disk-efi.qcow2",
    "format": "qcow2",
    "virtual_size": $EFI_VSIZE,
    "boot": "uefi",
    "machine": "q35",
    "firmware": {"package": "ovmf", "code": "/usr/share/OVMF/OVMF_CODE_4M.fd", "vars_template": "/usr/share/OVMF/OVMF_VARS_4M.fd"},
    "partition_table": "gpt",
    "esp_partition": 1,
    "esp": {"offset": $ESP_START, "size": $ESP_BYTES, "filesystem": "vfat", "label": "$ESP_LABEL", "bootloader": "/EFI/BOOT/BOOTX64.EFI", "config": "/EFI/BOOT/grub.cfg"},
    "root_partition": 2,
    "root": {"offset": $ROOT_START, "size": $ROOT_BYTES, "filesystem": "ext4", "label": "$FS_LABEL"},
    "bootloader": {"name": "grub", "package": "grub-efi-amd64-bin", "version": $(json_str "$GRUB_VERSION"), "kernel": $(json_str "$GRUB_KERNEL"), "initrd": $(json_str "$GRUB_INITRD")},
    "cmdline": $(json_str "$EFI_CMDLINE"),
    "devices": ["OVMF: pflash unit 0 the code (read-only), unit 1 a per-VM copy of the vars template", "virtio-blk root disk: a qcow2 overlay backed by disk-efi.qcow2, first in the boot order (bootindex=0)", "virtio-blk config drive labelled CIDATA", "virtio-net", "virtio-rng"]
  },
  "files": {
    "disk.qcow2": $(file_json disk.qcow2),
    "disk-efi.qcow2": $(file_json disk-efi.qcow2),
    "vmlinuz": $(file_json vmlinuz),
    "initrd.img": $(file_json initrd.img)
  },
  "packages": [
$pkgs_json
  ]
}
EOF
(cd "$WORK/out" && sha256sum disk.qcow2 disk-efi.qcow2 vmlinuz initrd.img manifest.json >SHA256SUMS)

log "installing into $OUT_DIR"
rm -rf "$OUT_DIR.tmp"
mkdir -p "$OUT_DIR.tmp"
mv "$WORK"/out/* "$OUT_DIR.tmp/"
chmod 0755 "$OUT_DIR.tmp"
install_atomically "$OUT_DIR.tmp" "$OUT_DIR"
log "done: $OUT_DIR (disk.qcow2 $(stat -c %s "$OUT_DIR/disk.qcow2") bytes, disk-efi.qcow2 $(stat -c %s "$OUT_DIR/disk-efi.qcow2") bytes, kernel $KVER, cloud-init $CLOUD_INIT_VERSION, $((SECONDS)) s)"
