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
//! This is the one module of the crate with `unsafe`: what the standard library does not wrap
//! (an `ioctl`, the ACL's `getxattr` and `setxattr`) and a `pre_exec` hook. Each block says what
//! keeps it sound.
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

/// Lets user `uid` read `files` (shared image files), by an ACL entry of its own on each: the
/// files' modes stay the agent's alone. The ACL is written directly (`system.posix_acl_access`),
/// as `setfacl -m u:UID:r` would, without a process a launch would wait for.
pub async fn grant_read(files: &[&Path], uid: u32) -> io::Result<()> {
    edit_acls(files, uid, Some(ACL_READ)).await
}

/// Removes user `uid`'s ACL entry from `files` (missing files or entries are fine).
pub async fn revoke(files: &[&Path], uid: u32) -> io::Result<()> {
    edit_acls(files, uid, None).await
}

async fn edit_acls(files: &[&Path], uid: u32, perm: Option<u16>) -> io::Result<()> {
    let files: Vec<std::path::PathBuf> = files.iter().map(|f| f.to_path_buf()).collect();
    tokio::task::spawn_blocking(move || {
        for file in &files {
            match edit_acl(file, uid, perm) {
                Err(e) if perm.is_none() && e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("ACL of {}: {e}", file.display()))),
                Ok(()) => {}
            }
        }
        Ok(())
    })
    .await
    .map_err(io::Error::other)?
}

// The POSIX ACL extended attribute (linux/posix_acl_xattr.h): a version, then entries of a
// tag, permissions and an id, sorted by tag (and id among named users).
const ACL_XATTR: &std::ffi::CStr = c"system.posix_acl_access";
const ACL_XATTR_VERSION: u32 = 2;
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;
const ACL_READ: u16 = 0x04;

/// One ACL entry: tag, permissions, id.
type AclEntry = (u16, u16, u32);

/// Sets (`Some(perm)`) or removes (`None`) user `uid`'s entry in `file`'s access ACL, keeping
/// every other entry and recomputing the mask as `setfacl` does (the union of the group
/// class); an ACL left without named entries goes back to plain mode bits.
fn edit_acl(file: &Path, uid: u32, perm: Option<u16>) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let path = std::ffi::CString::new(file.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    let mut entries = match read_acl(&path)? {
        Some(entries) => entries,
        None => {
            let mode = std::fs::metadata(file)?.permissions().mode();
            let bits = |shift: u32| ((mode >> shift) & 7) as u16;
            vec![
                (ACL_USER_OBJ, bits(6), ACL_UNDEFINED_ID),
                (ACL_GROUP_OBJ, bits(3), ACL_UNDEFINED_ID),
                (ACL_OTHER, bits(0), ACL_UNDEFINED_ID),
            ]
        }
    };
    let before = entries.clone();
    entries.retain(|&(tag, _, id)| tag != ACL_MASK && !(tag == ACL_USER && id == uid));
    if let Some(perm) = perm {
        entries.push((ACL_USER, perm, uid));
    }
    if entries.iter().any(|&(tag, ..)| tag == ACL_USER || tag == ACL_GROUP) {
        let class = entries.iter().filter(|&&(tag, ..)| matches!(tag, ACL_USER | ACL_GROUP_OBJ | ACL_GROUP));
        let mask = class.fold(0, |m, &(_, p, _)| m | p);
        entries.push((ACL_MASK, mask, ACL_UNDEFINED_ID));
    }
    entries.sort_by_key(|&(tag, _, id)| (tag, id));
    let mut sorted_before = before;
    sorted_before.sort_by_key(|&(tag, _, id)| (tag, id));
    if entries == sorted_before {
        return Ok(());
    }
    let mut value = ACL_XATTR_VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in &entries {
        value.extend_from_slice(&tag.to_le_bytes());
        value.extend_from_slice(&perm.to_le_bytes());
        value.extend_from_slice(&id.to_le_bytes());
    }
    // SAFETY: both strings are NUL-terminated and outlive the call; `value` is a live buffer
    // of the length passed.
    let rc = unsafe { libc::setxattr(path.as_ptr(), ACL_XATTR.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `file`'s access ACL entries, or `None` when it has none (its mode bits say it all).
fn read_acl(path: &std::ffi::CStr) -> io::Result<Option<Vec<AclEntry>>> {
    let mut buf = vec![0u8; 4 + 8 * 64];
    loop {
        // SAFETY: both strings are NUL-terminated and outlive the call; the kernel writes at
        // most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::getxattr(path.as_ptr(), ACL_XATTR.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return parse_acl(&buf[..n as usize]).map(Some);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(e),
        }
    }
}

fn parse_acl(value: &[u8]) -> io::Result<Vec<AclEntry>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "a malformed POSIX ACL");
    let (version, rest) = value.split_first_chunk::<4>().ok_or_else(bad)?;
    if u32::from_le_bytes(*version) != ACL_XATTR_VERSION || rest.len() % 8 != 0 {
        return Err(bad());
    }
    Ok(rest
        .chunks_exact(8)
        .map(|e| {
            let u16_at = |i: usize| u16::from_le_bytes([e[i], e[i + 1]]);
            (u16_at(0), u16_at(2), u32::from_le_bytes([e[4], e[5], e[6], e[7]]))
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Whether user `uid` can read `file` (`setpriv`, util-linux, drops to that user).
    fn readable_by(file: &Path, uid: u32) -> bool {
        let uid = uid.to_string();
        std::process::Command::new("setpriv")
            .args(["--reuid", &uid, "--regid", &uid, "--clear-groups", "cat"])
            .arg(file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    #[tokio::test]
    async fn a_grant_lets_that_user_alone_read_and_a_revoke_takes_only_its_own_entry_back() {
        use std::os::unix::fs::PermissionsExt;
        assert!(nix::unistd::geteuid().is_root(), "this test reads as other users: run it as root");
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.path().join("image");
        std::fs::write(&file, b"kernel").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (a, b) = (1_000_000_101, 1_000_000_102);
        assert!(!readable_by(&file, a));
        grant_read(&[&file], a).await.unwrap();
        grant_read(&[&file], a).await.unwrap();
        grant_read(&[&file], b).await.unwrap();
        assert!(readable_by(&file, a) && readable_by(&file, b));
        assert!(!readable_by(&file, 1_000_000_103), "a user without an entry reads nothing");
        revoke(&[&file], a).await.unwrap();
        assert!(!readable_by(&file, a) && readable_by(&file, b), "b keeps its entry");
        revoke(&[&file], b).await.unwrap();
        assert!(read_acl(&std::ffi::CString::new(file.as_os_str().as_encoded_bytes()).unwrap()).unwrap().is_none());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the last revoke restores the plain mode");
        revoke(&[&dir.path().join("gone")], a).await.unwrap();
        assert!(grant_read(&[&dir.path().join("gone")], a).await.is_err(), "a missing file to grant is an error");
    }

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
