//! The one contract of distributed-sync's public API.
//!
//! Every request and answer body lives here once: the services decode
//! requests and encode answers with these types, the `client` crate sends
//! and decodes them (and re-exports them), and the gateway's `/openapi.json`
//! is generated from them. Validation of a request happens once per type, at
//! each service's HTTP edge, where it becomes the service's domain type
//! (`TryFrom<api::EnqueueRequest> for …`), against the limits in [`limits`],
//! which are the limits the document states.
//!
//! - [`types`]: request and answer bodies, the JSON error body;
//! - [`limits`]: names, ranges and sizes, and the checks against them;
//! - [`events`]: the bounded ring of recent events each service node
//!   keeps, and the merge of several nodes' rings;
//! - [`Payload`]: a queue payload kept as the exact JSON text sent;
//! - [`responses`]: the error answers a route can give, as OpenAPI response
//!   sets;
//! - `schema` (private): the `oneOf` schemas of the two requests with
//!   alternative forms.
//!
//! This crate does no I/O and knows no HTTP framework.

pub mod events;
mod int;
pub mod limits;
mod payload;
pub mod responses;
mod schema;
pub mod types;

pub use limits::Invalid;
pub use payload::Payload;
pub use types::*;
