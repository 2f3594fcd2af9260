//! The QEMU command line, built from a [`VmSpec`] with no I/O, so every flag is unit-tested.
//!
//! Shape (direct kernel boot; firmware boot swaps the machine and uses `-pci` devices):
//! ```text
//! qemu-system-x86_64 -nodefaults -no-user-config -name guest=N,debug-threads=on
//!   -machine microvm,acpi=on -accel tcg -smp 1 -m 256M -display none -pidfile DIR/qemu.pid
//!   -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny
//!   -chardev socket,id=qmp,path=DIR/qmp.sock,server=on,wait=off -mon chardev=qmp,mode=control
//!   -chardev socket,id=serial0,path=DIR/serial.sock,server=on,wait=off,logfile=DIR/console.log,logappend=on
//!   -serial chardev:serial0
//!   -kernel K -initrd I -append "… tsc_early_khz=N"
//!   -drive id=disk0,if=none,… -device virtio-blk-device,drive=disk0      (per disk, then cidata)
//!   -netdev tap,id=net0,fd=3 -device virtio-net-device,netdev=net0,mac=M     (fd: see jail)
//!   [-chardev socket,id=qga0,path=DIR/qga.sock,… -device virtio-serial-device -device virtserialport,…]
//!   -object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-device,rng=rng0
//!   [-S] [-incoming defer]
//! ```
//! Device ids depend only on device order (`disk0`, `net0`, `cidata`), never on paths or tap names,
//! so a snapshot restores into a QEMU whose files and taps live elsewhere.
//!
//! QEMU needs no privilege of its own: it is started as the VM's user with its taps already
//! open ([`super::jail`]), and migrations go through descriptors passed over QMP, so the
//! sandbox denies privilege changes and spawning too. It is not `-daemonize`d (its fork would
//! break `spawn=deny`): the launcher starts it in a session of its own, and its stderr goes
//! straight to `vmm.log`.

use std::path::{Path, PathBuf};

use super::host::ResolvedAccel;
use crate::instance_dir::InstanceDir;
use crate::spec::{BootSpec, DiskFormat, Firmware, VmSpec};

/// The size of TCG's translated-code cache, MiB (`-accel tcg,tb-size=`; QEMU's default is up to
/// 1 GiB). Part of a TCG VM's memory overhead.
pub const TCG_CODE_CACHE_MIB: u64 = 128;

/// Where OVMF's code lives (Debian package `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The template copied to each VM's `nvram.fd` (Debian package `ovmf`).
pub const OVMF_VARS_TEMPLATE: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Everything besides the spec that decides the command line.
#[derive(Debug, Clone)]
pub struct CommandPlan<'a> {
    /// The (validated) spec.
    pub spec: &'a VmSpec,
    /// The instance directory.
    pub dir: &'a InstanceDir,
    /// Accelerator after `auto` resolution.
    pub accel: ResolvedAccel,
    /// Host TSC kHz, appended as `tsc_early_khz=` to direct-kernel command lines under TCG.
    pub tsc_khz: Option<u64>,
    /// Pass `-sandbox`.
    pub sandbox: bool,
    /// Start with vCPUs stopped (`-S`): the caller attaches the console, then sends `cont`.
    pub start_paused: bool,
    /// Wait for an incoming migration (`-incoming defer`), for restores.
    pub incoming: bool,
    /// OVMF code image (read-only pflash).
    pub ovmf_code: &'a Path,
}

/// A program and its arguments, ready for `Command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuCommand {
    /// The program to execute (QEMU).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

/// The `-chardev` argument of the QMP socket, also used to recognise our QEMU in
/// `/proc/<pid>/cmdline` (the socket path is unique to the instance directory).
pub fn qmp_chardev_arg(dir: &InstanceDir) -> String {
    format!("socket,id=qmp,path={},server=on,wait=off", dir.qmp_socket().display())
}

/// Builds the full command.
pub fn command(qemu: &Path, plan: &CommandPlan<'_>) -> QemuCommand {
    QemuCommand { program: qemu.to_owned(), args: qemu_args(plan) }
}

/// The kernel command line actually passed: the spec's, plus `tsc_early_khz=` under TCG.
pub fn kernel_cmdline(cmdline: &str, accel: ResolvedAccel, tsc_khz: Option<u64>) -> String {
    match (accel, tsc_khz) {
        (ResolvedAccel::Tcg, Some(khz)) if !cmdline.contains("tsc_early_khz=") => {
            if cmdline.trim().is_empty() {
                format!("tsc_early_khz={khz}")
            } else {
                format!("{} tsc_early_khz={khz}", cmdline.trim_end())
            }
        }
        _ => cmdline.to_owned(),
    }
}

