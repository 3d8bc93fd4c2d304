//! Router tests with `oneshot`: status codes and JSON error bodies for good
//! and bad input, on a single node with the home-memory store.

use super::*;
use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

async fn app(token: Option<&str>) -> Router {
    let mut cfg = crate::Config::for_test("127.0.0.1:1", &[]);
    cfg.cluster.cluster_token = token.map(str::to_string);
    // A cluster of one confirms its own view once it has settled.
    cfg.heartbeat_ms = 10;
    cfg.failure_timeout_ms = 100;
    let (state, _members) = crate::build(&cfg, "127.0.0.1:1".into()).await.unwrap();
    let node = state.node.clone();
    tokio::spawn(async move {
        loop {
            node.heartbeat_round().await;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    });
    let started = std::time::Instant::now();
    while !state.node.authorized() {
        assert!(
            started.elapsed().as_secs() < 5,
            "a node of one never confirmed its view"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    router(state)
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 4 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, body)
}

fn post_json(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn set_get_delete_round_trip() {
    let app = app(None).await;
    let (s, b) = call(
        &app,
        post_json("/api/cache/set", r#"{"key":"k","value":{"a":[1,2]}}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["key"], "k");
    let (s, b) = call(&app, get("/api/cache/get?key=k")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["value"], json!({"a":[1,2]}));
    assert_eq!(b["hit"], true, "the writer holds the line in M");
    let (s, b) = call(&app, get("/api/cache/line?key=k")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["nodes"][0]["state"], "M", "{b}");
    assert_eq!(b["directory"]["holders"]["state"], "exclusive", "{b}");
    let (s, _) = call(
        &app,
        Request::delete("/api/cache/delete?key=k")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = call(&app, get("/api/cache/get?key=k")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["error"]["code"], "not_found");
}

#[tokio::test]
async fn bad_input_gets_json_4xx() {
    let app = app(None).await;
    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    let big = format!(r#"{{"key":"k","value":"{}"}}"#, "x".repeat(MAX_VALUE_BYTES));
    let huge = format!(
        r#"{{"key":"k","value":"{}"}}"#,
        "x".repeat(BODY_LIMIT_BYTES + 10)
    );
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            post_json("/api/cache/set", "{not json"),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            post_json("/api/cache/set", r#"{"value":1}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            post_json("/api/cache/set", r#"{"key":"k"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            post_json("/api/cache/set", r#"{"key":"","value":1}"#),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            post_json(
                "/api/cache/set",
                format!(r#"{{"key":"{long_key}","value":1}}"#),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            post_json("/api/cache/set", r#"{"key":"k","value":1,"ttl_ms":0}"#),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            post_json("/api/cache/set", r#"{"key":"k","value":1,"ttl_ms":-5}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            post_json("/api/cache/set", big),
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
        ),
        (
            post_json("/api/cache/set", huge),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            get("/api/cache/get"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            get("/api/cache/get?key="),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            get(&format!("/api/cache/get?key={long_key}")),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            get("/api/cache/get?key=missing"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            get("/api/cache/line"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            Request::delete("/api/cache/delete")
                .body(Body::empty())
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (get("/nope"), StatusCode::NOT_FOUND, "not_found"),
        (
            get("/api/cache/set"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (req, status, code) in cases {
        let what = format!("{} {}", req.method(), req.uri().path());
        let (s, b) = call(&app, req).await;
        assert_eq!(s, status, "{what}: {b}");
        assert_eq!(b["error"]["code"], code, "{what}: {b}");
    }
}

#[tokio::test]
async fn service_routes_answer() {
    let app = app(None).await;
    call(
        &app,
        post_json("/api/cache/set", r#"{"key":"k","value":1}"#),
    )
    .await;
    call(&app, get("/api/cache/get?key=k")).await;
    call(&app, get("/api/cache/get?key=absent")).await;
    let (s, b) = call(&app, get("/health")).await;
    assert_eq!((s, b["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, b) = call(&app, get("/api/cache/stats")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["hits"], 1);
    assert_eq!(b["misses"], 1);
    assert_eq!(b["hit_rate"], 0.5);
    assert_eq!(b["lines"]["M"], 1);
    for field in [
        "evictions",
        "invalidations_sent",
        "invalidations_received",
        "write_backs",
    ] {
        assert!(b[field].is_u64(), "{field} in {b}");
    }
    let (s, b) = call(&app, get("/stats")).await;
    assert_eq!((s, &b["hits"]), (StatusCode::OK, &json!(1)));
    let (s, b) = call(&app, get("/cluster")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["node"], "127.0.0.1:1");
    assert_eq!(b["peers"][0]["alive"], true);
    let resp = app.clone().oneshot(get("/metrics")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(
        axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(text.contains("cache_hits_total 1"), "{text}");
    assert!(text.contains("cache_lines{state=\"M\"} 1"), "{text}");
    assert!(text.contains("http_requests_total"), "{text}");
}

#[tokio::test]
async fn internal_routes_need_the_token() {
    let app = app(Some("s3cret")).await;
    let req = || post_json("/internal/cache/ping", r#"{"node":"x:1","incarnation":1}"#);
    let (s, b) = call(&app, req()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(b["error"]["code"], "unauthorized");
    let mut r = req();
    r.headers_mut().insert(
        common::server::CLUSTER_TOKEN_HEADER,
        "s3cret".parse().unwrap(),
    );
    let (s, b) = call(&app, r).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["node"], "127.0.0.1:1");
    // Public routes stay open.
    let (s, _) = call(&app, get("/health")).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn ttl_expires_values() {
    let app = app(None).await;
    call(
        &app,
        post_json("/api/cache/set", r#"{"key":"t","value":1,"ttl_ms":30}"#),
    )
    .await;
    let (s, _) = call(&app, get("/api/cache/get?key=t")).await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    let (s, b) = call(&app, get("/api/cache/get?key=t")).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
}

#[tokio::test]
async fn internal_routes_refuse_other_views_bad_keys_and_off_faults() {
    let app = app(None).await;
    let (_, c) = call(&app, get("/cluster")).await;
    let view = c["view"]["id"].as_u64().unwrap();
    assert!(view > 0 && c["view"]["confirmed"] == true, "{c}");
    // A request routed by another view: 409 stale_view (the sender retries).
    let body = |v: u64, key: &str| {
        serde_json::json!({"key": key, "from": "127.0.0.1:1", "view": v, "request": {"op": "get_s"}})
            .to_string()
    };
    let (s, b) = call(&app, post_json("/internal/cache/home", body(view - 1, "k"))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["code"], "stale_view");
    let (s, b) = call(&app, post_json("/internal/cache/home", body(view, "k"))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["grant"], "absent");
    // Bad keys on internal routes are 400s too, never 500s.
    let (s, b) = call(&app, post_json("/internal/cache/home", body(view, ""))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    // A forward from an older view is refused; from this view, obeyed.
    let fwd = |v: u64| {
        serde_json::json!({"key": "k", "from": "x:1", "view": v,
            "forward": {"kind": "invalidate", "epoch": 1, "force": true}})
        .to_string()
    };
    let (s, b) = call(&app, post_json("/internal/cache/forward", fwd(view - 1))).await;
    assert_eq!(
        (s, &b["error"]["code"]),
        (StatusCode::CONFLICT, &json!("stale_view"))
    );
    let (s, _) = call(&app, post_json("/internal/cache/forward", fwd(view))).await;
    assert_eq!(s, StatusCode::OK);
    // Fault injection is off unless asked for.
    let (s, b) = call(
        &app,
        post_json("/internal/cache/faults", r#"{"block":["127.0.0.1:2"]}"#),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert_eq!(b["error"]["code"], "not_found");
    // The stats and metrics show the view and the memory bounds.
    let (_, st) = call(&app, get("/stats")).await;
    assert_eq!(st["view"], view);
    assert_eq!(st["max_memory_entries"], 100_000);
    assert_eq!(st["memory_evictions"], 0);
}
