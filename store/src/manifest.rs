//! Manifests: what a stored object (a snapshot, an image) is made of, file by file, as extents
//! of chunks; and how files are cut into them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Chunk size of plain files (memory state, config drives, image files).
pub const PLAIN_CHUNK: u64 = 1 << 20;
/// Chunk size of layered disks: the qcow2 cluster size, so that a guest's write of N clusters
/// changes N chunks and no more.
pub const LAYERED_CHUNK: u64 = 64 << 10;

/// A chunk's name: the SHA-256 of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The id of `data`.
    pub fn of(data: &[u8]) -> Self {
        ChunkId(Sha256::digest(data).into())
    }

    /// Lowercase hex.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.hex())
    }
}

impl std::str::FromStr for ChunkId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!("not a lowercase hex SHA-256: {s:?}"));
        }
        hex::decode_to_slice(s, &mut out).map_err(|e| format!("not a lowercase hex SHA-256: {s:?}: {e}"))?;
        Ok(ChunkId(out))
    }
}

impl Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A stored object: its files by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The object's name in the store (`snapshots/<uuid>`).
    pub name: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// Its files.
    pub files: BTreeMap<String, FileEntry>,
}

/// What is wrong with a manifest read from the store (see [`Manifest::from_json`]).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of a manifest's shape.
    #[error("not a manifest")]
    Json(#[source] serde_json::Error),
    /// A file name that is not one path component (files are written under their names).
    #[error("file name {name:?} is not a single path component")]
    FileName { name: String },
    /// A base given for a plain file, or a base that is not a SHA-256.
    #[error("file {file}: base {base:?} is not the lowercase hex SHA-256 of a layered disk's base")]
    Base { file: String, base: String },
    /// An extent of no bytes, or of more than one chunk.
    #[error("file {file}: extent {index} has {len} bytes (1 to {chunk} expected)")]
    ExtentLength { file: String, index: usize, len: u32, chunk: u64 },
    /// An extent that starts before the one ahead of it ends.
    #[error("file {file}: extent {index} at {offset} overlaps or precedes the one before it")]
    ExtentOrder { file: String, index: usize, offset: u64 },
    /// An extent that ends past the file's size.
    #[error("file {file}: extent {index} at {offset} ends past the file's {size} bytes")]
    ExtentPastEnd { file: String, index: usize, offset: u64, size: u64 },
}

impl Manifest {
    /// Reads a manifest as stored and checks it (see [`Manifest::validate`]): a manifest comes
    /// from a store that other machines write, and the extents it lists become file writes.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks what `cut` guarantees and readers rely on: file names are single path
    /// components; a base belongs to a layered disk and is a SHA-256; each file's extents are
    /// 1 byte to one chunk long (64 KiB for a layered disk, 1 MiB otherwise), in ascending
    /// order, never overlapping, and within the file's size.
    pub fn validate(&self) -> Result<(), ManifestError> {
        for (name, file) in &self.files {
            if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
                return Err(ManifestError::FileName { name: name.clone() });
            }
            if let Some(base) = &file.base
                && (!file.layered || base.parse::<ChunkId>().is_err())
            {
                return Err(ManifestError::Base { file: name.clone(), base: base.clone() });
            }
            let (chunk, size) = (if file.layered { LAYERED_CHUNK } else { PLAIN_CHUNK }, file.size);
            let mut free_from = 0;
            for (index, e) in file.extents.iter().enumerate() {
                let (file, offset) = (name.clone(), e.offset);
                if e.len == 0 || u64::from(e.len) > chunk {
                    return Err(ManifestError::ExtentLength { file, index, len: e.len, chunk });
                }
                if offset < free_from {
                    return Err(ManifestError::ExtentOrder { file, index, offset });
                }
                free_from = match offset.checked_add(u64::from(e.len)) {
                    Some(end) if end <= size => end,
                    _ => return Err(ManifestError::ExtentPastEnd { file, index, offset, size }),
                };
            }
        }
        Ok(())
    }

    /// Every chunk it references.
    pub fn chunks(&self) -> BTreeSet<ChunkId> {
        self.files.values().flat_map(|f| f.extents.iter().filter_map(|e| e.chunk)).collect()
    }

    /// Bytes of data held in chunks (not zero extents), counting a shared chunk each time.
    pub fn data_bytes(&self) -> u64 {
        self.files.values().flat_map(|f| &f.extents).filter(|e| e.chunk.is_some()).map(|e| u64::from(e.len)).sum()
    }
}

/// One file of a stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Its size in bytes (for a layered disk: the virtual size).
    pub size: u64,
    /// For a layered disk, the SHA-256 of the base image its extents lie over (ranges no
    /// extent covers read from the base); `None` for a plain file (uncovered ranges are zeroes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Whether the file is a layered disk.
    #[serde(default)]
    pub layered: bool,
    /// Its content, in ascending offsets, never overlapping. Zero extents of a layered disk
    /// hide the base's data there; of a plain file, they are holes.
    pub extents: Vec<Extent>,
}

