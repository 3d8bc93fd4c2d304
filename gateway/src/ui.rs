//! The web console at `/ui`: one HTML page, one script and one style sheet,
//! compiled into the binary (`gateway/ui/`), so the console needs no network
//! beyond the gateway itself and no build step.
//!
//! The page is a small single-page app (hash routes: overview, locks,
//! queues, cache) that calls the gateway's own routes from the browser:
//! `/health`, `/cluster`, `/metrics` and the `/api/*` routes. It keeps an
//! API token in the browser's session storage and sends it as
//! `Authorization: Bearer …` on every call, so these routes are public (they
//! sit outside the token layer) while everything they show is not.
//!
//! Invariants:
//! - every asset is served from memory with its own content type, an ETag
//!   (a hash of its bytes, computed at compile time) and `Cache-Control:
//!   no-cache`: a browser revalidates (a 304 costs no body) and never runs a
//!   script older than the page, after an upgrade of the gateway;
//! - a Content-Security-Policy of `'self'` for scripts, styles and
//!   connections: the page can load and call nothing but this gateway.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file of the console.
#[derive(Debug)]
pub struct Asset {
    /// Where it is served.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
    /// Strong ETag (quoted): FNV-1a of the body.
    pub etag: &'static str,
}

/// FNV-1a, 64 bits: a compile-time content hash for the ETags (not a
/// security property: it only has to change when the file does).
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// `"` + 16 hex digits + `"`, at compile time.
const fn etag_of(body: &str) -> [u8; 18] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = fnv1a(body.as_bytes());
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = HEX[((h >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

macro_rules! asset {
    ($path:literal, $file:literal, $ctype:literal) => {{
        const BODY: &str = include_str!(concat!("../ui/", $file));
        const TAG: [u8; 18] = etag_of(BODY);
        Asset {
            path: $path,
            content_type: $ctype,
            body: BODY,
            etag: match std::str::from_utf8(&TAG) {
                Ok(s) => s,
                Err(_) => panic!("an ETag is ASCII"),
            },
        }
    }};
}

/// Every file of the console, by the path it is served at.
pub static ASSETS: [Asset; 3] = [
    asset!("/ui", "index.html", "text/html; charset=utf-8"),
    asset!("/ui/app.js", "app.js", "text/javascript; charset=utf-8"),
    asset!("/ui/style.css", "style.css", "text/css; charset=utf-8"),
];

/// The page's Content-Security-Policy: nothing from anywhere but here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

fn serve(asset: &'static Asset, headers: &HeaderMap) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    let common = [
        (header::ETAG, HeaderValue::from_static(asset.etag)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}

/// The console's routes: the page at `/ui` and `/ui/` (it loads its
/// assets by absolute paths, so both work) and every asset. Public: add
/// them outside the token layer.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let page = &ASSETS[0];
    let mut router = Router::new().route(
        "/ui/",
        get(move |headers: HeaderMap| async move { serve(page, &headers) }),
    );
    for asset in &ASSETS {
        router = router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(asset, &headers) }),
        );
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_differ_per_file_and_are_quoted_hex() {
        for a in &ASSETS {
            assert_eq!(a.etag.len(), 18, "{}", a.path);
            assert!(a.etag.starts_with('"') && a.etag.ends_with('"'));
            assert!(a.etag[1..17].bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(ASSETS[0].etag, ASSETS[1].etag);
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn the_page_links_every_other_asset_and_nothing_remote() {
        let page = ASSETS[0].body;
        for a in &ASSETS[1..] {
            assert!(page.contains(a.path), "index.html does not load {}", a.path);
        }
        for a in &ASSETS {
            // The SVG namespace is a name, not something fetched.
            let body = a.body.replace("http://www.w3.org/2000/svg", "");
            for remote in ["http://", "https://", "//cdn", "@import"] {
                assert!(
                    !body.contains(remote),
                    "{} refers to something remote ({remote})",
                    a.path
                );
            }
        }
    }
}
