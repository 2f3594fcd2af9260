//! OpenSSH public keys: `<type> <base64> [comment]`, as in `authorized_keys` and `known_hosts`.
//!
//! [`PublicKey::parse`] checks a key strictly, because keys end up in files inside guests (users'
//! keys) and on users' machines (guests' host keys): a known type, a body that decodes to a
//! well-formed key blob of that type, no control characters (so no second line can be smuggled
//! in), a comment of printable ASCII (what the config drive takes), at most 16 KiB.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The longest public key line accepted: 16 KiB (an RSA-16384 key is about 2.8 KiB).
pub const MAX_PUBLIC_KEY_BYTES: usize = 16 * 1024;

/// Key types accepted, and how many length-prefixed fields their blob has (type included).
const KEY_TYPES: &[(&str, usize)] = &[
    ("ssh-ed25519", 2),
    ("ssh-rsa", 3),
    ("ecdsa-sha2-nistp256", 3),
    ("ecdsa-sha2-nistp384", 3),
    ("ecdsa-sha2-nistp521", 3),
    ("sk-ssh-ed25519@openssh.com", 3),
    ("sk-ecdsa-sha2-nistp256@openssh.com", 4),
];

/// What is wrong with a public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicKeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is {len} bytes long; at most {MAX_PUBLIC_KEY_BYTES} are accepted")]
    TooLong { len: usize },
    #[error("the key contains control characters (one key per request, on one line)")]
    ControlCharacter,
    #[error("unsupported key type {key_type:?} (options before the type are not accepted either)")]
    UnknownType { key_type: String },
    #[error("the key has no base64 body after its type")]
    MissingBody,
    #[error("the key's body is not valid base64")]
    Base64,
    #[error("the key's body is not a well-formed {key_type} key")]
    Malformed { key_type: String },
    #[error("the key's body is a {embedded:?} key, not {declared:?}")]
    TypeMismatch { declared: String, embedded: String },
    #[error("the key's comment is not printable ASCII (guests get their keys in ASCII); change or remove it")]
    CommentNotAscii,
}

/// An OpenSSH public key, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub key_type: String,
    /// The decoded key blob.
    pub blob: Vec<u8>,
    pub comment: Option<String>,
}

impl PublicKey {
    /// Parses one `authorized_keys`-style line (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, PublicKeyError> {
        if text.len() > MAX_PUBLIC_KEY_BYTES {
            return Err(PublicKeyError::TooLong { len: text.len() });
        }
        let text = text.trim();
        if text.is_empty() {
            return Err(PublicKeyError::Empty);
        }
        // Tabs separate fields in some files; every other control character is refused.
        if text.chars().any(|c| c.is_control() && c != '\t') {
            return Err(PublicKeyError::ControlCharacter);
        }
        let (key_type, rest) = next_field(text);
        let Some(&(_, field_count)) = KEY_TYPES.iter().find(|(t, _)| *t == key_type) else {
            return Err(PublicKeyError::UnknownType { key_type: key_type.chars().take(64).collect() });
        };
        let (body, comment) = next_field(rest);
        if body.is_empty() {
            return Err(PublicKeyError::MissingBody);
        }
        let blob = STANDARD.decode(body).map_err(|_| PublicKeyError::Base64)?;
        let malformed = || PublicKeyError::Malformed { key_type: key_type.to_owned() };
        let parts = blob_fields(&blob).ok_or_else(malformed)?;
        if parts.len() != field_count {
            return Err(malformed());
        }
        let embedded = String::from_utf8_lossy(parts[0]);
        if embedded != key_type {
            return Err(PublicKeyError::TypeMismatch { declared: key_type.to_owned(), embedded: embedded.into() });
        }
        check_key_fields(key_type, &parts).ok_or_else(malformed)?;
        // The config drive (vmm::config_drive::validate_ssh_key) takes printable ASCII only: a
        // comment it would refuse is refused here, rather than every create that uses the key
        // failing on its host. Tabs in it become spaces, as between the fields.
        let comment = comment.trim_matches([' ', '\t']);
        if !comment.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)) {
            return Err(PublicKeyError::CommentNotAscii);
        }
        let comment = Some(comment.replace('\t', " ")).filter(|c| !c.is_empty());
        Ok(Self { key_type: key_type.to_owned(), blob, comment })
    }

    /// `SHA256:<unpadded base64 of SHA-256(blob)>`, like `ssh-keygen -l`.
    pub fn fingerprint(&self) -> String {
        format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(&self.blob)))
    }

    /// The key as one `authorized_keys` line.
    pub fn to_openssh(&self) -> String {
        let body = STANDARD.encode(&self.blob);
        match &self.comment {
            Some(comment) => format!("{} {body} {comment}", self.key_type),
            None => format!("{} {body}", self.key_type),
        }
    }
}

