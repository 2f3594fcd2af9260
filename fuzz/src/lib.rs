//! Oracles the fuzz targets share: readers written from the formats' rules, independent of the
//! code under test, that say what a rendered file *means*, so a target can compare that with what
//! was asked for.
//!
//! - [`yaml`]: the block-YAML subset the config drive writes (mappings, sequences, double-quoted
//!   scalars, `[]`, `{}`, integers), refusing anything outside it.
//! - [`mime`]: a `multipart/mixed` document split the way cloud-init's Python `email` parser
//!   splits it (a boundary line is any line that starts with `--boundary`).

pub mod mime;
pub mod yaml;