/// A range of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extent {
    /// Offset in the file.
    pub offset: u64,
    /// Length in bytes (at most one chunk).
    pub len: u32,
    /// Its chunk, or `None` for zeroes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<ChunkId>,
}

/// A file to store, as ranges of a local file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Its name in the manifest.
    pub name: String,
    /// Where its data is read from.
    pub path: PathBuf,
    /// Its size (virtual size for a layered disk).
    pub size: u64,
    /// The base of a layered disk (see [`FileEntry::base`]); `None` for a plain file.
    pub layered: Option<Option<String>>,
    /// What to store, in ascending offsets.
    pub ranges: Vec<SourceRange>,
}

/// A range of a [`Source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRange {
    /// Offset in the stored file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Where the bytes are in the local file, or `None` for zeroes.
    pub at: Option<u64>,
}

impl Source {
    /// A whole plain file.
    pub fn plain(name: &str, path: &Path) -> std::io::Result<Source> {
        let size = std::fs::metadata(path)?.len();
        Ok(Source {
            name: name.to_owned(),
            path: path.to_owned(),
            size,
            layered: None,
            ranges: vec![SourceRange { offset: 0, len: size, at: Some(0) }],
        })
    }

    fn chunk_size(&self) -> u64 {
        if self.layered.is_some() { LAYERED_CHUNK } else { PLAIN_CHUNK }
    }
}

/// Where a chunk's bytes are in a local file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkSource {
    pub path: PathBuf,
    pub at: u64,
    pub len: u32,
}

