//! What QEMU is handed instead of privileges: tap descriptors opened for it, and a child that
//! joins its cgroups, leaves the caller's session and becomes the VM's own user before `exec`.
//!
//! ```text
//!  caller (root)                         child, between fork and exec (async-signal-safe only)
//!  open_tap(T) ─▶ fd attached to tap T   write "0" to each cgroup.procs  (joins, still root)
//!  open cgroup.procs (CLOEXEC)           setsid()                        (outlives the caller)
//!  Command + prepare(…) ───────────────▶ dup2 tap fds to 3, 4, …         (-netdev tap,fd=3)
//!                                        setgroups([]) setgid setuid     (the VM's user)
//!                                        PR_SET_NO_NEW_PRIVS
//! ```
//! This is the one module of the crate with `unsafe`: an `ioctl` the standard library does not
//! wrap, and a `pre_exec` hook. Each block says what keeps it sound.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::libc;
use serde::{Deserialize, Serialize};

/// Who QEMU runs as and where its resources are counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confinement {
    /// The VM's own user id (never 0).
    pub uid: u32,
    /// The VM's own group id (never 0).
    pub gid: u32,
    /// cgroup directories (one per hierarchy) QEMU is put in before it runs any code of its own.
    #[serde(default)]
    pub cgroups: Vec<std::path::PathBuf>,
}

/// The first descriptor number the tap fds get in QEMU (`-netdev tap,fd=3`, `fd=4`, …).
pub const FIRST_TAP_FD: RawFd = 3;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _rest: [u8; 22],
}

/// Opens `/dev/net/tun` and attaches it to the existing tap `name` (in network namespace
/// `netns` when given: the tap belongs to the namespace the descriptor was opened in), the way
/// QEMU would have with `ifname=`. The descriptor is close-on-exec: only [`prepare`] passes it on.
pub fn open_tap(name: &str, netns: Option<&str>) -> io::Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad tap name {name:?}")));
    }
    let Some(netns) = netns else { return attach(name) };
    // setns changes only the calling thread: do it on a thread of its own that ends here.
    let (name, ns) = (name.to_owned(), Path::new("/run/netns").join(netns));
    std::thread::spawn(move || {
        let ns_file = File::open(&ns)?;
        nix::sched::setns(ns_file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        attach(&name)
    })
    .join()
    .map_err(|_| io::Error::other("the tap-opening thread panicked"))?
}

fn attach(name: &str) -> io::Result<OwnedFd> {
    let tun = OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open("/dev/net/tun")?;
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, _rest: [0; 22] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `tun` is an open descriptor for the duration of the call, and TUNSETIFF reads and
    // writes one `struct ifreq`, which `IfReq` matches in layout and size (40 bytes), alive and
    // exclusively borrowed for the call.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &raw mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tun.into())
}

/// Opens the `cgroup.procs` files of `cgroups` for the child to join (close-on-exec).
pub fn open_cgroup_procs(cgroups: &[std::path::PathBuf]) -> io::Result<Vec<OwnedFd>> {
    cgroups
        .iter()
        .map(|dir| {
            let path = dir.join("cgroup.procs");
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
                .map(OwnedFd::from)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))
        })
        .collect()
}

/// Makes `command`'s child join the cgroups behind `procs`, start a session of its own, get
/// `taps` as descriptors 3, 4, … and run as `user` (when given). The caller keeps `taps` and
/// `procs` open until the child is spawned.
pub fn prepare(command: &mut tokio::process::Command, taps: &[OwnedFd], procs: &[OwnedFd], user: Option<(u32, u32)>) {
    let taps: Vec<RawFd> = taps.iter().map(AsRawFd::as_raw_fd).collect();
    let procs: Vec<RawFd> = procs.iter().map(AsRawFd::as_raw_fd).collect();
    let check = |rc: libc::c_int| if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) };
    let hook = move || -> io::Result<()> {
        // SAFETY (whole hook): it runs in the forked child before exec, where only
        // async-signal-safe calls are allowed: it calls only raw system calls (write, setsid,
        // fcntl, dup2, setgroups, setgid, setuid, prctl) on descriptors the parent keeps open
        // until the spawn returns, and allocates nothing (the vectors were built before fork).
        unsafe {
            for &fd in &procs {
                // "0" is the writing process itself, in v1 and v2 alike.
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            check(libc::setsid())?;
            // First out of the way (a source may sit on a target number), then into place;
            // dup2 leaves the copies without close-on-exec.
            let base = FIRST_TAP_FD + 64;
            for (i, &fd) in taps.iter().enumerate() {
                let high = check(libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, base + i as RawFd))?;
                check(libc::dup2(high, FIRST_TAP_FD + i as RawFd))?;
            }
            if let Some((uid, gid)) = user {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
            }
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        }
        Ok(())
    };
    // SAFETY: the hook is async-signal-safe (see inside) and captures only plain integers.
    unsafe {
        command.pre_exec(hook);
    }
}

/// Lets user `uid` read `files` (shared image files), by an ACL entry of its own on each
/// (`setfacl`, Debian package `acl`, one process for all: a launch waits for it): the files'
/// modes stay the agent's alone.
pub async fn grant_read(files: &[&Path], uid: u32) -> io::Result<()> {
    setfacl(&["-m", &format!("u:{uid}:r")], files).await
}

/// Removes user `uid`'s ACL entry from `files` (missing files or entries are fine).
pub async fn revoke(files: &[&Path], uid: u32) -> io::Result<()> {
    let mut there = Vec::with_capacity(files.len());
    for file in files {
        if tokio::fs::try_exists(file).await.unwrap_or(false) {
            there.push(*file);
        }
    }
    setfacl(&["-x", &format!("u:{uid}")], &there).await
}

async fn setfacl(args: &[&str], files: &[&Path]) -> io::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let out =
        tokio::process::Command::new("setfacl").args(args).args(files).output().await.map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => io::Error::new(e.kind(), "setfacl not found (install the Debian package acl)"),
            _ => e,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(io::Error::other(format!("setfacl {} failed: {}", args.join(" "), stderr.trim())));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_is_the_kernels_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn tap_names_are_checked_before_any_system_call() {
        for bad in ["", "a-name-longer-than-15", "a\0b"] {
            assert_eq!(open_tap(bad, None).unwrap_err().kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }
}