/// A guest's SSH host public key, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostKey {
    /// e.g. `ssh-ed25519`.
    pub key_type: String,
    /// `<type> <base64>`: one `known_hosts` entry after the host name.
    pub public_key: String,
    /// `SHA256:<base64>`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
}

impl HostKey {
    /// The valid keys among `keys` (what an agent read from a guest's console), at most 16.
    pub fn parse_all<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<HostKey> {
        keys.into_iter()
            .filter_map(|text| PublicKey::parse(text).ok())
            .map(|key| HostKey {
                key_type: key.key_type.clone(),
                public_key: PublicKey { comment: None, ..key.clone() }.to_openssh(),
                fingerprint: key.fingerprint(),
            })
            .take(16)
            .collect()
    }
}

/// The first field of `text` (separated by spaces or tabs) and the rest after it.
fn next_field(text: &str) -> (&str, &str) {
    let text = text.trim_start_matches([' ', '\t']);
    text.split_at(text.find([' ', '\t']).unwrap_or(text.len()))
}

/// Splits a key blob into its length-prefixed (big-endian u32) fields; `None` when the lengths
/// do not add up to the blob exactly.
fn blob_fields(mut blob: &[u8]) -> Option<Vec<&[u8]>> {
    let mut fields = Vec::new();
    while !blob.is_empty() {
        let (len, rest) = blob.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if len > rest.len() {
            return None;
        }
        let (field, rest) = rest.split_at(len);
        fields.push(field);
        blob = rest;
    }
    Some(fields)
}

