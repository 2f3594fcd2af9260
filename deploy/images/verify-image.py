#!/usr/bin/env python3
"""Boot a built guest image under QEMU and check it the way a user would.

    deploy/images/verify-image.py IMAGE_DIR [--machine microvm|q35] [--runs N]
    deploy/images/verify-image.py IMAGE_DIR --firmware ovmf [--runs N] [--disk-size 4G]

IMAGE_DIR is the output of build-minimal.sh or build-debian12.sh (manifest.json, vmlinuz,
initrd.img, and for debian-12 disk.qcow2 and disk-efi.qcow2). By default QEMU loads the kernel
and initrd itself (direct kernel boot). With --firmware ovmf it boots the manifest's whole_disk
(disk-efi.qcow2) through UEFI firmware instead: q35, OVMF code as read-only pflash, a per-run copy
of the OVMF vars template as the second pflash, no -kernel/-initrd/-append (GRUB on the disk's
EFI system partition boots the kernel). For each run this script:
  * creates a network namespace with a tap device (10.99.0.1/24 by default) and an ed25519 key
    pair, writes a NoCloud config drive (vfat, label CIDATA: meta-data, user-data,
    network-config giving the guest 10.99.0.2/24), and for a disk image a qcow2 overlay
    (--disk-size: that big, then checks that the guest grew its root filesystem);
  * starts qemu-system-x86_64 (TCG) inside the namespace and times QEMU start -> the kernel's
    first console line ("Linux version", when the command line has no `quiet`), -> the console
    marker and -> the first successful `ssh root@GUEST uname -a`;
  * checks the hostname, that the key was installed, and that another key is refused;
  * sends QMP system_powerdown and times the guest's clean poweroff (QEMU exits);
and finally removes the namespace, the tap and its files. Needs root, qemu-system-x86,
openssh-client, dosfstools, mtools, iproute2 (and ovmf for --firmware ovmf). Prints the QEMU
command line and medians.
Exit status 0 only when every run passed.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HOSTNAME = "verify-1"
MAC = "52:54:00:12:34:56"
KERNEL_MARKER = "Linux version "
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"


def host_tsc_khz():
    """Host TSC frequency in kHz: under TCG the guest TSC runs at the host's rate.

    The kernel's own measurement ("tsc: Refined TSC clocksource calibration" or
    "tsc: Detected N MHz processor" in dmesg) is preferred; /proc/cpuinfo "cpu MHz" is the
    fallback (on hosts with frequency scaling it is the current, not the TSC, frequency)."""
    try:
        log = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        log = ""
    mhz = None
    for line in log.splitlines():
        if "Refined TSC clocksource calibration:" in line:
            mhz = float(line.rsplit(":", 1)[1].split()[0])
        elif "tsc: Detected" in line and "MHz processor" in line and mhz is None:
            mhz = float(line.split("tsc: Detected", 1)[1].split()[0])
    if mhz is None:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    mhz = float(line.split(":", 1)[1])
                    break
    return int(round(mhz * 1000)) if mhz else None


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def make_cidata(path, work, pubkey, guest_cidr, gateway, iso=False):
    md = os.path.join(work, "meta-data")
    ud = os.path.join(work, "user-data")
    nc = os.path.join(work, "network-config")
    with open(md, "w") as f:
        f.write(f"instance-id: iid-verify-{os.getpid()}\nlocal-hostname: {HOSTNAME}\n"
                f"public-keys:\n  - {pubkey}\n")
    with open(ud, "w") as f:
        f.write(f"#cloud-config\ndisable_root: false\nssh_authorized_keys:\n  - {pubkey}\n")
    with open(nc, "w") as f:
        f.write("version: 2\nethernets:\n  eth0:\n    match:\n"
                f"      macaddress: \"{MAC}\"\n    set-name: eth0\n"
                f"    addresses: [{guest_cidr}]\n"
                f"    routes: [{{to: 0.0.0.0/0, via: {gateway}}}]\n"
                f"    nameservers:\n      addresses: [{gateway}]\n")
    if iso:
        # xorriso (Debian package xorriso, as the vmm crate uses) in its genisoimage mode
        run(["xorriso", "-as", "genisoimage", "-quiet", "-output", path, "-volid", "cidata", "-joliet", "-rock",
             md, ud, nc], stderr=subprocess.DEVNULL)
    else:
        with open(path, "wb") as f:
            f.truncate(1 << 20)
        run(["mkfs.vfat", "-n", "CIDATA", path], stdout=subprocess.DEVNULL)
        run(["mcopy", "-i", path, md, ud, nc, "::/"])


def qmp(sock_path, command, timeout=10):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(sock_path)
    f = s.makefile("rw")
    json.loads(f.readline())
    replies = []
    for c in ("qmp_capabilities", command):
        f.write(json.dumps({"execute": c}) + "\n")
        f.flush()
        while True:
            r = json.loads(f.readline())
            if "return" in r or "error" in r:
                replies.append(r)
                break
    s.close()
    return replies[-1]


def check_grown(ssh, overlay, timeout=120):
    """True when the guest's root filesystem fills (nearly) all of the overlay's virtual size.

    cloud-init grows the partition (growpart) and the filesystem (resizefs) at first boot; it may
    still be at it when SSH first answers, so this polls."""
    info = json.loads(subprocess.run(["qemu-img", "info", "--force-share", "--output=json", overlay],
                                     capture_output=True, text=True, check=True).stdout)
    want = info["virtual-size"]
    t_end = time.monotonic() + timeout
    line = ""
    while True:
        r = subprocess.run(ssh + ["df -B1 --output=source,size / | tail -n 1"], capture_output=True, text=True)
        line = r.stdout.strip()
        fields = line.split()
        if r.returncode == 0 and len(fields) == 2 and int(fields[1]) >= 0.9 * want:
            print(f"  root filesystem grown: {fields[0]} {int(fields[1]) / 2**30:.2f} GiB of a "
                  f"{want / 2**30:.2f} GiB disk")
            return True
        if time.monotonic() > t_end:
            print(f"  root filesystem NOT grown to the {want / 2**30:.2f} GiB disk: {line!r}")
            return False
        time.sleep(2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image_dir")
    ap.add_argument("--machine", choices=["microvm", "q35"],
                    help="default microvm; q35 with --firmware ovmf (the only machine it supports)")
    ap.add_argument("--firmware", choices=["direct", "ovmf"], default="direct",
                    help="direct: QEMU loads vmlinuz/initrd.img (default); ovmf: UEFI boot of whole_disk")
    ap.add_argument("--ovmf-code", help="OVMF code (default: the manifest's, else " + OVMF_CODE + ")")
    ap.add_argument("--ovmf-vars", help="OVMF vars template, copied per run (default: the manifest's, else "
                    + OVMF_VARS + ")")
    ap.add_argument("--disk-size", help="make the disk overlay this big (qemu-img size, e.g. 4G) and check "
                    "that the guest grew its root filesystem")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--memory", default="256", help="MiB (default 256; debian-12 wants 512)")
    ap.add_argument("--smp", default="1")
    ap.add_argument("--subnet", default="10.99.0", help="first three octets of the test /24")
    ap.add_argument("--cidata-iso", action="store_true", help="iso9660 config drive instead of vfat")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for SSH")
    ap.add_argument("--append", default="", help="extra kernel command line")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (console logs)")
    a = ap.parse_args()

    if os.geteuid() != 0:
        sys.exit("verify-image: must run as root (network namespace, tap)")
    image = os.path.abspath(a.image_dir)
    with open(os.path.join(image, "manifest.json")) as f:
        manifest = json.load(f)
    boot = manifest["boot"]
    uefi = a.firmware == "ovmf"
    whole = manifest.get("whole_disk")
    if uefi:
        if not whole:
            sys.exit("verify-image: the manifest has no whole_disk: nothing to boot through firmware")
        if a.machine not in (None, "q35"):
            sys.exit("verify-image: --firmware ovmf needs --machine q35")
        if a.append:
            sys.exit("verify-image: --append does not apply to --firmware ovmf (the disk's grub.cfg has the command line)")
        firmware = whole.get("firmware", {})
        ovmf_code = a.ovmf_code or firmware.get("code") or OVMF_CODE
        ovmf_vars = a.ovmf_vars or firmware.get("vars_template") or OVMF_VARS
        for fw in (ovmf_code, ovmf_vars):
            if not os.path.isfile(fw):
                sys.exit(f"verify-image: {fw} is missing (apt-get install ovmf)")
        a.machine = "q35"
        disk = whole["file"]
    else:
        a.machine = a.machine or "microvm"
        disk = boot.get("disk")
    if a.disk_size and not disk:
        sys.exit("verify-image: --disk-size needs an image with a disk")
    marker = boot.get("markers", {}).get("ready") or boot.get("markers", {}).get("ssh_host_keys")
    gateway, guest = f"{a.subnet}.1", f"{a.subnet}.2"
    ns, tap = f"imgv{os.getpid()}", "tap0"
    work = tempfile.mkdtemp(prefix="verify-image.")
    results, failures = [], []
    qemu = None
    try:
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "tuntap", "add", "dev", tap, "mode", "tap"])
        run(["ip", "-n", ns, "addr", "add", f"{gateway}/24", "dev", tap])
        run(["ip", "-n", ns, "link", "set", tap, "up"])
        key, other = os.path.join(work, "key"), os.path.join(work, "other")
        for k in (key, other):
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k, "-C", os.path.basename(k)])
        with open(key + ".pub") as f:
            pubkey = f.read().strip()
        cidata = os.path.join(work, "cidata.iso" if a.cidata_iso else "cidata.img")
        make_cidata(cidata, work, pubkey, f"{guest}/24", gateway, iso=a.cidata_iso)

        cmdline = whole["cmdline"] if uefi else boot["cmdline"]
        if a.machine == "microvm":
            khz = host_tsc_khz()
            if khz:
                cmdline += f" tsc_early_khz={khz}"
        cmdline = (cmdline + " " + a.append).strip()
        sfx = "device" if a.machine == "microvm" else "pci"
        machine = "microvm,acpi=on,rtc=on" if a.machine == "microvm" else "q35"
        ssh = ["ip", "netns", "exec", ns, "ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "BatchMode=yes", "-o", "ConnectTimeout=30", "-o", "LogLevel=ERROR"]
        # ConnectTimeout also bounds the banner exchange: OpenSSH's sshd under TCG can take
        # seconds to answer, so it is long; attempts start every 0.25 s, 4 at most in flight

        for n in range(a.runs):
            console = os.path.join(work, f"console-{n}.log")
            qmp_sock = os.path.join(work, f"qmp-{n}.sock")
            drives = []
            if disk:
                overlay = os.path.join(work, f"disk-{n}.qcow2")
                run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", os.path.join(image, disk), "-F", "qcow2", overlay]
                    + ([a.disk_size] if a.disk_size else []))
                drives += ["-drive", f"if=none,id=disk0,file={overlay},format=qcow2,discard=unmap",
                           "-device", f"virtio-blk-{sfx},drive=disk0" + (",bootindex=0" if uefi else "")]
            drives += ["-drive", f"if=none,id=cidata,file={cidata},format=raw,readonly=on",
                       "-device", f"virtio-blk-{sfx},drive=cidata"]
            nic = f"virtio-net-{sfx},netdev=n0,mac={MAC}" + (",romfile=" if sfx == "pci" else "")
            if uefi:
                # the firmware's NVRAM: a fresh copy of the template per run (OVMF writes boot entries)
                nvram = os.path.join(work, f"ovmf-vars-{n}.fd")
                shutil.copyfile(ovmf_vars, nvram)
                boot_args = ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={ovmf_code}",
                             "-drive", f"if=pflash,format=raw,unit=1,file={nvram}"]
            else:
                boot_args = ["-kernel", os.path.join(image, boot["kernel"]), "-initrd", os.path.join(image, boot["initrd"]),
                             "-append", cmdline]
            argv = ["qemu-system-x86_64", "-accel", "tcg", "-machine", machine, "-m", a.memory, "-smp", a.smp,
                    "-nodefaults", "-no-user-config", "-nographic", *boot_args,
                    "-chardev", f"file,id=ser0,path={console}", "-serial", "chardev:ser0",
                    "-device", f"virtio-rng-{sfx}", *drives,
                    "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no", "-device", nic,
                    "-qmp", f"unix:{qmp_sock},server=on,wait=off"]
            if n == 0:
                print("qemu:", " ".join(argv), flush=True)
            t0 = time.monotonic()
            qemu = subprocess.Popen(["ip", "netns", "exec", ns] + argv, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, f"qemu-{n}.err"), "w"))
            t_kernel = t_marker = t_ssh = None
            out = ""
            attempts = []
            last = -1.0
            while time.monotonic() - t0 < a.timeout and t_ssh is None:
                if qemu.poll() is not None:
                    break
                now = time.monotonic() - t0
                if (t_kernel is None or (t_marker is None and marker)) and os.path.exists(console):
                    with open(console, errors="replace") as f:
                        text = f.read()
                    if t_kernel is None and KERNEL_MARKER in text:
                        t_kernel = now
                    if t_marker is None and marker and marker in text:
                        t_marker = now
                if now - last >= 0.25 and len(attempts) < 4:
                    attempts.append(subprocess.Popen(ssh + ["-i", key, f"root@{guest}", "uname -a; hostname"],
                                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
                    last = now
                for p in list(attempts):
                    if p.poll() is not None:
                        attempts.remove(p)
                        if p.returncode == 0 and t_ssh is None:
                            t_ssh = time.monotonic() - t0
                            out = p.stdout.read().strip()
                time.sleep(0.01)
            for p in attempts:
                p.kill()
                p.wait()
            if t_marker is None and marker and os.path.exists(console):
                with open(console, errors="replace") as f:
                    if marker in f.read():
                        t_marker = time.monotonic() - t0
            ok = t_ssh is not None and out.splitlines()[-1:] == [HOSTNAME]
            print(f"run {n}: kernel {t_kernel and round(t_kernel, 2)} s, marker {t_marker and round(t_marker, 2)} s, "
                  f"ssh {t_ssh and round(t_ssh, 2)} s: {out!r}", flush=True)
            refused = None
            if t_ssh is not None:
                # dropbear refuses more than 5 unauthenticated connections per address: retry
                for _ in range(10):
                    r = subprocess.run(ssh + ["-i", other, f"root@{guest}", "true"], capture_output=True, text=True)
                    refused = r.returncode != 0 and "Permission denied" in r.stderr
                    if refused or r.returncode == 0:
                        break
                    time.sleep(1)
                print(f"  another key refused: {refused}")
            if ok and a.disk_size:
                ok = check_grown(ssh + ["-i", key, f"root@{guest}"], os.path.join(work, f"disk-{n}.qcow2"))
            t_off = None
            if qemu.poll() is None:
                tp = time.monotonic()
                try:
                    qmp(qmp_sock, "system_powerdown")
                    qemu.wait(timeout=300)
                    t_off = time.monotonic() - tp
                    print(f"  system_powerdown: QEMU exited ({qemu.returncode}) after {t_off:.2f} s")
                except Exception as e:  # noqa: BLE001 - report and go on to kill
                    print(f"  system_powerdown failed: {e}")
            if qemu.poll() is None:
                qemu.kill()
                qemu.wait()
            if not (ok and refused and t_off is not None):
                failures.append(n)
                print(f"  FAILED (console log: {console})")
            results.append((t_marker, t_ssh, t_off, t_kernel))
        good = [r for r in results if r[1] is not None]
        if good:
            med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
            how = "UEFI (OVMF) whole disk" if uefi else "direct kernel boot"
            print(f"{manifest['image']} on {a.machine}, {how}, {len(results)} run(s): median QEMU start -> kernel "
                  f"{med([r[3] for r in good if r[3] is not None]):.2f} s, -> marker "
                  f"{med([r[0] for r in good if r[0] is not None]):.2f} s, -> ssh {med([r[1] for r in good]):.2f} s, "
                  f"system_powerdown -> exit {med([r[2] for r in good if r[2] is not None]):.2f} s")
            with open("/proc/loadavg") as f:
                print(f"host load average: {f.read().split()[0]} ({os.cpu_count()} CPUs)")
    finally:
        if qemu is not None and qemu.poll() is None:
            qemu.kill()
            qemu.wait()
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        if a.keep or failures:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{len(results) - len(failures)} passed, {len(failures)} failed")
    return 1 if failures or not results else 0


if __name__ == "__main__":
    sys.exit(main())
