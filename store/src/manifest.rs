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

impl Manifest {
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

    #[test]
    fn chunk_ids_parse_only_lowercase_hex() {
        let id = ChunkId::of(b"x");
        assert_eq!(id.hex().parse::<ChunkId>().unwrap(), id);
        assert!(id.hex().to_uppercase().parse::<ChunkId>().is_err());
        assert!("ab".parse::<ChunkId>().is_err());
    }
}
