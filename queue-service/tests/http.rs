//! Router tests with `oneshot`: status codes and JSON error bodies for good
//! and bad input, on a single embedded-store node (no network).

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

struct App {
    router: Router,
    _dir: tempfile::TempDir,
}

async fn app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let mut config = queue_service::Config::for_listen("127.0.0.1:7101");
    config.data_dir = Some(dir.path().to_path_buf());
    let store = queue_service::open_store(&config).unwrap();
    let state = queue_service::build_state(&config, store).await;
    App {
        router: queue_service::router(state),
        _dir: dir,
    }
}

async fn call(app: &App, method: &str, path: &str, body: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let v =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
    (status, v)
}

async fn post(app: &App, path: &str, body: Value) -> (StatusCode, Value) {
    call(app, "POST", path, Some(&body.to_string())).await
}

fn code(v: &Value) -> &str {
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {v}"))
}

#[tokio::test]
async fn happy_path_round_trip() {
    let app = app().await;
    let (s, v) = post(
        &app,
        "/api/queue/enqueue",
        json!({"queue": "jobs", "payload": {"n": 1}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let (s, v) = post(
        &app,
        "/api/queue/enqueue",
        json!({"queue": "jobs", "messages": [{"payload": null}, {"payload": [1, 2], "delay_ms": 60000}]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["ids"].as_array().unwrap().len(), 2);
    let (s, v) = call(&app, "GET", "/api/queue/jobs", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["ready"].as_u64(), v["delayed"].as_u64()),
        (Some(2), Some(1)),
        "{v}"
    );
    let (s, v) = post(
        &app,
        "/api/queue/dequeue",
        json!({"queue": "jobs", "max": 10}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["id"], json!(id));
    assert_eq!(msgs[0]["payload"], json!({"n": 1}));
    assert_eq!(msgs[1]["payload"], Value::Null);
    assert_eq!(msgs[0]["attempts"], json!(1));
    assert!(msgs[0]["enqueued_at_ms"].as_u64().unwrap() > 0);
    let r0 = msgs[0]["receipt"].as_str().unwrap();
    let r1 = msgs[1]["receipt"].as_str().unwrap();
    let (s, v) = post(
        &app,
        "/api/queue/extend",
        json!({"queue": "jobs", "receipt": r0, "visibility_ms": 60000}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["visible_until_ms"].as_u64().is_some());
    let (s, v) = post(
        &app,
        "/api/queue/ack",
        json!({"queue": "jobs", "receipt": r0}),
    )
    .await;
    assert_eq!((s, v["acked"].as_u64()), (StatusCode::OK, Some(1)));
    let (s, v) = post(
        &app,
        "/api/queue/nack",
        json!({"queue": "jobs", "receipt": r1, "delay_ms": 0}),
    )
    .await;
    assert_eq!(
        (s, v["outcome"].as_str()),
        (StatusCode::OK, Some("requeued"))
    );
    let (s, v) = post(&app, "/api/queue/dequeue", json!({"queue": "jobs"})).await;
    assert_eq!(s, StatusCode::OK);
    let r = v["messages"][0]["receipt"].as_str().unwrap().to_string();
    assert_eq!(v["messages"][0]["attempts"], json!(2));
    let (s, v) = post(
        &app,
        "/api/queue/ack",
        json!({"queue": "jobs", "receipts": [r1, r]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["acked"], json!(1));
    assert_eq!(v["failed"][0]["code"], json!("stale_receipt"));
    assert_eq!(v["failed"][0]["status"], json!(409));
}

#[tokio::test]
async fn dead_letter_routes_and_config() {
    let app = app().await;
    let (s, v) = post(
        &app,
        "/api/queue/config",
        json!({"queue": "p", "max_attempts": 1}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    post(
        &app,
        "/api/queue/enqueue",
        json!({"queue": "p", "payload": "bad"}),
    )
    .await;
    let (_, v) = post(&app, "/api/queue/dequeue", json!({"queue": "p"})).await;
    let r = v["messages"][0]["receipt"].as_str().unwrap();
    let (s, v) = post(&app, "/api/queue/nack", json!({"queue": "p", "receipt": r})).await;
    assert_eq!(
        (s, v["outcome"].as_str()),
        (StatusCode::OK, Some("dead_lettered"))
    );
    let (s, v) = call(&app, "GET", "/api/queue/p/dead", None).await;
    assert_eq!(s, StatusCode::OK);
    let dead = v["messages"].as_array().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["payload"], json!("bad"));
    assert_eq!(dead[0]["attempts"], json!(1));
    let id = dead[0]["id"].clone();
    let (_, v) = call(&app, "GET", "/api/queue/p", None).await;
    assert_eq!(v["dead_lettered"], json!(1));
    let (s, v) = post(
        &app,
        "/api/queue/redrive",
        json!({"queue": "p", "ids": [id]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["redriven"], json!([id]));
    let (_, v) = call(&app, "GET", "/api/queue/p", None).await;
    assert_eq!(
        (v["ready"].as_u64(), v["dead_lettered"].as_u64()),
        (Some(1), Some(0))
    );
}

#[tokio::test]
async fn bad_input_gets_4xx_json() {
    let app = app().await;
    let long = "q".repeat(257);
    let big = "x".repeat(256 * 1024 + 1);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/api/queue/enqueue", "{not json".into(), 400, "malformed_json"),
        ("/api/queue/enqueue", json!({"payload": 1}).to_string(), 422, "invalid_field"),
        ("/api/queue/enqueue", json!({"queue": "q"}).to_string(), 422, "invalid_field"),
        ("/api/queue/enqueue", json!({"queue": 5, "payload": 1}).to_string(), 422, "invalid_field"),
        ("/api/queue/enqueue", json!({"queue": "", "payload": 1}).to_string(), 400, "invalid_input"),
        ("/api/queue/enqueue", json!({"queue": long, "payload": 1}).to_string(), 400, "invalid_input"),
        ("/api/queue/enqueue", json!({"queue": "a\u{1}b", "payload": 1}).to_string(), 400, "invalid_input"),
        ("/api/queue/enqueue", json!({"queue": "q", "payload": big}).to_string(), 413, "payload_too_large"),
        ("/api/queue/enqueue", json!({"queue": "q", "payload": 1, "messages": []}).to_string(), 400, "invalid_input"),
        ("/api/queue/enqueue", json!({"queue": "q", "messages": []}).to_string(), 400, "invalid_input"),
        ("/api/queue/enqueue", json!({"queue": "q", "messages": vec![json!({"payload": 1}); 101]}).to_string(), 400, "invalid_input"),
        ("/api/queue/enqueue", json!({"queue": "q", "payload": 1, "delay_ms": 86_400_001u64}).to_string(), 400, "invalid_input"),
        ("/api/queue/enqueue", json!({"queue": "q", "payload": 1, "ttl_ms": 0}).to_string(), 400, "invalid_input"),
        ("/api/queue/enqueue", json!({"queue": "q", "payload": 1, "delay_ms": -1}).to_string(), 422, "invalid_field"),
        ("/api/queue/dequeue", json!({"queue": "q", "max": 0}).to_string(), 400, "invalid_input"),
        ("/api/queue/dequeue", json!({"queue": "q", "max": 101}).to_string(), 400, "invalid_input"),
        ("/api/queue/dequeue", json!({"queue": "q", "visibility_ms": 0}).to_string(), 400, "invalid_input"),
        ("/api/queue/dequeue", json!({"queue": "q", "visibility_ms": 43_200_001u64}).to_string(), 400, "invalid_input"),
        ("/api/queue/dequeue", json!({"queue": "q", "wait_ms": 20_001}).to_string(), 400, "invalid_input"),
        ("/api/queue/ack", json!({"queue": "q"}).to_string(), 422, "invalid_field"),
        ("/api/queue/ack", json!({"queue": "q", "receipt": "nope"}).to_string(), 400, "invalid_receipt"),
        ("/api/queue/ack", json!({"queue": "q", "receipt": "0000000000000009.1.00000000000000ff"}).to_string(), 404, "message_not_found"),
        ("/api/queue/ack", json!({"queue": "q", "receipts": []}).to_string(), 400, "invalid_input"),
        ("/api/queue/nack", json!({"queue": "q", "receipt": "0000000000000009.1.00000000000000ff"}).to_string(), 404, "message_not_found"),
        ("/api/queue/nack", json!({"queue": "q", "receipt": "x", "delay_ms": 1}).to_string(), 400, "invalid_receipt"),
        ("/api/queue/extend", json!({"queue": "q", "receipt": "0000000000000009.1.00000000000000ff"}).to_string(), 422, "invalid_field"),
        ("/api/queue/extend", json!({"queue": "q", "receipt": "0000000000000009.1.00000000000000ff", "visibility_ms": 0}).to_string(), 400, "invalid_input"),
        ("/api/queue/redrive", json!({"queue": "q", "ids": ["zz"]}).to_string(), 400, "invalid_input"),
        ("/api/queue/redrive", json!({"queue": "q", "max": 0}).to_string(), 400, "invalid_input"),
        ("/api/queue/config", json!({"queue": "q", "max_attempts": 0}).to_string(), 400, "invalid_input"),
    ];
    for (path, body, status, want) in cases {
        let (s, v) = call(&app, "POST", path, Some(&body)).await;
        let short: String = body.chars().take(80).collect();
        assert_eq!(s.as_u16(), status, "{path} {short}: {v}");
        assert_eq!(code(&v), want, "{path} {short}: {v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // Body over the request limit.
    let huge = format!(
        "{{\"queue\":\"q\",\"payload\":\"{}\"}}",
        "x".repeat(5 * 1024 * 1024)
    );
    let (s, v) = call(&app, "POST", "/api/queue/enqueue", Some(&huge)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    // Wrong content type, unknown route, bad query.
    let req = Request::builder()
        .method("POST")
        .uri("/api/queue/enqueue")
        .body(Body::from("{}"))
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, v) = call(&app, "GET", "/api/nope", None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, v) = call(&app, "DELETE", "/api/queue/enqueue", None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let (s, v) = call(&app, "GET", "/api/queue/q/dead?limit=abc", None).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_input"));
    let (s, v) = call(&app, "GET", "/api/queue/q/dead?limit=0", None).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_input"));
    let (s, _) = call(
        &app,
        "GET",
        &format!("/api/queue/{}", "q".repeat(257)),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Nothing was stored by any of that.
    let (_, v) = call(&app, "GET", "/api/queue/q", None).await;
    assert_eq!(
        (v["ready"].as_u64(), v["delayed"].as_u64()),
        (Some(0), Some(0)),
        "{v}"
    );
}

#[tokio::test]
async fn health_stats_metrics_cluster() {
    let app = app().await;
    post(
        &app,
        "/api/queue/enqueue",
        json!({"queue": "m", "payload": 1}),
    )
    .await;
    let (_, v) = post(&app, "/api/queue/dequeue", json!({"queue": "m"})).await;
    let r = v["messages"][0]["receipt"].as_str().unwrap();
    post(&app, "/api/queue/ack", json!({"queue": "m", "receipt": r})).await;
    let (s, v) = call(&app, "GET", "/health", None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, v) = call(&app, "GET", "/cluster", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v,
        json!({"node": "127.0.0.1:7101", "members": ["127.0.0.1:7101"], "backend": "embedded"})
    );
    let (s, v) = call(&app, "GET", "/stats", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["counters"]["enqueued"], json!(1));
    assert_eq!(v["counters"]["delivered"], json!(1));
    assert_eq!(v["counters"]["acked"], json!(1));
    let (s, text) = call(&app, "GET", "/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    let text = text.as_str().unwrap().to_string();
    for want in [
        "queue_enqueued_total 1",
        "queue_delivered_total 1",
        "queue_acked_total 1",
        "queue_redelivered_total 0",
        "queue_dead_lettered_total 0",
        "queue_expired_total 0",
        "queue_storage_duration_seconds_bucket{le=",
        "http_requests_total{method=\"POST\",route=\"/api/queue/enqueue\",status=\"201\"} 1",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[tokio::test]
async fn redis_down_answers_503_and_health_fails() {
    let port = support::free_port();
    let mut config = queue_service::Config::for_listen("127.0.0.1:7101");
    config.redis_url = Some(format!("redis://127.0.0.1:{port}/"));
    let store = queue_service::open_store(&config).unwrap();
    let state = queue_service::build_state(&config, store).await;
    let app = App {
        router: queue_service::router(state),
        _dir: tempfile::tempdir().unwrap(),
    };
    let (s, v) = post(
        &app,
        "/api/queue/enqueue",
        json!({"queue": "q", "payload": 1}),
    )
    .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("redis"),
        "{v}"
    );
    let (s, v) = post(&app, "/api/queue/dequeue", json!({"queue": "q"})).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
    );
    let (s, v) = call(&app, "GET", "/health", None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
    );
    assert_eq!(v["error"]["backend"], json!("redis"));
}

#[tokio::test]
async fn depth_gauges_sum_owned_queues() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = queue_service::Config::for_listen("127.0.0.1:7101");
    config.data_dir = Some(dir.path().to_path_buf());
    let store = queue_service::open_store(&config).unwrap();
    let state = queue_service::build_state(&config, store).await;
    let app = App {
        router: queue_service::router(state.clone()),
        _dir: tempfile::tempdir().unwrap(),
    };
    post(
        &app,
        "/api/queue/enqueue",
        json!({"queue": "a", "messages": [{"payload": 1}, {"payload": 2}]}),
    )
    .await;
    post(
        &app,
        "/api/queue/enqueue",
        json!({"queue": "b", "payload": 3, "delay_ms": 60000}),
    )
    .await;
    post(&app, "/api/queue/dequeue", json!({"queue": "a"})).await;
    let sum = state.node.refresh_depth().await.unwrap();
    assert_eq!(
        (sum.ready, sum.delayed, sum.in_flight, sum.dead_lettered),
        (1, 1, 1, 0)
    );
    let (_, text) = call(&app, "GET", "/metrics", None).await;
    let text = text.as_str().unwrap();
    for want in [
        "queue_depth{state=\"ready\"} 1",
        "queue_depth{state=\"delayed\"} 1",
        "queue_depth{state=\"in_flight\"} 1",
        "queue_depth{state=\"dead_lettered\"} 0",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let (_, v) = call(&app, "GET", "/stats", None).await;
    assert_eq!(v["depth_owned"]["ready"], json!(1));
}

#[tokio::test]
async fn payload_json_text_is_returned_verbatim() {
    let app = app().await;
    let body = r#"{"queue": "v", "payload": {"price": 2.50, "big": 12345678901234567890123}}"#;
    let (s, _) = call(&app, "POST", "/api/queue/enqueue", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED);
    let req = Request::builder()
        .method("POST")
        .uri("/api/queue/dequeue")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"queue": "v"}"#))
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(
        text.contains(r#""payload":{"price": 2.50, "big": 12345678901234567890123}"#),
        "{text}"
    );
}

/// What the contract (`api`, and the gateway's OpenAPI document) states and
/// the fuzzer checks: names that are path segments, one form per enqueue,
/// objects only, integers as JSON Schema has them.
#[tokio::test]
async fn contract_edges() {
    let app = app().await;
    for name in [".", ".."] {
        let (s, v) = post(
            &app,
            "/api/queue/enqueue",
            json!({"queue": name, "payload": 1}),
        )
        .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_input"),
            "{name}"
        );
    }
    let (s, _) = post(
        &app,
        "/api/queue/enqueue",
        json!({"queue": "...", "payload": 1}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    // Limits count characters: 256 of them pass even when they are 512 bytes.
    let long = "ü".repeat(256);
    let (s, _) = post(
        &app,
        "/api/queue/enqueue",
        json!({"queue": long, "payload": 1}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = post(
        &app,
        "/api/queue/enqueue",
        json!({"queue": "q", "messages": [{"payload": 1}], "delay_ms": 5}),
    )
    .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_input"));
    for body in [r#"["q", 1]"#, r#"{"queue": "q", "messages": [[1, null]]}"#] {
        let (s, v) = call(&app, "POST", "/api/queue/enqueue", Some(body)).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            "{body}"
        );
    }
    let (s, v) = post(
        &app,
        "/api/queue/enqueue",
        json!({"queue": "q", "payload": 1, "x": 2}),
    )
    .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field")
    );
    // None of those was enqueued; a valid one is.
    let (s, _) = post(
        &app,
        "/api/queue/enqueue",
        json!({"queue": "q", "payload": 7}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = post(
        &app,
        "/api/queue/dequeue",
        json!({"queue": "q", "max": 2.0, "wait_ms": 0.0}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["messages"].as_array().unwrap().len(), 1);
    let (s, v) = post(
        &app,
        "/api/queue/dequeue",
        json!({"queue": "q", "max": 1.5}),
    )
    .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field")
    );
}
