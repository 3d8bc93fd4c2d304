//! The input limits of the public API, in one place: the services check
//! requests against them (each service's HTTP edge, when it turns a wire type
//! into its domain type) and the OpenAPI document states them
//! (`minLength`/`maxLength`/`pattern`/`minimum`/`maximum` on the wire types;
//! `tests` below hold the document to these constants).
//!
//! Invariants:
//! - a name is non-empty, at most its limit in *characters* (what JSON
//!   Schema's `maxLength` counts), and has no control characters (Unicode
//!   `Cc`: what [`NAME_PATTERN`] excludes);
//! - a name that is also a URL path segment (lock resource, queue) is not `.`
//!   or `..`, which no HTTP client can send as a segment ([`PATH_NAME_PATTERN`]).

/// Longest lock resource, owner or queue name, in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// Longest client-chosen lock `request_id`, in characters.
pub const MAX_REQUEST_ID_CHARS: usize = 128;
/// Longest cache key, in characters.
pub const MAX_KEY_CHARS: usize = 512;

/// Names: printable (no C0/C1 control characters). ECMA-262 and Python
/// regular expressions alike.
pub const NAME_PATTERN: &str = r"^[^\x00-\x1F\x7F-\x9F]*$";
/// Names that are path segments: printable, and not `.` or `..`.
pub const PATH_NAME_PATTERN: &str = r"^(?!\.\.?$)[^\x00-\x1F\x7F-\x9F]*$";
/// A queue message id: 16 hex digits.
pub const MESSAGE_ID_PATTERN: &str = r"^[0-9a-fA-F]{16}$";
/// A queue receipt: `<id>.<attempts>.<nonce>`.
pub const RECEIPT_PATTERN: &str = r"^[0-9a-fA-F]{16}\.[0-9]+\.[0-9a-fA-F]{16}$";

/// Lock leases and waits.
pub mod lock {
    /// Lease when the client gives none.
    pub const DEFAULT_TTL_MS: u64 = 30_000;
    /// Shortest lease: below this, network jitter alone would expire holds.
    pub const MIN_TTL_MS: u64 = 100;
    /// Longest lease (one day): longer means a crashed client blocks for days.
    pub const MAX_TTL_MS: u64 = 86_400_000;
    /// Longest blocking wait on an acquire.
    pub const MAX_WAIT_MS: u64 = 300_000;
    /// Longest `retry_window_ms`: answers are remembered at most this long.
    pub const MAX_RETRY_WINDOW_MS: u64 = 600_000;
    /// A `retry_window_ms` up to this gets the short memory (this long,
    /// plus the wait), as a request id the node made itself does.
    pub const SHORT_RETRY_WINDOW_MS: u64 = 30_000;
}

/// Queue messages, deliveries and pages.
pub mod queue {
    /// Largest payload (its JSON text), in bytes.
    pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
    /// Most messages in one batch enqueue, receipts in one ack.
    pub const MAX_BATCH: usize = 100;
    /// Most messages one dequeue returns.
    pub const MAX_DEQUEUE: u64 = 100;
    /// Visibility timeout bounds and default.
    pub const MIN_VISIBILITY_MS: u64 = 1;
    pub const MAX_VISIBILITY_MS: u64 = 12 * 3600 * 1000;
    pub const DEFAULT_VISIBILITY_MS: u64 = 30_000;
    /// Longest long poll.
    pub const MAX_WAIT_MS: u64 = 20_000;
    /// Longest delay before a message becomes visible.
    pub const MAX_DELAY_MS: u64 = 24 * 3600 * 1000;
    /// Longest message TTL.
    pub const MAX_TTL_MS: u64 = 14 * 24 * 3600 * 1000;
    /// Largest per-queue `max_attempts`.
    pub const MAX_MAX_ATTEMPTS: u32 = 1000;
    /// Largest page of dead letters (and redrive), and its default.
    pub const MAX_DEAD_PAGE: u64 = 1000;
    pub const DEFAULT_DEAD_PAGE: u64 = 100;
}

/// Pages of the list routes (`GET /api/locks`, `GET /api/queues`) and of
/// the event rings (`GET /api/events`).
pub mod list {
    /// Page size when the caller gives no `limit`.
    pub const DEFAULT_LIMIT: u64 = 100;
    /// Largest page: a page is built and sent whole, so it stays small.
    pub const MAX_LIMIT: u64 = 1000;
    /// Events each service node keeps in its in-memory ring (the newest;
    /// per node, lost on restart).
    pub const EVENT_RING: usize = 256;
}

/// Cache values.
pub mod cache {
    /// Largest value (its JSON encoding), in bytes.
    pub const MAX_VALUE_BYTES: usize = 1 << 20;
    /// Longest TTL: one year.
    pub const MAX_TTL_MS: u64 = 365 * 24 * 3600 * 1000;
}

/// A request field outside its limits. The services answer it as 400
/// `invalid_input` with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// The field, as named on the wire.
    pub field: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Check that a name is non-empty, at most `max` characters and printable
