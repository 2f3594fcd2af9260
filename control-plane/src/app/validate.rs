//! Checks of input fields shared by the resources; each names the field at fault.

use super::AppError;

/// Checks that `value` is a DNS label (`^[a-z][a-z0-9-]{0,62}$`, not ending in `-`) and not a
/// UUID (names and ids share the URL's `{name-or-id}` segments); 422 naming `field` if not.
pub fn require_dns_label(field: &str, value: &str) -> Result<(), AppError> {
    let mut bytes = value.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !(first_ok && rest_ok && value.len() <= 63 && !value.ends_with('-')) {
        return Err(AppError::Unprocessable(format!(
            "{field}: {value:?} is not a DNS label (a lowercase letter, then up to 62 lowercase letters, \
             digits or hyphens, not ending in a hyphen)"
        )));
    }
    if uuid::Uuid::parse_str(value).is_ok() {
        return Err(AppError::Unprocessable(format!("{field}: {value:?} looks like an id; choose another name")));
    }
    Ok(())
}

/// Checks that a free-text field has at most `max` characters and no control characters
/// (tabs included); 422 naming `field` if not.
pub fn require_plain_text(field: &str, value: &str, max: usize) -> Result<(), AppError> {
    if value.chars().count() > max {
        return Err(AppError::Unprocessable(format!("{field}: longer than {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(AppError::Unprocessable(format!("{field}: contains control characters (newlines, tabs, ...)")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels_and_not_uuids() {
        for ok in ["a", "web-1", "x2", &"a".repeat(63)] {
            assert!(require_dns_label("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", "1a", "Web", "web_1", "web-", "-web", "a b", "é", &"a".repeat(64)] {
            let err = require_dns_label("name", bad).err();
            assert!(matches!(&err, Some(AppError::Unprocessable(m)) if m.starts_with("name: ")), "{bad}");
        }
        assert!(require_dns_label("name", "deadbeef-dead-beef-dead-beefdeadbeef").is_err());
    }

    #[test]
    fn plain_text_has_no_control_characters() {
        assert!(require_plain_text("description", "Team A's builds", 100).is_ok());
        assert!(require_plain_text("description", "a\nb", 100).is_err());
        assert!(require_plain_text("description", "abc", 2).is_err());
    }
}
