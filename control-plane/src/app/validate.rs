//! Checks of input fields shared by the resources; each names the field at fault. Beside each
//! check, the JSON Schema of what it accepts ([`schema`]), so the OpenAPI document states the
//! same rule the server enforces.

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

/// JSON Schemas of the checks above and of the API's other field rules, for
/// `#[schema(schema_with = …)]` on the request types.
pub mod schema {
    use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

    /// A DNS label: what [`require_dns_label`](super::require_dns_label) accepts.
    pub const DNS_LABEL: &str = "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$";
    /// The texts `uuid::Uuid::parse_str` reads that are also DNS labels: a label must not be one.
    const UUID_LIKE: &str = "^([0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$";
    /// One line of text: no control characters (what `char::is_control` means: C0, DEL, C1).
    pub const PLAIN_TEXT: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

    fn string(nullable: bool) -> ObjectBuilder {
        let ty =
            if nullable { SchemaType::from_iter([Type::String, Type::Null]) } else { SchemaType::new(Type::String) };
        ObjectBuilder::new().schema_type(ty)
    }

    fn dns_label_of(nullable: bool) -> Object {
        // `not` has no builder in utoipa; extensions are written into the schema as they are.
        let not_uuid = serde_json::json!({ "pattern": UUID_LIKE });
        string(nullable)
            .pattern(Some(DNS_LABEL))
            .max_length(Some(63))
            .description(Some("A DNS label (a lowercase letter, then up to 62 lowercase letters, digits or hyphens, not ending in a hyphen) that is not a UUID"))
            .extensions(Some([("not", not_uuid)].into_iter().collect()))
            .build()
    }

    /// A name: a DNS label that is not a UUID.
    pub fn dns_label() -> Object {
        dns_label_of(false)
    }

    /// An optional name.
    pub fn dns_label_or_null() -> Object {
        dns_label_of(true)
    }

    /// Optional cloud-init user-data: at most `max` characters, of a kind the config drive takes
    /// (its first line, [`vmm::config_drive::USER_DATA_PATTERN`]).
    pub fn user_data_or_null(max: usize) -> Object {
        string(true).pattern(Some(vmm::config_drive::USER_DATA_PATTERN)).max_length(Some(max)).build()
    }

    /// One line of at most `max` characters.
    pub fn plain_text(max: usize, nullable: bool) -> Object {
        string(nullable).pattern(Some(PLAIN_TEXT)).max_length(Some(max)).build()
    }
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

    /// The patterns say what the checks do: every accepted example matches, every refused one
    /// that a pattern can catch does not.
    #[test]
    fn the_schemas_patterns_match_the_checks() {
        let label = regex::Regex::new(schema::DNS_LABEL).expect("the DNS label pattern compiles");
        for ok in ["a", "web-1", "x2", &"a".repeat(63)] {
            assert!(label.is_match(ok) && require_dns_label("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", "1a", "Web", "web_1", "web-", "-web", "a b", "é", &"a".repeat(64)] {
            assert!(!label.is_match(bad) && require_dns_label("name", bad).is_err(), "{bad}");
        }
        let text = regex::Regex::new(schema::PLAIN_TEXT).expect("the plain text pattern compiles");
        for (value, ok) in [("Team A's builds", true), ("a\nb", false), ("tab\there", false), ("\u{85}", false)] {
            assert_eq!(text.is_match(value), ok, "{value:?}");
            assert_eq!(require_plain_text("description", value, 100).is_ok(), ok, "{value:?}");
        }
    }
}