/// (no control characters), naming the field in the error.
pub fn name(field: &'static str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(field, format!("`{field}` must not be empty")));
    }
    let chars = value.chars().count();
    if chars > max {
        return Err(Invalid::new(
            field,
            format!("`{field}` is {chars} characters; the limit is {max}"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Invalid::new(
            field,
            format!("`{field}` must be printable (no control characters)"),
        ));
    }
    Ok(())
}

/// [`name`], and not `.` or `..`: for names that appear as a URL path
/// segment (`GET /api/lock/{resource}`, `GET /api/queue/{queue}`).
pub fn path_name(field: &'static str, value: &str, max: usize) -> Result<(), Invalid> {
    name(field, value, max)?;
    if value == "." || value == ".." {
        return Err(Invalid::new(
            field,
            format!("`{field}` cannot be `.` or `..` (it is a URL path segment)"),
        ));
    }
    Ok(())
}

/// Check that `value` lies in `min..=max`, naming the field.
pub fn range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), Invalid> {
    if value < min || value > max {
        return Err(Invalid::new(
            field,
            format!("`{field}` must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(())
}

/// A checked list query: `prefix` (may be empty), `after` (the cursor: the
/// last name of the previous page) and `limit` (1 to
/// [`list::MAX_LIMIT`], default [`list::DEFAULT_LIMIT`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub prefix: String,
    pub after: Option<String>,
    pub limit: usize,
}

/// Check the parameters of a list route: `prefix` at most a name long and
/// printable (empty lists everything), `after` a name, `limit` in range.
pub fn page(
    prefix: Option<&str>,
    after: Option<&str>,
    limit: Option<u64>,
) -> Result<Page, Invalid> {
    let prefix = prefix.unwrap_or_default();
    if !prefix.is_empty() {
        name("prefix", prefix, MAX_NAME_CHARS)?;
    }
    if let Some(a) = after {
        name("after", a, MAX_NAME_CHARS)?;
    }
    let limit = limit.unwrap_or(list::DEFAULT_LIMIT);
    range("limit", limit, 1, list::MAX_LIMIT)?;
    Ok(Page {
        prefix: prefix.to_string(),
        after: after.map(str::to_string),
        limit: limit as usize,
    })
}

/// Check `limit` of `GET /api/events` (1 to [`list::MAX_LIMIT`], default
/// [`list::DEFAULT_LIMIT`]).
pub fn event_limit(limit: Option<u64>) -> Result<usize, Invalid> {
    let limit = limit.unwrap_or(list::DEFAULT_LIMIT);
    range("limit", limit, 1, list::MAX_LIMIT)?;
    Ok(limit as usize)
}

/// Check that a list holds 1 to `max` items.
pub fn count(field: &'static str, len: usize, max: usize) -> Result<(), Invalid> {
    if len == 0 || len > max {
        return Err(Invalid::new(
            field,
            format!("`{field}` must hold 1 to {max} items, got {len}"),
        ));
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
            (".", true),
            ("", false),
            ("tab\there", false),
            ("nul\0", false),
            ("c1\u{85}", false),
        ];
        for (value, ok) in cases {
            assert_eq!(name("resource", value, 16).is_ok(), *ok, "{value:?}");
        }
        assert!(name("resource", &"x".repeat(9), 8).is_err());
        assert!(name("resource", &"x".repeat(8), 8).is_ok());
        // Characters, not bytes: what JSON Schema's maxLength counts.
        assert!(name("resource", &"ü".repeat(8), 8).is_ok());
    }

    #[test]
    fn path_names() {
        for bad in [".", ".."] {
            assert!(path_name("queue", bad, 16).is_err(), "{bad:?}");
        }
        for good in ["...", ".a", "a.", "a/b"] {
            assert!(path_name("queue", good, 16).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn pages() {
        let p = page(None, None, None).unwrap();
        assert_eq!((p.prefix.as_str(), p.after, p.limit), ("", None, 100));
        let p = page(Some("a/"), Some("a/b"), Some(1000)).unwrap();
        assert_eq!(
            (p.prefix.as_str(), p.after.as_deref(), p.limit),
            ("a/", Some("a/b"), 1000)
        );
        assert!(page(Some(""), None, Some(1)).is_ok());
        for bad in [
            page(None, None, Some(0)),
            page(None, None, Some(1001)),
            page(None, Some(""), None),
            page(Some("a\u{1}"), None, None),
            page(None, Some(&"x".repeat(MAX_NAME_CHARS + 1)), None),
        ] {
            assert!(bad.is_err(), "{bad:?}");
        }
        assert_eq!(event_limit(None).unwrap(), 100);
        assert!(event_limit(Some(0)).is_err() && event_limit(Some(1001)).is_err());
    }

    #[test]
    fn ranges() {
        assert!(range("ttl_ms", 0, 1, 10).is_err());
        assert!(range("ttl_ms", 1, 1, 10).is_ok());
        assert!(range("ttl_ms", 10, 1, 10).is_ok());
        assert!(range("ttl_ms", 11, 1, 10).is_err());
        assert!(count("ids", 0, 2).is_err());
        assert!(count("ids", 2, 2).is_ok());
        assert!(count("ids", 3, 2).is_err());
    }
}

/// The document states the limits above: the literals in the types'
/// `#[schema(...)]` attributes are checked against the constants here.
#[cfg(test)]
mod document {
    use super::*;
    use crate::types::*;
    use serde_json::Value;
    use utoipa::PartialSchema;

    fn schema_of<T: PartialSchema>() -> Value {
        serde_json::to_value(T::schema()).unwrap()
    }

    fn prop(schema: &Value, field: &str) -> Value {
        schema["properties"][field].clone()
    }

    fn num(v: &Value, key: &str) -> u64 {
        v[key].as_f64().unwrap_or_else(|| panic!("no {key} in {v}")) as u64
    }

    #[test]
    fn lock_limits() {
        for s in [
            schema_of::<AcquireRequest>(),
            schema_of::<ReleaseRequest>(),
            schema_of::<RenewRequest>(),
        ] {
            assert_eq!(s["additionalProperties"], Value::Bool(false));
            let resource = prop(&s, "resource");
            assert_eq!(num(&resource, "maxLength"), MAX_NAME_CHARS as u64);
            assert_eq!(resource["pattern"], PATH_NAME_PATTERN);
            assert_eq!(prop(&s, "owner")["pattern"], NAME_PATTERN);
            let rid = prop(&s, "request_id");
            assert_eq!(num(&rid, "maxLength"), MAX_REQUEST_ID_CHARS as u64);
        }
        let s = schema_of::<AcquireRequest>();
        assert_eq!(num(&prop(&s, "ttl_ms"), "minimum"), lock::MIN_TTL_MS);
        assert_eq!(num(&prop(&s, "ttl_ms"), "maximum"), lock::MAX_TTL_MS);
        assert_eq!(num(&prop(&s, "wait_ms"), "maximum"), lock::MAX_WAIT_MS);
        let s = schema_of::<RenewRequest>();
        assert_eq!(num(&prop(&s, "ttl_ms"), "maximum"), lock::MAX_TTL_MS);
    }

    #[test]
    fn queue_limits() {
        let s = schema_of::<DequeueRequest>();
        assert_eq!(prop(&s, "queue")["pattern"], PATH_NAME_PATTERN);
        assert_eq!(num(&prop(&s, "max"), "maximum"), queue::MAX_DEQUEUE);
        assert_eq!(
            num(&prop(&s, "visibility_ms"), "maximum"),
            queue::MAX_VISIBILITY_MS
        );
        assert_eq!(num(&prop(&s, "wait_ms"), "maximum"), queue::MAX_WAIT_MS);
        let s = schema_of::<NewMessage>();
        assert_eq!(num(&prop(&s, "delay_ms"), "maximum"), queue::MAX_DELAY_MS);
        assert_eq!(num(&prop(&s, "ttl_ms"), "maximum"), queue::MAX_TTL_MS);
        let s = schema_of::<ExtendRequest>();
        assert_eq!(prop(&s, "receipt")["pattern"], RECEIPT_PATTERN);
        let s = schema_of::<QueueConfig>();
        assert_eq!(
            num(&prop(&s, "max_attempts"), "maximum"),
            queue::MAX_MAX_ATTEMPTS as u64
        );
        let s = schema_of::<RedriveRequest>();
        assert_eq!(num(&prop(&s, "max"), "maximum"), queue::MAX_DEAD_PAGE);
        assert_eq!(num(&prop(&s, "ids"), "maxItems"), queue::MAX_DEAD_PAGE);
        assert_eq!(schema_of::<MessageId>()["pattern"], MESSAGE_ID_PATTERN);
        let s = schema_of::<EnqueueRequest>();
        let forms = s["oneOf"].as_array().unwrap();
        assert_eq!(forms.len(), 2);
        assert_eq!(
            num(&forms[1]["properties"]["messages"], "maxItems"),
            queue::MAX_BATCH as u64
        );
        assert_eq!(
            num(&forms[0]["properties"]["ttl_ms"], "maximum"),
            queue::MAX_TTL_MS
        );
        let s = schema_of::<AckRequest>();
        let forms = s["oneOf"].as_array().unwrap();
        assert_eq!(
            forms[0]["properties"]["receipt"]["pattern"],
            RECEIPT_PATTERN
        );
        assert_eq!(
            num(&forms[1]["properties"]["receipts"], "maxItems"),
            queue::MAX_BATCH as u64
        );
    }

    #[test]
    fn cache_limits() {
        let s = schema_of::<CacheSetRequest>();
        assert_eq!(num(&prop(&s, "key"), "maxLength"), MAX_KEY_CHARS as u64);
        assert_eq!(prop(&s, "key")["pattern"], NAME_PATTERN);
        assert_eq!(num(&prop(&s, "ttl_ms"), "maximum"), cache::MAX_TTL_MS);
    }
}
