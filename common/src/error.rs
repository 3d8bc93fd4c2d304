//! The one JSON error body every service and the gateway answer with.
//!
//! Shape: `{"error": {"code": "lock_held", "message": "…", …details}}`.
//! `code` is stable and machine-readable; `message` is for humans; extra
//! fields (holders, cycle, owner address) ride along beside them.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

/// An error as the HTTP layer sends it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra fields merged into the `error` object.
    pub details: Map<String, Value>,
    /// Seconds for a `Retry-After` header: set on refusals that say "not
    /// now" (a limit reached, load shed), so clients back off by the
    /// server's word instead of retrying at once.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Map::new(),
            retry_after_s: None,
        }
    }

    /// Answer with `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_s = Some(secs);
        self
    }

    /// 400 `invalid_input`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// Attach one extra field to the error object.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }

    /// The JSON body as sent on the wire.
    pub fn body(&self) -> Value {
        let mut obj = self.details.clone();
        obj.insert("code".into(), json!(self.code));
        obj.insert("message".into(), json!(self.message));
        json!({ "error": obj })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after_s {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// A request outside the contract's limits: 400 `invalid_input`.
impl From<api::Invalid> for ApiError {
    fn from(e: api::Invalid) -> Self {
        ApiError::invalid(e.message)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = match rejection {
            JsonRejection::JsonDataError(_) => "invalid_field",
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            _ => "invalid_body",
        };
        // axum's texts name the field and the problem ("missing field `owner`"),
        // which is what a caller needs; keep them.
        ApiError::new(status, code, rejection.body_text())
    }
}

/// `axum::Json` whose rejections are JSON [`ApiError`]s (400 malformed,
/// 413 too large, 415 wrong content type, 422 missing or mistyped fields).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                let status = e.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "body_too_large"
                } else {
                    "invalid_body"
                };
                ApiError::new(status, code, e.body_text())
            })?;
        // Every request body of the API is an object. serde would also take
        // a struct from a JSON array of its fields in order, which no
        // document describes.
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{')
            && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok()
        {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "the request body must be a JSON object",
            ));
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(ApiJson(value))
    }
}

/// `application/json` or any `application/*+json`, as axum's `Json` has it.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Router fallback: unknown paths answer a JSON 404 like everything else.
pub async fn not_found_fallback(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

/// Fallback for a known path with the wrong method: a JSON 405 (axum keeps
/// the `Allow` header listing the methods the path has).
pub async fn method_not_allowed_fallback(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let with = |v: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(axum::http::header::CONTENT_TYPE, v.parse().unwrap());
            json_content_type(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/problem+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/jsonx"));
        assert!(!json_content_type(&axum::http::HeaderMap::new()));
    }

    #[tokio::test]
    async fn bodies_must_be_objects() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Req {
            a: u32,
        }
        let call = |body: &'static str| async move {
            let req = axum::http::Request::builder()
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .unwrap();
            ApiJson::<Req>::from_request(req, &())
                .await
                .map(|_| ())
                .map_err(|e| (e.status.as_u16(), e.code))
        };
        assert_eq!(call(r#"{"a": 1}"#).await, Ok(()));
        assert_eq!(call("[1]").await, Err((422, "invalid_field")));
        assert_eq!(call("[1").await.unwrap_err().0, 400);
        assert_eq!(call(r#"{"a": "x"}"#).await, Err((422, "invalid_field")));
    }

    #[test]
    fn body_carries_code_message_and_details() {
        let err = ApiError::new(StatusCode::CONFLICT, "lock_held", "held by a")
            .with("holders", json!(["a"]));
        assert_eq!(
            err.body(),
            json!({"error": {"code": "lock_held", "message": "held by a", "holders": ["a"]}})
        );
    }
}
