//! A queue message's payload: any JSON value, kept as the exact text the
//! producer sent, so a consumer receives it byte for byte (no re-encoding of
//! numbers or key order on the way through the queue).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// Any JSON value, as its JSON text.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// The payload of a JSON value.
    pub fn new(value: &Value) -> Self {
        Self(serde_json::value::to_raw_value(value).expect("a JSON value encodes"))
    }

    /// The payload whose text is `text`, when that is one JSON value.
    pub fn from_text(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self)
    }

    /// The JSON text as sent.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The payload parsed as a JSON value.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }

    /// The payload decoded into `T`.
    pub fn decode<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
}

impl Default for Payload {
    fn default() -> Self {
        Self::new(&Value::Null)
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Self::new(&value)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

/// Equal when the JSON values are equal (whatever the spacing).
impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str() || self.to_value() == other.to_value()
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

impl PartialSchema for Payload {
    fn schema() -> RefOr<Schema> {
        Value::schema()
    }
}

impl ToSchema for Payload {}

/// Deserialize a present field (even `null`) as `Some`, so a missing
/// payload and a `null` one differ.
pub(crate) fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Payload>, D::Error> {
    Payload::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_is_kept_verbatim() {
        let p: Payload = serde_json::from_str(r#"{"b":1,  "a":1.50}"#).unwrap();
        assert_eq!(p.as_str(), r#"{"b":1,  "a":1.50}"#);
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"b":1,  "a":1.50}"#);
        assert_eq!(p, json!({"a": 1.5, "b": 1}));
    }

    #[test]
    fn null_is_a_payload() {
        let r: crate::EnqueueRequest =
            serde_json::from_str(r#"{"queue":"q","payload":null}"#).unwrap();
        assert_eq!(
            r.payload.map(|p| p.as_str().to_string()),
            Some("null".into())
        );
        let r: crate::EnqueueRequest =
            serde_json::from_str(r#"{"queue":"q","messages":[]}"#).unwrap();
        assert!(r.payload.is_none());
    }
}
