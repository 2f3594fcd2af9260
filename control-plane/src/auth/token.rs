//! API token secrets: how they are made, recognised and hashed.
//!
//! A secret is `cloud_` followed by 32 bytes from the operating system's RNG in unpadded
//! base64url (43 characters), 49 characters in all. The prefix makes a leaked token easy to
//! recognise (secret scanners, logs); the 256 random bits make guessing pointless, which is
//! also why the database stores a plain SHA-256 of the secret rather than a slow password
//! hash: looking a token up by its hash needs no constant-time comparison, since an attacker
//! who can time the lookup learns nothing about a hash they cannot invert.
//!
//! [`TokenSecret`] never shows the secret in `Debug`, so a stray `{:?}` cannot log it.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "cloud_";

/// Random bytes in a secret.
const SECRET_BYTES: usize = 32;

/// Length of 32 bytes in unpadded base64.
const ENCODED_LEN: usize = 43;

/// How many characters of the secret listings show (`cloud_` and 6 random characters).
pub const DISPLAY_PREFIX_LEN: usize = TOKEN_PREFIX.len() + 6;

/// Why a presented token cannot be one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedToken {
    #[error("the token does not start with `{TOKEN_PREFIX}`")]
    Prefix,
    #[error("the token must have {ENCODED_LEN} characters after `{TOKEN_PREFIX}`")]
    Length,
    #[error("the token contains characters outside the base64url alphabet")]
    Alphabet,
}

/// The secret of an API token. Shown to its owner once, at creation; stored only as a hash.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl TokenSecret {
    /// A new secret from the OS RNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::getrandom(&mut bytes)?;
        Ok(Self(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))))
    }

    /// Checks that `text` has the shape of a token (it may still be unknown).
    pub fn parse(text: &str) -> Result<Self, MalformedToken> {
        let body = text.strip_prefix(TOKEN_PREFIX).ok_or(MalformedToken::Prefix)?;
        if body.len() != ENCODED_LEN {
            return Err(MalformedToken::Length);
        }
        if !body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(MalformedToken::Alphabet);
        }
        Ok(Self(text.to_owned()))
    }

    /// The secret itself: for the one response that hands it out, and the token file.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the whole secret, as `api_tokens.token_hash` stores it.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// The first characters, as `api_tokens.token_prefix` stores them.
    pub fn display_prefix(&self) -> &str {
        self.0.get(..DISPLAY_PREFIX_LEN).unwrap_or(&self.0)
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSecret({}…)", self.display_prefix())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generated_secrets_parse_back_and_differ() {
        let a = TokenSecret::generate().unwrap();
        let b = TokenSecret::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), TOKEN_PREFIX.len() + ENCODED_LEN);
        assert_eq!(TokenSecret::parse(a.expose()).unwrap(), a);
        assert_eq!(a.display_prefix().len(), DISPLAY_PREFIX_LEN);
        assert!(a.expose().starts_with(a.display_prefix()));
    }

    #[test]
    fn malformed_tokens_are_told_apart() {
        let good = TokenSecret::generate().unwrap();
        let body = &good.expose()[TOKEN_PREFIX.len()..];
        assert_eq!(TokenSecret::parse(body), Err(MalformedToken::Prefix));
        assert_eq!(TokenSecret::parse(&good.expose()[..40]), Err(MalformedToken::Length));
        assert_eq!(
            TokenSecret::parse(&format!("{TOKEN_PREFIX}{}", "+".repeat(ENCODED_LEN))),
            Err(MalformedToken::Alphabet)
        );
        // Non-ASCII of the right byte length is rejected, not sliced through.
        assert_eq!(TokenSecret::parse(&format!("{}é", &good.expose()[..47])), Err(MalformedToken::Alphabet));
    }

    #[test]
    fn the_hash_is_sha256_of_the_whole_secret_and_debug_hides_it() {
        let secret = TokenSecret::parse(&format!("{TOKEN_PREFIX}{}", "A".repeat(ENCODED_LEN))).unwrap();
        let expected: [u8; 32] = Sha256::digest(secret.expose().as_bytes()).into();
        assert_eq!(secret.hash(), expected);
        let debug = format!("{secret:?}");
        assert!(!debug.contains(secret.expose()));
    }
}
