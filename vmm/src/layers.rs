//! A disk's own data, out of a qcow2 overlay and back into a new one: how a snapshot's disks
//! are stored as ranges over their base image, and rebuilt on any host that has that base.
//!
//! ```text
//!  qemu-img map (depth 0 only)  ─▶  [(offset, len, at | zeroes)]   what the overlay itself holds
//!  qemu-img create -b base + qemu-io "write -s chunk off len" / "write -z off len"
//! ```
//! Reading needs no qcow2 parser: `qemu-img map` gives, for each range the overlay holds, where
//! its bytes lie in the file (uncompressed qcow2 stores a cluster's data contiguously), so
//! they are read straight from the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokio::process::Command;

use crate::qemu::process::{LaunchOptions, find_program};
use crate::snapshot::{SnapshotError, run_qemu_img};

/// A range of a disk that its overlay holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayRange {
    /// Offset on the virtual disk.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Where its bytes are in the qcow2 file, or `None` for zeroes.
    pub at: Option<u64>,
}

/// One range to write into a new overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerWrite {
    /// Offset on the virtual disk.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// A file whose first `len` bytes are the data, or `None` for zeroes.
    pub data: Option<PathBuf>,
}

#[derive(Deserialize)]
struct MapEntry {
    start: u64,
    length: u64,
    depth: u32,
    present: bool,
    zero: bool,
    data: bool,
    offset: Option<u64>,
}

fn invalid(path: &Path, reason: String) -> SnapshotError {
    SnapshotError::Io { path: path.to_owned(), source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason) }
}

/// The size of the disk the image file `path` describes (qcow2's virtual size, a raw file's
/// size), from `qemu-img info`.
pub async fn virtual_size(opts: &LaunchOptions, path: &Path) -> Result<u64, SnapshotError> {
    let qemu_img = find_program(&opts.qemu_img)
        .ok_or_else(|| SnapshotError::QemuImgNotFound { program: opts.qemu_img.clone() })?;
    let mut info = Command::new(&qemu_img);
    info.args(["info", "-U", "--output=json"]).arg(path);
    let info: serde_json::Value =
        serde_json::from_slice(&run_qemu_img(info, path).await?).map_err(|e| invalid(path, e.to_string()))?;
    info["virtual-size"].as_u64().ok_or_else(|| invalid(path, "qemu-img info gave no size".into()))
}

/// The virtual size of the qcow2 image `path` and the ranges it holds itself (not its backing
/// file's), from `qemu-img`.
pub async fn overlay_ranges(opts: &LaunchOptions, path: &Path) -> Result<(u64, Vec<OverlayRange>), SnapshotError> {
    let qemu_img = find_program(&opts.qemu_img)
        .ok_or_else(|| SnapshotError::QemuImgNotFound { program: opts.qemu_img.clone() })?;
    let mut info = Command::new(&qemu_img);
    info.args(["info", "-U", "--output=json", "-f", "qcow2"]).arg(path);
    let info: serde_json::Value =
        serde_json::from_slice(&run_qemu_img(info, path).await?).map_err(|e| invalid(path, e.to_string()))?;
    let size = info["virtual-size"].as_u64().ok_or_else(|| invalid(path, "qemu-img info gave no size".into()))?;
    let mut map = Command::new(&qemu_img);
    map.args(["map", "-U", "--output=json", "-f", "qcow2"]).arg(path);
    let entries: Vec<MapEntry> =
        serde_json::from_slice(&run_qemu_img(map, path).await?).map_err(|e| invalid(path, e.to_string()))?;
    let mut ranges = Vec::new();
    for e in entries.into_iter().filter(|e| e.depth == 0 && e.present) {
        let at = match (e.data, e.zero, e.offset) {
            (true, _, Some(at)) => Some(at),
            (false, true, _) => None,
            _ => return Err(invalid(path, format!("range at {} has no readable data (compressed?)", e.start))),
        };
        ranges.push(OverlayRange { offset: e.start, len: e.length, at });
    }
    Ok((size, ranges))
}

