//! Hand-assembled schemas for the two requests with alternative forms
//! (`EnqueueRequest`: `payload` or `messages`; `AckRequest`: `receipt` or
//! `receipts`). The Rust types are one struct each, with both fields
//! optional, which is convenient to build; the document states what the
//! services accept: exactly one of the two forms (a `oneOf` of closed
//! objects). The forms below are schema-only and never built.

use std::borrow::Cow;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use utoipa::openapi::schema::OneOfBuilder;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::types::{AckRequest, EnqueueRequest, NewMessage};
use crate::Payload;

/// `EnqueueRequest`, single form.
#[derive(ToSchema)]
#[allow(dead_code)]
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueueOne {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^(?!\.\.?$)[^\x00-\x1F\x7F-\x9F]*$"
    )]
    queue: String,
    /// Any JSON value (its text at most 262144 bytes), delivered verbatim.
    payload: Value,
    /// Invisible for this long first; default 0.
    #[schema(minimum = 0, maximum = 86400000)]
    delay_ms: Option<u64>,
    /// Dropped when nobody took it within this long; default never.
    #[schema(minimum = 1, maximum = 1209600000)]
    ttl_ms: Option<u64>,
}

/// `EnqueueRequest`, batch form.
#[derive(ToSchema)]
#[allow(dead_code)]
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueueBatch {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^(?!\.\.?$)[^\x00-\x1F\x7F-\x9F]*$"
    )]
    queue: String,
    #[schema(min_items = 1, max_items = 100)]
    messages: Vec<NewMessage>,
}

/// `AckRequest`, single form.
#[derive(ToSchema)]
#[allow(dead_code)]
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AckOne {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^(?!\.\.?$)[^\x00-\x1F\x7F-\x9F]*$"
    )]
    queue: String,
    /// A receipt from dequeue (malformed: 400 `invalid_receipt`).
    #[schema(pattern = r"^[0-9a-fA-F]{16}\.[0-9]+\.[0-9a-fA-F]{16}$")]
    receipt: String,
}

/// `AckRequest`, batch form: each receipt's failure is reported in `failed`.
#[derive(ToSchema)]
#[allow(dead_code)]
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBatch {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^(?!\.\.?$)[^\x00-\x1F\x7F-\x9F]*$"
    )]
    queue: String,
    #[schema(min_items = 1, max_items = 100)]
    receipts: Vec<String>,
}

impl PartialSchema for EnqueueRequest {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some(
                "One message (`payload`, with its `delay_ms`/`ttl_ms`) or a batch (`messages`).",
            ))
            .item(EnqueueOne::schema())
            .item(EnqueueBatch::schema())
            .into()
    }
}

impl ToSchema for EnqueueRequest {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("EnqueueRequest")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((NewMessage::name().into(), NewMessage::schema()));
    }
}

impl PartialSchema for AckRequest {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .description(Some("One `receipt` or a batch of `receipts`."))
            .item(AckOne::schema())
            .item(AckBatch::schema())
            .into()
    }
}

impl ToSchema for AckRequest {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AckRequest")
    }
}

/// `NewMessage` from a JSON object only: serde's derive would also take it
/// from an array of its fields in order (`[null, null]`), which the document
/// does not allow. Unknown and repeated fields are refused like the derived
/// requests' are.
impl<'de> Deserialize<'de> for NewMessage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = NewMessage;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a message object {payload, delay_ms?, ttl_ms?}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NewMessage, A::Error> {
                #[derive(Deserialize)]
                struct Int(#[serde(deserialize_with = "crate::int::opt")] Option<u64>);
                let mut payload: Option<Payload> = None;
                let (mut delay_ms, mut ttl_ms) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    let dup = || de::Error::custom(format!("duplicate field `{key}`"));
                    match key.as_str() {
                        "payload" if payload.is_none() => payload = Some(map.next_value()?),
                        "delay_ms" if delay_ms.is_none() => {
                            delay_ms = Some(map.next_value::<Int>()?.0)
                        }
                        "ttl_ms" if ttl_ms.is_none() => ttl_ms = Some(map.next_value::<Int>()?.0),
                        "payload" | "delay_ms" | "ttl_ms" => return Err(dup()),
                        other => {
                            return Err(de::Error::unknown_field(
                                other,
                                &["payload", "delay_ms", "ttl_ms"],
                            ))
                        }
                    }
                }
                Ok(NewMessage {
                    payload: payload.ok_or_else(|| de::Error::missing_field("payload"))?,
                    delay_ms: delay_ms.flatten(),
                    ttl_ms: ttl_ms.flatten(),
                })
            }
        }
        d.deserialize_map(Fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_message_only_from_an_object() {
        let m: NewMessage = serde_json::from_str(r#"{"payload":{"a":1},"delay_ms":5.0}"#).unwrap();
        assert_eq!(m.payload.as_str(), r#"{"a":1}"#);
        assert_eq!((m.delay_ms, m.ttl_ms), (Some(5), None));
        let m: NewMessage = serde_json::from_str(r#"{"payload":null,"ttl_ms":null}"#).unwrap();
        assert_eq!(m.payload.as_str(), "null");
        for bad in [
            "[null, null]",
            "{}",
            r#"{"payload":1,"x":2}"#,
            r#"{"payload":1,"payload":2}"#,
            r#"{"payload":1,"delay_ms":-1}"#,
        ] {
            assert!(serde_json::from_str::<NewMessage>(bad).is_err(), "{bad}");
        }
        let r: Result<EnqueueRequest, _> =
            serde_json::from_str(r#"{"queue":"q","messages":[[null,null]]}"#);
        assert!(r.is_err());
    }
}