/// QEMU's arguments (without the program).
pub fn qemu_args(plan: &CommandPlan<'_>) -> Vec<String> {
    let spec = plan.spec;
    let dir = plan.dir;
    let mut a: Vec<String> = Vec::with_capacity(64);
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| (*s).to_owned()));

    push(&["-nodefaults", "-no-user-config"]);
    push(&["-name", &format!("guest={},debug-threads=on", spec.name)]);
    let microvm = matches!(spec.boot, BootSpec::DirectKernel { .. });
    push(&["-machine", if microvm { "microvm,acpi=on" } else { "q35" }]);
    match plan.accel {
        // TCG's translated code is memory of QEMU's own: bounded, so a VM's memory limit can be.
        ResolvedAccel::Tcg => push(&["-accel", &format!("tcg,tb-size={TCG_CODE_CACHE_MIB}")]),
        ResolvedAccel::Kvm => push(&["-accel", "kvm"]),
    }
    if plan.accel == ResolvedAccel::Kvm {
        push(&["-cpu", "host"]);
    }
    push(&["-smp", &spec.vcpus.to_string()]);
    push(&["-m", &format!("{}M", spec.memory_mib)]);
    push(&["-display", "none"]);
    push(&["-pidfile", &path(&dir.pidfile())]);
    if plan.sandbox {
        push(&["-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]);
    }
    push(&["-chardev", &qmp_chardev_arg(dir)]);
    push(&["-mon", "chardev=qmp,mode=control"]);
    push(&[
        "-chardev",
        &format!(
            "socket,id=serial0,path={},server=on,wait=off,logfile={},logappend=on",
            dir.serial_socket().display(),
            dir.console_log().display()
        ),
    ]);
    push(&["-serial", "chardev:serial0"]);

    match &spec.boot {
        BootSpec::DirectKernel { kernel, initrd, cmdline } => {
            push(&["-kernel", &path(kernel)]);
            if let Some(initrd) = initrd {
                push(&["-initrd", &path(initrd)]);
            }
            let cmdline = kernel_cmdline(cmdline, plan.accel, plan.tsc_khz);
            if !cmdline.is_empty() {
                push(&["-append", &cmdline]);
            }
        }
        BootSpec::Firmware { firmware } => match firmware {
            Firmware::Seabios => {}
            Firmware::Ovmf => {
                push(&[
                    "-drive",
                    &format!("if=pflash,format=raw,unit=0,readonly=on,file={}", plan.ovmf_code.display()),
                ]);
                push(&["-drive", &format!("if=pflash,format=raw,unit=1,file={}", dir.nvram().display())]);
            }
        },
    }

    let bus = if microvm { "device" } else { "pci" };
    for (i, disk) in spec.disks.iter().enumerate() {
        push(&["-drive", &drive_arg(&format!("disk{i}"), &disk.path, disk.format, disk.read_only)]);
        push(&["-device", &format!("virtio-blk-{bus},drive=disk{i},id=vblk{i}")]);
    }
    if let Some(cidata) = &spec.config_drive {
        push(&["-drive", &drive_arg("cidata", cidata, DiskFormat::Raw, true)]);
        push(&["-device", &format!("virtio-blk-{bus},drive=cidata,id=vblkcidata")]);
    }
    for (i, nic) in spec.nics.iter().enumerate() {
        push(&["-netdev", &format!("tap,id=net{i},fd={}", super::jail::FIRST_TAP_FD + i as i32)]);
        push(&["-device", &format!("virtio-net-{bus},netdev=net{i},mac={},id=vnet{i}", nic.mac)]);
    }
    if spec.guest_agent {
        push(&["-chardev", &format!("socket,id=qga0,path={},server=on,wait=off", dir.guest_agent_socket().display())]);
        push(&["-device", &format!("virtio-serial-{bus},id=vser0")]);
        push(&["-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0"]);
    }
    push(&["-object", "rng-random,id=rng0,filename=/dev/urandom"]);
    push(&["-device", &format!("virtio-rng-{bus},rng=rng0,id=vrng0")]);

    if plan.start_paused {
        push(&["-S"]);
    }
    if plan.incoming {
        push(&["-incoming", "defer"]);
    }
    a
}

fn drive_arg(id: &str, file: &Path, format: DiskFormat, read_only: bool) -> String {
    let mut s =
        format!("id={id},if=none,file={},format={},cache=writeback,discard=unmap", file.display(), format.as_str());
    if read_only {
        s.push_str(",readonly=on");
    }
    s
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::spec::{Accel, DiskSpec, NicSpec};

    fn spec() -> VmSpec {
        VmSpec {
            name: "web-1".into(),
            vcpus: 1,
            memory_mib: 256,
            boot: BootSpec::DirectKernel {
                kernel: "/img/vmlinuz".into(),
                initrd: Some("/img/initrd.img".into()),
                cmdline: "console=ttyS0".into(),
            },
            disks: vec![DiskSpec {
                path: "/i/disk-0.qcow2".into(),
                format: DiskFormat::Qcow2,
                base: None,
                read_only: false,
            }],
            nics: vec![NicSpec { tap: "tap-a".into(), mac: "52:54:00:00:00:01".parse().unwrap() }],
            config_drive: Some("/i/cidata.img".into()),
            accel: Accel::Auto,
            netns: None,
            confinement: None,
            guest_agent: false,
        }
    }

    fn plan<'a>(spec: &'a VmSpec, dir: &'a InstanceDir) -> CommandPlan<'a> {
        CommandPlan {
            spec,
            dir,
            accel: ResolvedAccel::Tcg,
            tsc_khz: Some(2_445_404),
            sandbox: true,
            start_paused: false,
            incoming: false,
            ovmf_code: Path::new(OVMF_CODE),
        }
    }

    fn has_pair(args: &[String], flag: &str, value: &str) -> bool {
        args.windows(2).any(|w| w[0] == flag && w[1] == value)
    }

    #[test]
    fn direct_kernel_uses_microvm_with_mmio_devices_and_tsc_hint() {
        let spec = spec();
        let dir = InstanceDir::new("/i");
        let args = qemu_args(&plan(&spec, &dir));
        assert!(has_pair(&args, "-machine", "microvm,acpi=on"));
        assert!(has_pair(&args, "-accel", "tcg,tb-size=128"));
        assert!(has_pair(&args, "-append", "console=ttyS0 tsc_early_khz=2445404"));
        assert!(has_pair(&args, "-device", "virtio-blk-device,drive=disk0,id=vblk0"));
        assert!(has_pair(&args, "-device", "virtio-net-device,netdev=net0,mac=52:54:00:00:00:01,id=vnet0"));
        assert!(has_pair(&args, "-netdev", "tap,id=net0,fd=3"), "the tap is handed over open");
        assert!(has_pair(&args, "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"));
        assert!(!args.iter().any(|a| a == "-daemonize"), "a daemonizing fork breaks spawn=deny");
        assert!(has_pair(&args, "-device", "virtio-rng-device,rng=rng0,id=vrng0"));
        assert!(has_pair(
            &args,
            "-drive",
            "id=cidata,if=none,file=/i/cidata.img,format=raw,cache=writeback,discard=unmap,readonly=on"
        ));
        assert!(has_pair(&args, "-pidfile", "/i/qemu.pid"));
        assert!(has_pair(
            &args,
            "-chardev",
            "socket,id=serial0,path=/i/serial.sock,server=on,wait=off,logfile=/i/console.log,logappend=on"
        ));
        assert!(has_pair(&args, "-chardev", &qmp_chardev_arg(&dir)));
        assert!(!args.iter().any(|a| a == "-cpu" || a == "-S" || a == "-incoming"));
        assert_eq!(args[0], "-nodefaults");
    }

    #[test]
    fn kvm_gets_host_cpu_and_no_tsc_hint() {
        let spec = spec();
        let dir = InstanceDir::new("/i");
        let mut p = plan(&spec, &dir);
        p.accel = ResolvedAccel::Kvm;
        let args = qemu_args(&p);
        assert!(has_pair(&args, "-cpu", "host"));
        assert!(has_pair(&args, "-append", "console=ttyS0"));
    }

    #[test]
    fn existing_tsc_hint_is_kept() {
        assert_eq!(kernel_cmdline("tsc_early_khz=1", ResolvedAccel::Tcg, Some(5)), "tsc_early_khz=1");
        assert_eq!(kernel_cmdline("", ResolvedAccel::Tcg, Some(5)), "tsc_early_khz=5");
        assert_eq!(kernel_cmdline("x", ResolvedAccel::Tcg, None), "x");
    }

    #[test]
    fn a_guest_agent_channel_is_a_virtio_serial_port_on_its_own_socket() {
        let mut spec = spec();
        let dir = InstanceDir::new("/i");
        let without = qemu_args(&plan(&spec, &dir));
        assert!(!without.iter().any(|a| a.contains("qga")), "no channel unless asked: {without:?}");
        spec.guest_agent = true;
        let args = qemu_args(&plan(&spec, &dir));
        assert!(has_pair(&args, "-chardev", "socket,id=qga0,path=/i/qga.sock,server=on,wait=off"));
        assert!(has_pair(&args, "-device", "virtio-serial-device,id=vser0"));
        assert!(has_pair(&args, "-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0"));
    }

    #[test]
    fn firmware_boot_uses_q35_pci_and_per_vm_nvram() {
        let mut spec = spec();
        spec.boot = BootSpec::Firmware { firmware: Firmware::Ovmf };
        let dir = InstanceDir::new("/i");
        let args = qemu_args(&plan(&spec, &dir));
        assert!(has_pair(&args, "-machine", "q35"));
        assert!(has_pair(&args, "-device", "virtio-blk-pci,drive=disk0,id=vblk0"));
        assert!(has_pair(&args, "-drive", "if=pflash,format=raw,unit=1,file=/i/nvram.fd"));
        assert!(!args.iter().any(|a| a == "-kernel"));
    }

    #[test]
    fn restores_start_paused_and_wait_for_the_stream() {
        let mut spec = spec();
        spec.netns = Some("ns1".into());
        let dir = InstanceDir::new("/i");
        let mut p = plan(&spec, &dir);
        p.start_paused = true;
        p.incoming = true;
        let cmd = command(Path::new("/usr/bin/qemu"), &p);
        assert_eq!(cmd.program, Path::new("/usr/bin/qemu"));
        assert!(has_pair(&cmd.args, "-incoming", "defer"));
        assert!(cmd.args.iter().any(|a| a == "-S"));
    }
}