/// Creates the qcow2 overlay `path` of `size` bytes over `backing` (a base image and its
/// format, e.g. `qcow2` or `raw`; or none) and
/// writes `writes` into it; their data files must lie under `data_dir`. The overlay appears
/// only when complete (written to a temporary file first).
pub async fn write_overlay(
    opts: &LaunchOptions,
    path: &Path,
    backing: Option<(&Path, &str)>,
    size: u64,
    data_dir: &Path,
    writes: &[LayerWrite],
) -> Result<(), SnapshotError> {
    let qemu_img = find_program(&opts.qemu_img)
        .ok_or_else(|| SnapshotError::QemuImgNotFound { program: opts.qemu_img.clone() })?;
    let qemu_io =
        find_program(&opts.qemu_io).ok_or_else(|| SnapshotError::QemuImgNotFound { program: opts.qemu_io.clone() })?;
    let tmp = path.with_extension("qcow2.partial");
    let mut create = Command::new(&qemu_img);
    create.args(["create", "-q", "-f", "qcow2"]);
    if let Some((base, format)) = backing {
        create.arg("-b").arg(base).args(["-F", format]);
    }
    create.arg(&tmp).arg(size.to_string());
    run_qemu_img(create, &tmp).await?;
    // qemu-io splits its commands on spaces: data files are named relative to `data_dir`.
    for batch in writes.chunks(1000) {
        let mut io = Command::new(&qemu_io);
        io.current_dir(data_dir).args(["-f", "qcow2"]);
        for w in batch {
            let command = match &w.data {
                Some(file) => {
                    let rel = file
                        .strip_prefix(data_dir)
                        .ok()
                        .and_then(Path::to_str)
                        .filter(|r| !r.is_empty() && !r.contains(char::is_whitespace));
                    let Some(rel) = rel else {
                        return Err(invalid(file, format!("not a file under {} without spaces", data_dir.display())));
                    };
                    format!("write -q -s {rel} {} {}", w.offset, w.len)
                }
                None => format!("write -q -z {} {}", w.offset, w.len),
            };
            io.arg("-c").arg(command);
        }
        io.arg(std::path::absolute(&tmp).map_err(|source| SnapshotError::Io { path: tmp.clone(), source })?);
        let out = run_qemu_img(io, &tmp).await;
        if let Err(e) = out {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    }
    tokio::fs::rename(&tmp, path).await.map_err(|source| SnapshotError::Io { path: path.to_owned(), source })
}

/// `qcow2` or `raw`: the format of the image file `path`, by its magic.
pub fn image_format(path: &Path) -> std::io::Result<&'static str> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(path)?.read(&mut magic)?;
    Ok(if n == 4 && magic == *b"QFI\xfb" { "qcow2" } else { "raw" })
}

/// Writes the whole disk `image` (an overlay and its backing chain) as one standalone qcow2 file
/// `out`, with no backing file.
pub async fn flatten(opts: &LaunchOptions, image: &Path, out: &Path) -> Result<(), SnapshotError> {
    let qemu_img = find_program(&opts.qemu_img)
        .ok_or_else(|| SnapshotError::QemuImgNotFound { program: opts.qemu_img.clone() })?;
    let mut convert = Command::new(&qemu_img);
    convert.args(["convert", "-q", "-O", "qcow2"]).arg(image).arg(out);
    run_qemu_img(convert, out).await.map(drop)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn have_qemu_utils() {
        assert!(
            find_program(Path::new("qemu-io")).is_some() && find_program(Path::new("qemu-img")).is_some(),
            "qemu-img and qemu-io are missing: install the Debian package qemu-utils"
        );
    }

    async fn sh(cmd: &str) {
        let ok = Command::new("sh").arg("-c").arg(cmd).status().await.unwrap().success();
        assert!(ok, "{cmd}");
    }

    #[tokio::test]
    async fn an_overlay_read_as_ranges_and_written_back_is_the_same_disk() {
        have_qemu_utils();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        sh(&format!(
            "qemu-img create -q -f qcow2 {d}/base.qcow2 16M && qemu-io -f qcow2 -c 'write -q -P 0x11 0 8M' {d}/base.qcow2 \
             && qemu-img create -q -f qcow2 -b {d}/base.qcow2 -F qcow2 {d}/top.qcow2 \
             && qemu-io -f qcow2 -c 'write -q -P 0x22 1M 192k' -c 'write -q -z 4M 64k' -c 'write -q -P 0x33 12M 64k' {d}/top.qcow2"
        ))
        .await;
        let opts = LaunchOptions::default();
        let top = dir.path().join("top.qcow2");
        let (size, ranges) = overlay_ranges(&opts, &top).await.unwrap();
        assert_eq!(size, 16 << 20);
        let shape: Vec<_> = ranges.iter().map(|r| (r.offset, r.len, r.at.is_some())).collect();
        assert_eq!(shape, vec![(1 << 20, 192 << 10, true), (4 << 20, 64 << 10, false), (12 << 20, 64 << 10, true)]);
        // Each data range as a file of its own, as the chunk cache holds them.
        let chunks = dir.path().join("chunks");
        std::fs::create_dir_all(&chunks).unwrap();
        let bytes = std::fs::read(&top).unwrap();
        let writes: Vec<_> = ranges
            .iter()
            .enumerate()
            .map(|(i, r)| LayerWrite {
                offset: r.offset,
                len: r.len,
                data: r.at.map(|at| {
                    let file = chunks.join(format!("c{i}"));
                    std::fs::write(&file, &bytes[at as usize..(at + r.len) as usize]).unwrap();
                    file
                }),
            })
            .collect();
        let rebuilt = dir.path().join("rebuilt.qcow2");
        write_overlay(&opts, &rebuilt, Some((&dir.path().join("base.qcow2"), "qcow2")), size, &chunks, &writes)
            .await
            .unwrap();
        sh(&format!("qemu-img compare -q {d}/top.qcow2 {d}/rebuilt.qcow2")).await;
        let (_, again) = overlay_ranges(&opts, &rebuilt).await.unwrap();
        assert_eq!(
            again.iter().map(|r| (r.offset, r.len)).collect::<Vec<_>>(),
            shape.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>()
        );
    }
}
