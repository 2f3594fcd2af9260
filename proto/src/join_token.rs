//! Join tokens: single-use, expiring secrets an operator hands to a new host (the control plane
//! issues them; the host agent presents them).
//!
//! Format: `cjt1.<fleet CA sha256, 64 hex>.<secret, 40 hex>`. The CA hash lets the joining host
//! verify the control plane before it trusts anything from it (as kubeadm's discovery hash does);
//! the secret proves the operator's consent. Only SHA-256 of the secret is stored.

use sha2::{Digest, Sha256};

const PREFIX: &str = "cjt1";
const SECRET_BYTES: usize = 20;

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 (hex) of the fleet CA certificate the host must see.
    pub ca_sha256: String,
    secret: String,
}

/// The token is not in the `cjt1.<ca>.<secret>` format.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("malformed join token: expected cjt1.<64 hex>.<40 hex>")]
pub struct MalformedToken;

impl JoinToken {
    /// A new random token for the fleet whose CA has this hash.
    pub fn generate(ca_sha256: &str) -> Self {
        let mut secret = [0u8; SECRET_BYTES];
        // The OS RNG failing is not recoverable for a service that issues secrets.
        getrandom::getrandom(&mut secret).unwrap_or_else(|err| panic!("the OS random number generator failed: {err}"));
        Self { ca_sha256: ca_sha256.to_owned(), secret: hex::encode(secret) }
    }

    /// Parses the string form.
    pub fn parse(text: &str) -> Result<Self, MalformedToken> {
        let mut parts = text.trim().split('.');
        let (Some(PREFIX), Some(ca), Some(secret), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(MalformedToken);
        };
        let is_hex =
            |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_hex(ca, 64) || !is_hex(secret, SECRET_BYTES * 2) {
            return Err(MalformedToken);
        }
        Ok(Self { ca_sha256: ca.to_owned(), secret: secret.to_owned() })
    }

    /// What the database stores.
    pub fn secret_hash(&self) -> Vec<u8> {
        Sha256::digest(self.secret.as_bytes()).to_vec()
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}.{}.{}", self.ca_sha256, self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_hash_stably() {
        let ca = "ab".repeat(32);
        let token = JoinToken::generate(&ca);
        let parsed = JoinToken::parse(&token.to_string()).expect("parse");
        assert_eq!(parsed, token);
        assert_eq!(parsed.secret_hash(), token.secret_hash());
        assert_eq!(token.secret_hash().len(), 32);
        assert_ne!(JoinToken::generate(&ca), token);
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let ca = "ab".repeat(32);
        for bad in [
            "",
            "cjt1",
            "cjt2.x.y",
            &format!("cjt1.{ca}"),
            &format!("cjt1.{ca}.XYZ"),
            &format!("cjt1.{ca}.{}.x", "0".repeat(40)),
        ] {
            assert_eq!(JoinToken::parse(bad), Err(MalformedToken), "{bad}");
        }
    }
}