/// Cuts and hashes `sources` (blocking: reads every byte): the files of the manifest, and where
/// each distinct chunk can be read. Chunks are cut at multiples of the chunk size in the stored
/// file, so a change moves no boundary; all-zero chunks become zero extents.
pub(crate) fn cut(
    sources: &[Source],
) -> std::io::Result<(BTreeMap<String, FileEntry>, BTreeMap<ChunkId, ChunkSource>)> {
    let mut files = BTreeMap::new();
    let mut chunks = BTreeMap::new();
    let mut buf = Vec::new();
    for source in sources {
        let step = source.chunk_size();
        let mut file = std::fs::File::open(&source.path)?;
        let mut extents = Vec::new();
        for range in &source.ranges {
            let end = range.offset + range.len;
            let mut offset = range.offset;
            while offset < end {
                let next = ((offset / step) + 1) * step;
                let len = next.min(end) - offset;
                let len32 = u32::try_from(len).map_err(std::io::Error::other)?;
                let chunk = match range.at {
                    None => None,
                    Some(at) => {
                        let at = at + (offset - range.offset);
                        buf.resize(len32 as usize, 0);
                        file.seek(SeekFrom::Start(at))?;
                        file.read_exact(&mut buf)?;
                        if buf.iter().all(|b| *b == 0) {
                            None
                        } else {
                            let id = ChunkId::of(&buf);
                            chunks.entry(id).or_insert(ChunkSource { path: source.path.clone(), at, len: len32 });
                            Some(id)
                        }
                    }
                };
                extents.push(Extent { offset, len: len32, chunk });
                offset += len;
            }
        }
        let (base, layered) = match &source.layered {
            Some(base) => (base.clone(), true),
            None => (None, false),
        };
        files.insert(source.name.clone(), FileEntry { size: source.size, base, layered, extents });
    }
    Ok((files, chunks))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_files_are_cut_at_fixed_offsets_with_zero_chunks_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut data = vec![0u8; (PLAIN_CHUNK * 2 + 10) as usize];
        data[5] = 1;
        data[(PLAIN_CHUNK * 2 + 3) as usize] = 2;
        std::fs::write(&path, &data).unwrap();
        let (files, chunks) = cut(&[Source::plain("f", &path).unwrap()]).unwrap();
        let f = &files["f"];
        assert_eq!(f.size, data.len() as u64);
        let lens: Vec<_> = f.extents.iter().map(|e| (e.offset, e.len, e.chunk.is_some())).collect();
        assert_eq!(
            lens,
            vec![(0, PLAIN_CHUNK as u32, true), (PLAIN_CHUNK, PLAIN_CHUNK as u32, false), (PLAIN_CHUNK * 2, 10, true)]
        );
        assert_eq!(chunks.len(), 2);
    }

    #[test]
    fn a_change_moves_no_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let mut data: Vec<u8> = (0..(LAYERED_CHUNK * 8)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let source = |path: &Path| Source {
            name: "d".into(),
            path: path.to_owned(),
            size: 1 << 30,
            layered: Some(None),
            ranges: vec![SourceRange { offset: 1 << 20, len: LAYERED_CHUNK * 8, at: Some(0) }],
        };
        let (_, before) = cut(&[source(&path)]).unwrap();
        data[(LAYERED_CHUNK * 3 + 7) as usize] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        let (files, after) = cut(&[source(&path)]).unwrap();
        assert_eq!(after.keys().filter(|c| !before.contains_key(c)).count(), 1);
        assert_eq!(files["d"].extents[0].offset, 1 << 20);
    }

    fn manifest(files: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "name": "snapshots/x", "created_at": "2026-12-02T06:15:00Z", "files": files,
        }))
        .unwrap()
    }

    #[test]
    fn manifests_as_cut_are_valid_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let data: Vec<u8> = (0..(LAYERED_CHUNK * 3 + 5)).map(|i| (i % 7) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let sources = [
            Source::plain("memory.state", &path).unwrap(),
            Source {
                name: "disk-0.qcow2".into(),
                path: path.clone(),
                size: 1 << 30,
                layered: Some(Some(ChunkId::of(b"base").hex())),
                ranges: vec![
                    SourceRange { offset: 0, len: 10, at: Some(0) },
                    SourceRange { offset: LAYERED_CHUNK * 2 - 3, len: LAYERED_CHUNK * 3, at: Some(5) },
                    SourceRange { offset: (1 << 30) - 512, len: 512, at: None },
                ],
            },
        ];
        let (files, _) = cut(&sources).unwrap();
        let manifest = Manifest { name: "snapshots/x".into(), created_at: Utc::now(), files };
        let json = serde_json::to_vec(&manifest).unwrap();
        assert_eq!(Manifest::from_json(&json).unwrap(), manifest);
    }

    #[test]
    fn manifests_whose_extents_or_names_cannot_be_trusted_are_refused() {
        let id = ChunkId::of(b"x").hex();
        let ok = serde_json::json!({"f": {"size": 10, "extents": [{"offset": 0, "len": 4, "chunk": id}, {"offset": 4, "len": 6}]}});
        assert!(Manifest::from_json(&manifest(ok)).is_ok());
        let refused = |files: serde_json::Value| Manifest::from_json(&manifest(files)).unwrap_err();

        assert!(matches!(refused(serde_json::json!({"f": {"size": 1}})), ManifestError::Json(_)));
        for name in ["", ".", "..", "a/b", "../etc", "a\0b"] {
            let err = refused(serde_json::json!({ name: {"size": 0, "extents": []} }));
            assert!(matches!(&err, ManifestError::FileName { name: n } if n == name), "{name:?}: {err}");
        }
        let err = refused(serde_json::json!({"f": {"size": 0, "base": id, "extents": []}}));
        assert!(matches!(err, ManifestError::Base { .. }), "a plain file over a base");
        let err = refused(serde_json::json!({"f": {"size": 0, "layered": true, "base": "../x", "extents": []}}));
        assert!(matches!(err, ManifestError::Base { .. }));

        let extents = |extents: serde_json::Value| serde_json::json!({"f": {"size": 1 << 21, "extents": extents}});
        let err = refused(extents(serde_json::json!([{"offset": 0, "len": 0}])));
        assert!(matches!(err, ManifestError::ExtentLength { index: 0, len: 0, .. }));
        // One chunk at most: 1 MiB for a plain file, 64 KiB for a layered disk.
        assert!(
            Manifest::from_json(&manifest(extents(serde_json::json!([{"offset": 0, "len": PLAIN_CHUNK}])))).is_ok()
        );
        let err = refused(extents(serde_json::json!([{"offset": 0, "len": PLAIN_CHUNK + 1}])));
        assert!(matches!(err, ManifestError::ExtentLength { .. }));
        let layered = serde_json::json!({"f": {"size": 1 << 21, "layered": true, "extents": [{"offset": 0, "len": LAYERED_CHUNK + 1}]}});
        assert!(matches!(refused(layered), ManifestError::ExtentLength { chunk: LAYERED_CHUNK, .. }));
        // A zero extent of 4 GiB - 1 is what a hostile manifest would use to make a reader
        // allocate that much.
        let err = refused(extents(serde_json::json!([{"offset": 0, "len": u32::MAX}])));
        assert!(matches!(err, ManifestError::ExtentLength { .. }));

        let err = refused(extents(serde_json::json!([{"offset": 10, "len": 5}, {"offset": 14, "len": 1}])));
        assert!(matches!(err, ManifestError::ExtentOrder { index: 1, offset: 14, .. }));
        let err = refused(extents(serde_json::json!([{"offset": 10, "len": 5}, {"offset": 0, "len": 1}])));
        assert!(matches!(err, ManifestError::ExtentOrder { index: 1, .. }));
        let err = refused(extents(serde_json::json!([{"offset": (1 << 21) - 1, "len": 2}])));
        assert!(matches!(err, ManifestError::ExtentPastEnd { index: 0, .. }));
        let err = refused(extents(serde_json::json!([{"offset": u64::MAX, "len": 2}])));
        assert!(matches!(err, ManifestError::ExtentPastEnd { .. }), "an end past u64 is no wrap-around");
    }

    #[test]
    fn chunk_ids_parse_only_lowercase_hex() {
        let id = ChunkId::of(b"x");
        assert_eq!(id.hex().parse::<ChunkId>().unwrap(), id);
        assert!(id.hex().to_uppercase().parse::<ChunkId>().is_err());
        assert!("ab".parse::<ChunkId>().is_err());
    }
}
