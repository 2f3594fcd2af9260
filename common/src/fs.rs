//! Durable writes of small files, shared by the control plane and the host agent (the fleet CA,
//! the bootstrap token, a host's identity and lease): a crash leaves the old file or the new
//! one, never half of one, and a completed write survives a power cut.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes the temporary files of concurrent writes within one process.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `contents`, created with permission bits `mode` (before the umask):
/// written to a temporary file in the same directory, synced, renamed over `path`, and the
/// directory synced so the rename itself is durable.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    replace(path, contents, mode, true)
}

/// [`write_atomic`] without the syncs: safe against the process dying (the old file or the
/// new one), not against a power cut. For state that a power cut makes moot anyway, written
/// often (a host's lease expiry, every few seconds: its VMs do not survive a power cut either).
pub fn replace_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    replace(path, contents, mode, false)
}

/// Writes `contents` over `path` in place (created with `mode` if missing): no new file, no
/// rename, no sync. For a small value rewritten every few seconds whose every version has the
/// same length (a host's lease expiry): a process that dies leaves the old value or the new one
/// (one `write` of a few bytes); only a power cut, which makes the value moot, could tear it,
/// and a torn value that does not parse reads as none.
pub fn overwrite_in_place(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = OpenOptions::new().write(true).create(true).truncate(false).mode(mode).open(path)?;
    file.write_all_at(contents, 0)?;
    file.set_len(contents.len() as u64)
}

/// The permission bits of `path` when its group or others may do anything with it (a secret
/// that should be its owner's alone); `None` when it is private or does not exist.
pub fn open_to_others(path: &Path) -> io::Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt;
    match fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            Ok((mode & 0o077 != 0).then_some(mode))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Marks the cached file `path` as used now (its modification time), best effort: a file whose
/// time cannot be set is only evicted sooner by [`evict_lru`].
pub fn touch(path: &Path) {
    let _ = OpenOptions::new().append(true).open(path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
}

/// A file of a cache that [`evict_lru`] may remove.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cached {
    /// When it was last used (its modification time: see [`touch`]).
    pub used: std::time::SystemTime,
    pub len: u64,
    pub path: std::path::PathBuf,
    /// Never removed (in use).
    pub pinned: bool,
}

/// Removes the files of a cache used longest ago until they total at most `target` bytes, never
/// a pinned one nor one used within `keep_recent` (someone may be about to read it). Returns the
/// removed files.
pub fn evict_lru(mut files: Vec<Cached>, target: u64, keep_recent: std::time::Duration) -> io::Result<Vec<Cached>> {
    let mut total: u64 = files.iter().map(|f| f.len).sum();
    let recent = std::time::SystemTime::now() - keep_recent;
    files.sort();
    let mut removed = Vec::new();
    for file in files {
        if total <= target {
            break;
        }
        if file.pinned || file.used > recent {
            continue;
        }
        match fs::remove_file(&file.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        total -= file.len;
        removed.push(file);
    }
    Ok(removed)
}

fn replace(path: &Path, contents: &[u8], mode: u32, durable: bool) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{}.{}.{n}.tmp", name.to_string_lossy(), std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        file.write_all(contents)?;
        if durable {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_secret_is_open_to_others_when_group_or_other_bits_are_set() {
        let dir = std::env::temp_dir().join(format!("cloud-common-open-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        write_atomic(&path, b"k", 0o600).unwrap();
        assert_eq!(open_to_others(&path).unwrap(), None);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(open_to_others(&path).unwrap(), Some(0o640));
        assert_eq!(open_to_others(&dir.join("missing")).unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn replaces_the_file_whole_with_the_mode_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("cloud-common-fs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        write_atomic(&path, b"first", 0o600).unwrap();
        replace_atomic(&path, b"second", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["secret"]);
        // A directory that does not exist fails, and leaves nothing behind.
        assert!(write_atomic(&dir.join("missing/file"), b"x", 0o644).is_err());
        // In place: the same file, the new contents whole, a longer old value cut off.
        let lease = dir.join("lease");
        overwrite_in_place(&lease, b"old value, longer", 0o644).unwrap();
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&lease).unwrap());
        overwrite_in_place(&lease, b"new value", 0o644).unwrap();
        assert_eq!(fs::read(&lease).unwrap(), b"new value");
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&fs::metadata(&lease).unwrap()), inode);
        fs::remove_dir_all(&dir).unwrap();
    }
}
