//! Every kind of bad input gets a 4xx JSON error and changes nothing, tested
//! with `oneshot` against the real router of a one-node cluster.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::config::{ClusterArgs, ServerArgs};
use http_body_util::BodyExt;
use lock_service::{Config, Service};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn service() -> (Service, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = Config {
        id: 1,
        server: ServerArgs::listen_on(addr.to_string()),
        peers: format!("1={addr}"),
        data_dir: dir.path().to_path_buf(),
        cluster: ClusterArgs::default(),
        heartbeat_ms: 30,
        election_min_ms: 100,
        election_max_ms: 200,
        snapshot_every: 10_000,
        max_queued_writes: 10_000,
        max_locks: 100_000,
        max_remembered: 100_000,
        worker_threads: 0,
    };
    let svc = Service::start(&config).await.unwrap();
    // A single node elects itself; wait for it so writes can commit.
    svc.node
        .raft()
        .wait(Some(std::time::Duration::from_secs(5)))
        .current_leader(1, "single node leads")
        .await
        .unwrap();
    (svc, dir)
}

async fn call(
    svc: &Service,
    method: &str,
    uri: &str,
    body: Body,
    json_ct: bool,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if json_ct {
        req = req.header("content-type", "application/json");
    }
    let resp = svc
        .router
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

async fn post(svc: &Service, uri: &str, body: Value) -> (StatusCode, Value) {
    call(svc, "POST", uri, Body::from(body.to_string()), true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_4xx_json_and_changes_nothing() {
    let (svc, _dir) = service().await;
    let long = "x".repeat(257);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "/api/lock/acquire",
            json!({"owner": "a"}),
            422,
            "invalid_field",
        ),
        (
            "/api/lock/acquire",
            json!({"resource": "r"}),
            422,
            "invalid_field",
        ),
        (
            "/api/lock/acquire",
            json!({"resource": 5, "owner": "a"}),
            422,
            "invalid_field",
        ),
        (
            "/api/lock/acquire",
            json!({"resource": "", "owner": "a"}),
            400,
            "invalid_input",
        ),
        (
            "/api/lock/acquire",
            json!({"resource": long, "owner": "a"}),
            400,
            "invalid_input",
        ),
        (
            "/api/lock/acquire",
            json!({"resource": "r\u{7}", "owner": "a"}),
            400,
            "invalid_input",
        ),
        (
            "/api/lock/acquire",
            json!({"resource": "r", "owner": ""}),
            400,
            "invalid_input",
        ),
        (
            "/api/lock/acquire",
            json!({"resource": "r", "owner": "a", "ttl_ms": 0}),
            400,
            "invalid_input",
        ),
        (
            "/api/lock/acquire",
            json!({"resource": "r", "owner": "a", "ttl_ms": 99_999_999_999u64}),
            400,
            "invalid_input",
        ),
        (
            "/api/lock/acquire",
            json!({"resource": "r", "owner": "a", "ttl_ms": -5}),
            422,
            "invalid_field",
        ),
        (
            "/api/lock/acquire",
            json!({"resource": "r", "owner": "a", "wait_ms": 400_000}),
            400,
            "invalid_input",
        ),
        (
            "/api/lock/acquire",
            json!({"resource": "r", "owner": "a", "mode": "sideways"}),
            422,
            "invalid_field",
        ),
        (
            "/api/lock/acquire",
            json!({"resource": "r", "owner": "a", "request_id": ""}),
            400,
            "invalid_input",
        ),
        (
            "/api/lock/acquire",
            json!({"resource": "r", "owner": "a", "surprise": 1}),
            422,
            "invalid_field",
        ),
        (
            "/api/lock/release",
            json!({"resource": "r", "owner": "a", "token": "abc"}),
            422,
            "invalid_field",
        ),
        (
            "/api/lock/release",
            json!({"resource": "r", "owner": "a"}),
            422,
            "invalid_field",
        ),
        (
            "/api/lock/renew",
            json!({"resource": "r", "owner": "a", "token": 1, "ttl_ms": 1}),
            400,
            "invalid_input",
        ),
        (
            "/api/lock/renew",
            json!({"resource": "r", "owner": "a", "token": -1}),
            422,
            "invalid_field",
        ),
    ];
    for (uri, body, status, code) in cases {
        let (got, v) = post(&svc, uri, body.clone()).await;
        assert_eq!(got.as_u16(), status, "{uri} {body}: {v}");
        assert_eq!(v["error"]["code"], code, "{uri} {body}: {v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // Malformed JSON, wrong content type, oversize body.
    let (s, v) = call(
        &svc,
        "POST",
        "/api/lock/acquire",
        Body::from("{\"resource\":"),
        true,
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "malformed_json");
    let (s, v) = call(&svc, "POST", "/api/lock/acquire", Body::from("{}"), false).await;
    assert_eq!(s, 415, "{v}");
    let big = json!({"resource": "r", "owner": "a", "request_id": "z".repeat(100_000)});
    let (s, v) = post(&svc, "/api/lock/acquire", big).await;
    assert_eq!(s, 413, "{v}");
    // The client limit stops at the client routes: Raft's internal routes
    // keep their own, larger one (the same body is refused for its shape,
    // not its size).
    let big = json!({"padding": "z".repeat(100_000)});
    let (s, v) = post(&svc, "/internal/raft/vote", big).await;
    assert!(s.is_client_error() && s != 413, "{s} {v}");
    // Bad reads.
    let (s, v) = call(
        &svc,
        "GET",
        "/api/lock/r?consistency=eventual",
        Body::empty(),
        false,
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = call(
        &svc,
        "GET",
        &format!("/api/lock/{}", "y".repeat(300)),
        Body::empty(),
        false,
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = call(&svc, "GET", "/api/nothing", Body::empty(), false).await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"]["code"], "not_found");
    // A known path with the wrong method: 405 with the JSON error body.
    let (s, v) = call(&svc, "DELETE", "/api/lock/r", Body::empty(), false).await;
    assert_eq!(s, 405, "{v}");
    assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");
    let (s, v) = call(&svc, "GET", "/api/lock/acquire", Body::empty(), false).await;
    assert_eq!(s, 405, "{v}");
    assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");

    // Nothing was granted by any of it.
    let (s, v) = call(&svc, "GET", "/api/lock/r", Body::empty(), false).await;
    assert_eq!(s, 200);
    assert_eq!(v["held"], false, "{v}");
    assert_eq!(svc.node.read(|m, _| m.table.counters().grants), 0);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_reused_for_another_request_answers_409_and_changes_nothing() {
    let (svc, _dir) = service().await;
    let (s, g) = post(
        &svc,
        "/api/lock/acquire",
        json!({"resource": "r", "owner": "a", "request_id": "job-1"}),
    )
    .await;
    assert_eq!(s, 200, "{g}");
    let token = g["token"].as_u64().unwrap();
    // The acquire's id on its release (once a 500, and the lock stayed held).
    let (s, v) = post(
        &svc,
        "/api/lock/release",
        json!({"resource": "r", "owner": "a", "token": token, "request_id": "job-1"}),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["error"]["code"].as_str()),
        (409, Some("request_id_reused")),
        "{v}"
    );
    let (s, v) = post(
        &svc,
        "/api/lock/renew",
        json!({"resource": "r", "owner": "a", "token": token, "ttl_ms": 1_000,
               "request_id": "job-1"}),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["error"]["code"].as_str()),
        (409, Some("request_id_reused")),
        "{v}"
    );
    let (s, v) = call(&svc, "GET", "/api/lock/r", Body::empty(), false).await;
    assert_eq!(s, 200);
    assert_eq!(v["holders"][0]["token"], token, "still held: {v}");
    // A retry of the acquire is still answered with its grant.
    let (s, v) = post(
        &svc,
        "/api/lock/acquire",
        json!({"resource": "r", "owner": "a", "request_id": "job-1"}),
    )
    .await;
    assert_eq!((s.as_u16(), v["token"].as_u64()), (200, Some(token)), "{v}");
    let (s, v) = post(
        &svc,
        "/api/lock/release",
        json!({"resource": "r", "owner": "a", "token": token, "request_id": "job-1-release"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_and_renew_answer_404_and_409_for_holds_that_are_not_theirs() {
    let (svc, _dir) = service().await;
    let (s, g) = post(
        &svc,
        "/api/lock/acquire",
        json!({"resource": "r", "owner": "a", "ttl_ms": 10_000}),
    )
    .await;
    assert_eq!(s, 200, "{g}");
    assert_eq!(g["granted"], true);
    assert_eq!(g["mode"], "exclusive");
    let token = g["token"].as_u64().unwrap();
    let (s, v) = post(
        &svc,
        "/api/lock/acquire",
        json!({"resource": "r", "owner": "b"}),
    )
    .await;
    assert_eq!(s, 409);
    assert_eq!(v["error"]["code"], "lock_held");
    assert_eq!(v["error"]["holders"][0]["owner"], "a");
    let (s, v) = post(
        &svc,
        "/api/lock/release",
        json!({"resource": "r", "owner": "b", "token": token}),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["error"]["code"].as_str()),
        (409, Some("owner_mismatch"))
    );
    let (s, v) = post(
        &svc,
        "/api/lock/release",
        json!({"resource": "r", "owner": "a", "token": token + 1}),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["error"]["code"].as_str()),
        (409, Some("token_mismatch"))
    );
    let (s, v) = post(
        &svc,
        "/api/lock/release",
        json!({"resource": "other", "owner": "a", "token": token}),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["error"]["code"].as_str()),
        (404, Some("not_held"))
    );
    let (s, v) = post(
        &svc,
        "/api/lock/renew",
        json!({"resource": "r", "owner": "a", "token": token, "ttl_ms": 20_000}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["expires_at_ms"].as_u64().unwrap() > g["expires_at_ms"].as_u64().unwrap());
    let (s, _) = post(
        &svc,
        "/api/lock/release",
        json!({"resource": "r", "owner": "a", "token": token}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = post(
        &svc,
        "/api/lock/release",
        json!({"resource": "r", "owner": "a", "token": token}),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["error"]["code"].as_str()),
        (404, Some("not_held"))
    );
    svc.stop().await;
}

/// What the contract (`api`, the gateway's OpenAPI document) states and the
/// fuzzer checks: resources that are path segments, limits in characters,
/// integers as JSON Schema has them, objects only, a JSON 400 for a bad query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_edges() {
    let (svc, _dir) = service().await;
    for name in [".", ".."] {
        let (s, v) = post(
            &svc,
            "/api/lock/acquire",
            json!({"resource": name, "owner": "a"}),
        )
        .await;
        assert_eq!(
            (s.as_u16(), &v["error"]["code"]),
            (400, &json!("invalid_input")),
            "{name}"
        );
    }
    let wide = "ü".repeat(256);
    let (s, v) = post(
        &svc,
        "/api/lock/acquire",
        json!({"resource": wide, "owner": "a", "ttl_ms": 5000.0, "mode": null, "request_id": null}),
    )
    .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    assert_eq!(v["mode"], "exclusive");
    let (s, v) = call(
        &svc,
        "POST",
        "/api/lock/acquire",
        Body::from(r#"["r", "a"]"#),
        true,
    )
    .await;
    assert_eq!(
        (s.as_u16(), &v["error"]["code"]),
        (422, &json!("invalid_field"))
    );
    let (s, v) = post(
        &svc,
        "/api/lock/acquire",
        json!({"resource": "r", "owner": "a", "ttl_ms": 100.5}),
    )
    .await;
    assert_eq!(
        (s.as_u16(), &v["error"]["code"]),
        (422, &json!("invalid_field"))
    );
    let (s, v) = call(
        &svc,
        "GET",
        "/api/lock/r?consistency=stale&consistency=stale",
        Body::empty(),
        false,
    )
    .await;
    assert_eq!(
        (s.as_u16(), &v["error"]["code"]),
        (400, &json!("invalid_input"))
    );
}