/// The checks of each type's fields beyond their count: key sizes and curve names.
fn check_key_fields(key_type: &str, fields: &[&[u8]]) -> Option<()> {
    let ok = match key_type {
        "ssh-ed25519" | "sk-ssh-ed25519@openssh.com" => fields[1].len() == 32,
        // e, n: at least 1024 bits of modulus (OpenSSH's own minimum).
        "ssh-rsa" => !fields[1].is_empty() && fields[2].iter().skip_while(|b| **b == 0).count() >= 128,
        _ => {
            // ecdsa-sha2-<curve>[@openssh.com]: the curve field names the same curve.
            let curve = key_type.trim_start_matches("sk-").trim_start_matches("ecdsa-sha2-");
            let curve = curve.trim_end_matches("@openssh.com");
            fields[1] == curve.as_bytes() && fields[2].first() == Some(&4)
        }
    };
    ok.then_some(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPiJZlyjkwiOZ6ioeiVhl3Mr9UKSGYM4Ux9okeXfgTH1 alice@laptop";
    const ECDSA384: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBOg3kmApkdJl6N0oeXv0KB9MlHP417vPKwL7UrnA6h3DKr44e1ZH2AsdN3I/WpvbzYObA/RW+WB55ygG7nvYDSg7tROTvMUO6pVreqPoQuADYwJ9pvMQ53hcr75rKU+0gA== root@vm";
    const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDCmDUk/7YQRTE8qji2/DKfoX45qBvJ+CFRQK7lv2+vSvmKIqy00HgTKGsP/AZzA1s+Cwh0VjVVU0ojBBfiFhFjfLwL8R1kmhXjWIkeS9y6Te1iyffLslILbFEJVToPtexxZVOls1nBlLIc5YD+Ng8GZniyKdjM3MMK25UxoybEoPv19uWg2Ro1y2qAE+YB68s6xg+e4U0HiaPdbBFzB4zEkHBB3/QJpcgME04A6lJlvNph/vaDYjWkdA4XG4J1PxwfpxMs9NvYT68ICXRuHaNvnWgFftpq2Oy/WAps5ms5zgAX5fxaGhmQNZCuYtRpl9uUdWBhLdKwZs75omGYSPbz bob";

    /// Fingerprints as `ssh-keygen -l` printed them for these keys.
    #[test]
    fn fingerprints_match_ssh_keygen() {
        for (text, fingerprint) in [
            (ED25519, "SHA256:27dgv7R7ToeA8LV4pFPPcl/rULKrMnDHR+caT2igzWs"),
            (ECDSA384, "SHA256:l5eVuFIUnFqc3GgffmuDul81/0Zw8rwcJcf1qtPKs+U"),
            (RSA, "SHA256:DYBoVdoukTSBwoW0SkI//gRs68PniUcRlbIR7igvaOA"),
        ] {
            let key = PublicKey::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(key.fingerprint(), fingerprint);
            assert_eq!(key.to_openssh(), text);
        }
    }

    #[test]
    fn host_keys_keep_the_valid_ones_without_comments() {
        let keys = HostKey::parse_all([ED25519, "ssh-ed25519 garbage", "", ECDSA384]);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].key_type, "ssh-ed25519");
        assert_eq!(keys[0].public_key, ED25519.rsplit_once(' ').map(|(k, _)| k).unwrap_or_default());
        assert_eq!(keys[0].fingerprint, "SHA256:27dgv7R7ToeA8LV4pFPPcl/rULKrMnDHR+caT2igzWs");
        assert_eq!(keys[1].key_type, "ecdsa-sha2-nistp384");
    }

    #[test]
    fn comments_are_optional_and_whitespace_is_normalised() {
        let body = ED25519.split(' ').nth(1).unwrap_or_default();
        let key = PublicKey::parse(&format!("  ssh-ed25519\t{body}  \n")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(key.comment, None);
        assert_eq!(key.to_openssh(), format!("ssh-ed25519 {body}"));
        let key = PublicKey::parse(&format!("ssh-ed25519 {body} alice at work")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(key.comment.as_deref(), Some("alice at work"));
        let key = PublicKey::parse(&format!("ssh-ed25519 {body}\talice\tat  work\t")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(key.to_openssh(), format!("ssh-ed25519 {body} alice at  work"));
    }

    /// Found by the api_request fuzz target: a key with such a comment was stored, then every
    /// instance created with it failed on its host (the config drive takes ASCII keys only).
    #[test]
    fn keys_are_stored_in_a_form_the_config_drive_takes() {
        let body = ED25519.split(' ').nth(1).unwrap_or_default();
        for comment in ["José@laptop", "alice\u{a0}laptop", "日本"] {
            let err = PublicKey::parse(&format!("ssh-ed25519 {body} {comment}")).err();
            assert_eq!(err, Some(PublicKeyError::CommentNotAscii), "{comment:?}");
        }
        for text in [ED25519, ECDSA384, RSA, &format!("ssh-ed25519 {body} a\tb")] {
            let stored = PublicKey::parse(text).unwrap_or_else(|e| panic!("{e}")).to_openssh();
            assert!(vmm::config_drive::validate_ssh_key(&stored), "{stored:?}");
        }
    }

    #[test]
    fn bad_keys_are_refused_with_the_reason() {
        let body = ED25519.split(' ').nth(1).unwrap_or_default();
        let rsa_body = RSA.split(' ').nth(1).unwrap_or_default();
        type Expected = fn(&PublicKeyError) -> bool;
        let cases: Vec<(String, Expected)> = vec![
            ("".into(), |e| matches!(e, PublicKeyError::Empty)),
            ("a".repeat(MAX_PUBLIC_KEY_BYTES + 1), |e| matches!(e, PublicKeyError::TooLong { .. })),
            (format!("{ED25519}\n{RSA}"), |e| matches!(e, PublicKeyError::ControlCharacter)),
            (format!("ssh-ed25519 {body} a\rb"), |e| matches!(e, PublicKeyError::ControlCharacter)),
            (format!("command=\"sh\" {ED25519}"), |e| matches!(e, PublicKeyError::UnknownType { .. })),
            (format!("ssh-dss {body}"), |e| matches!(e, PublicKeyError::UnknownType { .. })),
            ("ssh-ed25519".into(), |e| matches!(e, PublicKeyError::MissingBody)),
            ("ssh-ed25519 not*base64".into(), |e| matches!(e, PublicKeyError::Base64)),
            (format!("ssh-ed25519 {}", &body[..body.len() - 4]), |e| matches!(e, PublicKeyError::Malformed { .. })),
            (format!("ssh-rsa {body}"), |e| matches!(e, PublicKeyError::Malformed { .. })),
            (format!("ssh-ed25519 {rsa_body}"), |e| matches!(e, PublicKeyError::Malformed { .. })),
            (
                format!(
                    "ssh-ed25519 {}",
                    STANDARD.encode([&[0, 0, 0, 7][..], b"ssh-rsa", &[0, 0, 0, 32], &[1; 32]].concat())
                ),
                |e| matches!(e, PublicKeyError::TypeMismatch { .. }),
            ),
        ];
        for (text, expected) in cases {
            match PublicKey::parse(&text) {
                Ok(key) => panic!("{text:?} parsed as {key:?}"),
                Err(err) => assert!(expected(&err), "{text:?}: {err:?}"),
            }
        }
    }
}
