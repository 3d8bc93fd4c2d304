//! Hand-assembled schemas for the two requests with alternative forms
//! (`EnqueueRequest`: `payload` or `messages`; `AckRequest`: `receipt` or
//! `receipts`). The Rust types are one struct each, with both fields
//! optional, which is convenient to build; the document states what the
//! services accept: exactly one of the two forms (a `oneOf` of closed
//! objects). The forms below are schema-only and never built.

use std::borrow::Cow;

use serde_json::Value;
use utoipa::openapi::schema::OneOfBuilder;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::types::{AckRequest, EnqueueRequest, NewMessage};

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
