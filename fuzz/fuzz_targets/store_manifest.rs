//! Snapshot and image manifests as read from the store: `cloud_store::Manifest::from_json` (the
//! parse and the checks that readers rely on).
//!
//! Two kinds of input. One that starts with `{` is the manifest's bytes (the seeds are real
//! manifests); anything else builds a manifest from libFuzzer's bytes, extents mostly near the
//! rules' edges, and runs `Manifest::validate` on it. Properties:
//! - a manifest is accepted exactly when the rules, stated here another way (every pair of
//!   extents disjoint, sorted by offset, each inside the file and one chunk at most; names one
//!   path component; a base only under a layered disk, and a SHA-256), say it is valid, and a
//!   refusal names the rule;
//! - an accepted manifest, written as the store writes it, reads back equal, and writing it
//!   again gives the same bytes; its chunk set and byte count agree with its extents.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use chrono::DateTime;
use cloud_store::{ChunkId, Extent, FileEntry, LAYERED_CHUNK, Manifest, ManifestError, PLAIN_CHUNK};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.first() == Some(&b'{') {
        match Manifest::from_json(data) {
            Ok(manifest) => {
                assert_eq!(rule_broken(&manifest), None, "accepted");
                check_accepted(&manifest);
            }
            Err(ManifestError::Json(_)) => assert!(serde_json::from_slice::<Manifest>(data).is_err()),
            Err(err) => {
                let parsed: Manifest = serde_json::from_slice(data).expect("refused by a rule, so it parsed");
                assert_eq!(Some(rule_of(&err)), rule_broken(&parsed), "{err}");
            }
        }
    } else if let Ok(manifest) = manifest(&mut Unstructured::new(data)) {
        match manifest.validate() {
            Ok(()) => {
                assert_eq!(rule_broken(&manifest), None, "accepted: {manifest:#?}");
                check_accepted(&manifest);
            }
            Err(ManifestError::Json(err)) => panic!("validate() parsed something: {err}"),
            Err(err) => assert_eq!(Some(rule_of(&err)), rule_broken(&manifest), "{err}: {manifest:#?}"),
        }
    }
});

fn check_accepted(manifest: &Manifest) {
    let json = serde_json::to_vec(manifest).expect("a manifest serializes");
    let back = Manifest::from_json(&json).unwrap_or_else(|e| panic!("written and read back: {e}"));
    assert_eq!(&back, manifest);
    assert_eq!(serde_json::to_vec(&back).expect("serializes"), json, "written twice, two texts");
    let extents = || manifest.files.values().flat_map(|f| &f.extents);
    let chunks: BTreeSet<ChunkId> = extents().filter_map(|e| e.chunk).collect();
    assert_eq!(manifest.chunks(), chunks);
    let bytes: u128 = extents().filter(|e| e.chunk.is_some()).map(|e| u128::from(e.len)).sum();
    assert_eq!(u128::from(manifest.data_bytes()), bytes);
}

/// The rules a refusal can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    FileName,
    Base,
    ExtentLength,
    ExtentOrder,
    ExtentPastEnd,
}

fn rule_of(err: &ManifestError) -> Rule {
    match err {
        ManifestError::FileName { .. } => Rule::FileName,
        ManifestError::Base { .. } => Rule::Base,
        ManifestError::ExtentLength { .. } => Rule::ExtentLength,
        ManifestError::ExtentOrder { .. } => Rule::ExtentOrder,
        ManifestError::ExtentPastEnd { .. } => Rule::ExtentPastEnd,
        ManifestError::Json(e) => panic!("not a rule: {e}"),
    }
}

/// The first rule `manifest` breaks, files in name order, extents in order (the order in which
/// a refusal is expected to name them), stated with pairs and 128-bit ends rather than as a
/// running offset.
fn rule_broken(manifest: &Manifest) -> Option<Rule> {
    for (name, file) in &manifest.files {
        if name.is_empty() || name == "." || name == ".." || name.chars().any(|c| c == '/' || c == '\0') {
            return Some(Rule::FileName);
        }
        if let Some(base) = &file.base {
            let hex = base.len() == 64 && base.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
            if !file.layered || !hex {
                return Some(Rule::Base);
            }
        }
        let chunk = if file.layered { LAYERED_CHUNK } else { PLAIN_CHUNK };
        let end = |e: &Extent| u128::from(e.offset) + u128::from(e.len);
        for (i, e) in file.extents.iter().enumerate() {
            if e.len == 0 || u64::from(e.len) > chunk {
                return Some(Rule::ExtentLength);
            }
            // Before it, every extent lies wholly at lower offsets.
            if file.extents[..i].iter().any(|before| end(before) > u128::from(e.offset)) {
                return Some(Rule::ExtentOrder);
            }
            if end(e) > u128::from(file.size) {
                return Some(Rule::ExtentPastEnd);
            }
        }
    }
    None
}

fn manifest(u: &mut Unstructured<'_>) -> Result<Manifest> {
    let mut files = BTreeMap::new();
    for _ in 0..u.int_in_range(1..=3)? {
        let name = match u.int_in_range(0..=9)? {
            0 => (*u.choose(&["", ".", "..", "a/b", "../x", "a\0", "/"])?).to_owned(),
            1 => u.arbitrary()?,
            n => format!("disk-{n}.qcow2"),
        };
        let layered = u.arbitrary()?;
        let chunk = if layered { LAYERED_CHUNK } else { PLAIN_CHUNK };
        let base = match u.int_in_range(0..=3)? {
            0 => Some(u.arbitrary()?),
            1 => Some(ChunkId(u.arbitrary()?).hex()),
            _ => None,
        };
        // Extents one after the other, each step a small gap or overlap, each length near 0 or
        // near a chunk; the size near their end.
        let mut extents = Vec::new();
        let mut at: u64 = u.arbitrary::<u8>()?.into();
        for _ in 0..u.int_in_range(0..=6)? {
            let len = match u.int_in_range(0..=3)? {
                0 => u.int_in_range(0..=2)?,
                1 => u32::try_from(chunk).unwrap_or(u32::MAX) - 1 + u.int_in_range(0..=2)?,
                2 => u.int_in_range(1..=u32::try_from(chunk).unwrap_or(u32::MAX))?,
                _ => u.arbitrary()?,
            };
            let offset = match u.int_in_range(0..=5)? {
                0 => at.saturating_sub(u.int_in_range(1..=4)?),
                1 => u.arbitrary()?,
                2 => u64::MAX - u64::from(u.arbitrary::<u16>()?),
                _ => at.saturating_add(u.int_in_range(0..=2)?),
            };
            let chunk = if u.arbitrary()? { Some(ChunkId(u.arbitrary()?)) } else { None };
            extents.push(Extent { offset, len, chunk });
            at = offset.saturating_add(u64::from(len));
        }
        let size = match u.int_in_range(0..=3)? {
            0 => at.saturating_sub(u.int_in_range(0..=2)?),
            1 => u.arbitrary()?,
            _ => at.saturating_add(u.int_in_range(0..=1)?),
        };
        files.insert(name, FileEntry { size, base, layered, extents });
    }
    let created_at = DateTime::from_timestamp(u.int_in_range(0..=4_102_444_800)?, u.int_in_range(0..=999_999_999)?)
        .unwrap_or_default();
    Ok(Manifest { name: format!("snapshots/{}", u.arbitrary::<u32>()?), created_at, files })
}
