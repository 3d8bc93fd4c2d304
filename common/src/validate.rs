//! Input limits shared by the services and the gateway, so both reject the
//! same names with the same words.

use crate::error::ApiError;

/// Longest lock resource, owner or queue name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Check that a name is non-empty, at most `max` bytes and printable (no
/// control characters), naming the field in the error.
pub fn name(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(format!("`{field}` must not be empty")));
    }
    if value.len() > max {
        return Err(ApiError::invalid(format!(
            "`{field}` is {} bytes; the limit is {max}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "`{field}` must be printable (no control characters)"
        )));
    }
    Ok(())
}

/// Check that `value` lies in `min..=max`, naming the field and unit.
pub fn range(field: &str, value: u64, min: u64, max: u64) -> Result<(), ApiError> {
    if value < min || value > max {
        return Err(ApiError::invalid(format!(
            "`{field}` must be between {min} and {max}, got {value}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let cases: &[(&str, bool)] = &[
            ("a", true),
            ("orders/42 ü", true),
            ("", false),
            ("tab\there", false),
            ("nul\0", false),
        ];
        for (value, ok) in cases {
            assert_eq!(name("resource", value, 16).is_ok(), *ok, "{value:?}");
        }
        assert!(name("resource", &"x".repeat(9), 8).is_err());
        assert!(name("resource", &"x".repeat(8), 8).is_ok());
    }

    #[test]
    fn ranges() {
        assert!(range("ttl_ms", 0, 1, 10).is_err());
        assert!(range("ttl_ms", 1, 1, 10).is_ok());
        assert!(range("ttl_ms", 10, 1, 10).is_ok());
        assert!(range("ttl_ms", 11, 1, 10).is_err());
    }
}
