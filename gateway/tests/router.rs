//! Router behaviour with fake backends: small axum servers on 127.0.0.1:0
//! that record what reached them and answer as each test scripts them. The
//! gateway is driven with `oneshot` (no socket on its side), so these tests
//! pin routing, retries, protection and the OpenAPI document without the
//! real services (see `e2e.rs` for those).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use gateway::{router, Backends, Gateway, Service, Settings};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// One request as a fake backend saw it.
#[derive(Debug, Clone)]
struct Seen {
    node: String,
    method: String,
    uri: String,
    body: Value,
    auth: Option<String>,
}

type Script = Arc<dyn Fn(&Seen) -> (StatusCode, Value) + Send + Sync>;

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Start a fake backend; returns its address.
async fn fake(log: &Log, script: Script) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let node = addr.clone();
    let log = log.clone();
    let app = Router::new().fallback(move |req: Request<Body>| {
        let log = log.clone();
        let script = script.clone();
        let node = node.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = to_bytes(body, usize::MAX).await.unwrap();
            let seen = Seen {
                node,
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                auth: parts
                    .headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_string()),
            };
            let (status, body) = script(&seen);
            log.0.lock().unwrap().push(seen);
            (status, axum::Json(body)).into_response()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn ok_echo() -> Script {
    Arc::new(|s: &Seen| (StatusCode::OK, json!({"node": s.node, "echo": s.body})))
}

/// An address nothing listens on.
async fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap().to_string();
    drop(l);
    a
}

fn gateway_with(
    settings: Settings,
    lock: Vec<String>,
    queue: Vec<String>,
    cache: Vec<String>,
) -> (Gateway, gateway::BackendSenders) {
    let (backends, senders) = Backends::channels(lock, queue, cache);
    (Gateway::new(settings, backends).unwrap(), senders)
}

async fn send(gw: &Gateway, req: Request<Body>) -> (StatusCode, Value, axum::http::HeaderMap) {
    let resp = router(gw.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body, headers)
}

fn post(path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn lock_calls_follow_the_leader_with_one_request_id() {
    let log = Log::default();
    let leader_slot: Arc<Mutex<String>> = Arc::default();
    let slot = leader_slot.clone();
    // Followers answer 503 naming the leader; the leader answers 200.
    let script: Script = Arc::new(move |s: &Seen| {
        let leader = slot.lock().unwrap().clone();
        if s.node == leader {
            (
                StatusCode::OK,
                json!({"granted": true, "token": 7, "node": s.node}),
            )
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": {"code": "unavailable", "message": "not leader", "leader_addr": leader}}),
            )
        }
    });
    let a = fake(&log, script.clone()).await;
    let b = fake(&log, script.clone()).await;
    let c = fake(&log, script).await;
    *leader_slot.lock().unwrap() = c.clone();
    let (gw, _tx) = gateway_with(
        Settings::default(),
        vec![a.clone(), b.clone(), c.clone()],
        vec![],
        vec![],
    );

    // The gateway believes in a stale leader: the follower's 503 redirects it.
    gw.set_leader(Some(a.clone()));
    let (status, body, _) = send(
        &gw,
        post("/api/lock/acquire", r#"{"resource":"r","owner":"o"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["node"], c);
    assert_eq!(
        gw.leader().as_deref(),
        Some(c.as_str()),
        "leader remembered"
    );
    let seen = log.all();
    let ids: Vec<&Value> = seen.iter().map(|s| &s.body["request_id"]).collect();
    assert!(
        ids[0].is_string(),
        "gateway filled in a request_id: {seen:?}"
    );
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "same request_id on every attempt: {ids:?}"
    );

    // The next call goes straight to the remembered leader.
    let before = log.count();
    let (status, _, _) = send(
        &gw,
        post(
            "/api/lock/release",
            r#"{"resource":"r","owner":"o","token":7,"request_id":"mine"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = log.all();
    assert_eq!(seen.len(), before + 1);
    assert_eq!(seen[before].node, c);
    assert_eq!(
        seen[before].body["request_id"], "mine",
        "client's request_id kept"
    );
}

#[tokio::test]
async fn lock_calls_survive_a_dead_node_and_give_up_in_bounded_time() {
    let log = Log::default();
    let dead = dead_addr().await;
    let live = fake(&log, ok_echo()).await;
    let (gw, tx) = gateway_with(
        Settings::default(),
        vec![dead.clone(), live.clone()],
        vec![],
        vec![],
    );
    gw.set_leader(Some(dead.clone()));
    let (status, body, _) = send(
        &gw,
        post(
            "/api/lock/renew",
            r#"{"resource":"r","owner":"o","token":1,"ttl_ms":100}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["node"], live);
    assert_ne!(
        gw.leader().as_deref(),
        Some(dead.as_str()),
        "dead leader forgotten"
    );

    // Only dead nodes: 503 JSON after the retry budget, not a hang.
    tx.set(Service::Lock, vec![dead.clone()]);
    let settings = Settings {
        lock_retry: Duration::from_millis(300),
        ..Settings::default()
    };
    let (gw2, _tx2) = gateway_with(settings, vec![dead], vec![], vec![]);
    let start = std::time::Instant::now();
    let (status, body, _) = send(
        &gw2,
        post("/api/lock/acquire", r#"{"resource":"r","owner":"o"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(code(&body), "unavailable");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn lock_refusals_pass_through_unchanged() {
    let log = Log::default();
    let held = json!({"error": {"code": "lock_held", "message": "held by a", "holders": [{"owner": "a"}]}});
    let h2 = held.clone();
    let node = fake(
        &log,
        Arc::new(move |_s: &Seen| (StatusCode::CONFLICT, h2.clone())),
    )
    .await;
    let (gw, _tx) = gateway_with(Settings::default(), vec![node], vec![], vec![]);
    let (status, body, _) = send(
        &gw,
        post("/api/lock/acquire", r#"{"resource":"r","owner":"b"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body, held);
    assert_eq!(log.count(), 1, "a 409 is final, not retried");
}

#[tokio::test]
async fn queues_go_to_their_ring_owner_and_fail_over() {
    let log = Log::default();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(fake(&log, ok_echo()).await);
    }
    let (gw, tx) = gateway_with(Settings::default(), vec![], nodes.clone(), vec![]);
    let ring = common::Ring::new(nodes.clone());
    for i in 0..12 {
        let q = format!("q-{i}");
        let (status, body, _) = send(
            &gw,
            post(
                "/api/queue/enqueue",
                &format!(r#"{{"queue":"{q}","payload":{i}}}"#),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["node"], ring.owner(&q).unwrap(), "{q}");
        // Path-named queues route the same way, path forwarded unchanged.
        let (_, body, _) = send(&gw, get(&format!("/api/queue/{q}"))).await;
        assert_eq!(body["node"], ring.owner(&q).unwrap(), "{q} by path");
    }
    let seen = log.all();
    assert!(
        seen.iter()
            .any(|s| s.method == "GET" && s.uri == "/api/queue/q-3"),
        "{seen:?}"
    );

    // The owner of q-0 becomes unreachable: the next owner serves it.
    let owners: Vec<String> = ring
        .owners("q-0", 3)
        .into_iter()
        .map(String::from)
        .collect();
    let dead = dead_addr().await;
    let mut members = nodes.clone();
    let idx = members.iter().position(|m| *m == owners[0]).unwrap();
    members[idx] = dead.clone();
    tx.set(Service::Queue, members.clone());
    let ring2 = common::Ring::new(members.clone());
    let expect: Vec<String> = ring2
        .owners("q-0", 3)
        .into_iter()
        .filter(|m| *m != dead)
        .map(String::from)
        .collect();
    let (status, body, _) = send(&gw, post("/api/queue/dequeue", r#"{"queue":"q-0"}"#)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["node"], expect[0]);

    // A member added later takes over the queues the ring now gives it.
    let newcomer = fake(&log, ok_echo()).await;
    members.push(newcomer.clone());
    tx.set(Service::Queue, members.clone());
    let ring3 = common::Ring::new(members.clone());
    let moved = (0..200)
        .map(|i| format!("m-{i}"))
        .find(|q| ring3.owner(q) == Some(newcomer.as_str()))
        .unwrap();
    let (_, body, _) = send(
        &gw,
        post(
            "/api/queue/ack",
            &format!(r#"{{"queue":"{moved}","receipt":"x"}}"#),
        ),
    )
    .await;
    assert_eq!(body["node"], newcomer);
}

#[tokio::test]
async fn cache_node_choice() {
    let log = Log::default();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(fake(&log, ok_echo()).await);
    }
    let (gw, _tx) = gateway_with(Settings::default(), vec![], vec![], nodes.clone());
    // Named by header.
    let req = Request::get("/api/cache/get?key=k")
        .header("x-cache-node", nodes[1].as_str())
        .body(Body::empty())
        .unwrap();
    let (status, body, _) = send(&gw, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["node"], nodes[1]);
    // Named by query; the gateway's `node` parameter is not forwarded.
    let (_, body, _) = send(&gw, get(&format!("/api/cache/get?key=k&node={}", nodes[2]))).await;
    assert_eq!(body["node"], nodes[2]);
    assert!(log
        .all()
        .iter()
        .any(|s| s.uri == "/api/cache/get?key=k" && s.node == nodes[2]));
    // Unknown node: 400 JSON, nothing forwarded.
    let before = log.count();
    let (status, body, _) = send(&gw, get("/api/cache/get?key=k&node=10.1.1.1:1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "unknown_node");
    assert_eq!(log.count(), before);
    // Sticky per client id.
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..5 {
        let req = post("/api/cache/set", r#"{"key":"k","value":1}"#);
        let (mut parts, b) = req.into_parts();
        parts
            .headers
            .insert("x-client-id", "client-a".parse().unwrap());
        let (_, body, _) = send(&gw, Request::from_parts(parts, b)).await;
        firsts.insert(body["node"].as_str().unwrap().to_string());
    }
    assert_eq!(firsts.len(), 1, "one client id, one node");
    // Round-robin otherwise.
    let mut spread = std::collections::HashSet::new();
    for _ in 0..6 {
        let (_, body, _) = send(&gw, get("/api/cache/stats")).await;
        spread.insert(body["node"].as_str().unwrap().to_string());
    }
    assert_eq!(spread.len(), 3, "round-robin reaches every node");
}

#[tokio::test]
async fn tokens_guard_every_api_route_and_nothing_reaches_a_backend() {
    let log = Log::default();
    let node = fake(&log, ok_echo()).await;
    let settings = Settings {
        api_tokens: vec!["s3cret".into(), "other".into()],
        ..Settings::default()
    };
    let (gw, _tx) = gateway_with(
        settings,
        vec![node.clone()],
        vec![node.clone()],
        vec![node.clone()],
    );
    let requests = [
        post("/api/lock/acquire", r#"{"resource":"r","owner":"o"}"#),
        get("/api/lock/r"),
        post("/api/queue/enqueue", r#"{"queue":"q","payload":1}"#),
        get("/api/queue/q"),
        post("/api/cache/set", r#"{"key":"k","value":1}"#),
        get("/api/cache/get?key=k"),
        get("/cluster"),
        get("/stats"),
        get("/metrics"),
    ];
    for req in requests {
        let path = req.uri().to_string();
        let (parts, body) = req.into_parts();
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("s3cret"),
            Some("Basic czNjcmV0"),
        ] {
            let mut p = parts.clone();
            if let Some(a) = auth {
                p.headers.insert("authorization", a.parse().unwrap());
            }
            let (status, resp, headers) = send(&gw, Request::from_parts(p, Body::empty())).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} with {auth:?}");
            assert_eq!(code(&resp), "unauthorized");
            assert_eq!(headers.get("www-authenticate").unwrap(), "Bearer");
        }
        drop(body);
    }
    assert_eq!(log.count(), 0, "nothing reached a backend");
    // A valid token passes, and is not forwarded to the backend.
    let mut req = post("/api/queue/enqueue", r#"{"queue":"q","payload":1}"#);
    req.headers_mut()
        .insert("authorization", "Bearer other".parse().unwrap());
    let (status, _, _) = send(&gw, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(log.count(), 1);
    assert_eq!(log.all()[0].auth, None);
    // Health and docs stay open.
    let (status, _, _) = send(&gw, get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(&gw, get("/health")).await;
    assert_ne!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_input_gets_json_4xx_and_never_reaches_a_backend() {
    let log = Log::default();
    let node = fake(&log, ok_echo()).await;
    let settings = Settings {
        body_limit_bytes: 1024,
        ..Settings::default()
    };
    let (gw, _tx) = gateway_with(
        settings,
        vec![node.clone()],
        vec![node.clone()],
        vec![node.clone()],
    );
    let big = format!(r#"{{"queue":"q","payload":"{}"}}"#, "x".repeat(2000));
    let long_name = format!(r#"{{"queue":"{}","payload":1}}"#, "q".repeat(300));
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            post("/api/lock/acquire", "{oops"),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            post("/api/lock/acquire", "[1]"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            post("/api/lock/release", r#"{"request_id":42}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            post("/api/queue/enqueue", ""),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            post("/api/queue/enqueue", r#"{"payload":1}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            post("/api/queue/dequeue", r#"{"queue":5}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            post("/api/queue/ack", r#"{"queue":""}"#),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            post("/api/queue/enqueue", &long_name),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            post("/api/queue/enqueue", &big),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            get("/api/queue/bad%01name"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            get("/api/queue/not-utf8-%ff/dead"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (get("/api/lock"), StatusCode::NOT_FOUND, "not_found"),
        (
            get("/internal/raft/vote"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            post("/internal/cache/home", "{}"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            get("/api/lock/acquire"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Request::delete("/api/queue/enqueue")
                .body(Body::empty())
                .unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        // The list routes: a page size out of range, a bad cursor or prefix.
        (
            get("/api/locks?limit=0"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            get("/api/locks?limit=1001"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            get("/api/locks?limit=ten"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            get("/api/locks?after="),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            get("/api/locks?prefix=a%01"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            get("/api/queues?limit=5000"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            get("/api/queues?after=%0A"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            get("/api/events?limit=0"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            get("/api/events?limit=-1"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            post("/api/locks", "{}"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (req, want_status, want_code) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let (status, body, headers) = send(&gw, req).await;
        assert_eq!(status, want_status, "{what}: {body}");
        assert_eq!(code(&body), want_code, "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{what}"
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(headers.contains_key("allow"), "{what}: no Allow header");
        }
    }
    assert_eq!(log.count(), 0, "{:?}", log.all());
}

#[tokio::test]
async fn slow_backends_get_a_json_504() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        "late"
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let settings = Settings {
        request_timeout: Duration::from_millis(300),
        ..Settings::default()
    };
    let (gw, _tx) = gateway_with(settings, vec![], vec![addr.clone()], vec![]);
    let (status, body, _) = send(
        &gw,
        post("/api/queue/enqueue", r#"{"queue":"q","payload":1}"#),
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(code(&body), "timeout");

    let settings = Settings {
        backend_timeout: Duration::from_millis(200),
        ..Settings::default()
    };
    let (gw, _tx) = gateway_with(settings, vec![], vec![], vec![addr]);
    let (status, body, _) = send(&gw, get("/api/cache/get?key=k")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(code(&body), "backend_timeout");
}

#[tokio::test]
async fn openapi_is_openapi_3_and_every_documented_route_answers() {
    // No backends at all: every route must still exist (503/4xx, never 404/405).
    let (gw, _tx) = gateway_with(Settings::default(), vec![], vec![], vec![]);
    let (status, doc, _) = send(&gw, get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    check_openapi_document(&doc);
    let paths = doc["paths"].as_object().unwrap();
    for required in [
        "/api/lock/acquire",
        "/api/lock/release",
        "/api/lock/renew",
        "/api/lock/{resource}",
        "/api/locks",
        "/api/queues",
        "/api/events",
        "/api/queue/enqueue",
        "/api/queue/dequeue",
        "/api/queue/ack",
        "/api/queue/nack",
        "/api/queue/extend",
        "/api/queue/redrive",
        "/api/queue/config",
        "/api/queue/{queue}",
        "/api/queue/{queue}/dead",
        "/api/cache/set",
        "/api/cache/get",
        "/api/cache/delete",
        "/api/cache/line",
        "/api/cache/stats",
        "/health",
        "/cluster",
        "/stats",
        "/metrics",
    ] {
        assert!(paths.contains_key(required), "{required} undocumented");
    }
    for (path, item) in paths {
        let concrete = path
            .replace("{resource}", "res-1")
            .replace("{queue}", "queue-1");
        for method in item.as_object().unwrap().keys() {
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(format!("{concrete}?key=k"))
                .header("content-type", "application/json")
                .body(Body::from(r#"{"resource":"r","owner":"o","queue":"q","key":"k","value":1,"payload":1,"token":1,"receipt":"x","visibility_ms":1000}"#))
                .unwrap();
            let (status, body, _) = send(&gw, req).await;
            assert!(
                status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} -> {status} {body}"
            );
        }
    }
    // Swagger UI from vendored assets.
    let (status, body, _) = send(&gw, get("/docs/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.as_str().unwrap().contains("swagger"), "{body}");
    let (status, _, _) = send(&gw, get("/docs/swagger-ui.css")).await;
    assert_eq!(status, StatusCode::OK);
}

/// Structural OpenAPI 3 checks: version, info, every operation has
/// responses with descriptions, every `$ref` resolves, path parameters are
/// declared.
fn check_openapi_document(doc: &Value) {
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string());
    assert!(doc["info"]["version"].is_string());
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(!paths.is_empty());
    for (path, item) in paths {
        assert!(path.starts_with('/'), "{path}");
        for (method, op) in item.as_object().unwrap() {
            assert!(
                ["get", "post", "put", "delete", "patch"].contains(&method.as_str()),
                "{method}"
            );
            let responses = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path}: no responses"));
            assert!(!responses.is_empty(), "{method} {path}");
            for (code, r) in responses {
                assert!(code.parse::<u16>().is_ok(), "{method} {path}: {code}");
                assert!(r["description"].is_string(), "{method} {path} {code}");
            }
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(|c| c == '{' || c == '}');
                let declared = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true);
                assert!(
                    declared,
                    "{method} {path}: path parameter {name} undeclared"
                );
            }
            if method == "post" {
                assert!(
                    op["requestBody"]["content"]["application/json"].is_object(),
                    "{method} {path}: no JSON body"
                );
            }
        }
    }
    let mut refs = Vec::new();
    collect_refs(doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("odd ref {r}"));
        assert!(schemas.contains_key(name), "dangling {r}");
    }
    for s in [
        "ErrorBody",
        "AcquireRequest",
        "LockGrant",
        "EnqueueRequest",
        "DequeueResponse",
        "CacheSetRequest",
        "HealthReport",
        "ClusterView",
    ] {
        assert!(schemas.contains_key(s), "schema {s} missing");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    out.push(v.as_str().unwrap().to_string());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn health_names_the_backend_that_is_down() {
    let log = Log::default();
    let healthy = fake(&log, Arc::new(|s: &Seen| {
        if s.uri == "/cluster" {
            (StatusCode::OK, json!({"id": 1, "leader_id": 1, "leader_addr": s.node, "term": 2, "members": {"1": s.node}, "peers": [{"addr": s.node, "alive": true}]}))
        } else {
            (StatusCode::OK, json!({"status": "ok"}))
        }
    })).await;
    let dead = dead_addr().await;
    let (gw, tx) = gateway_with(
        Settings::default(),
        vec![healthy.clone()],
        vec![healthy.clone()],
        vec![dead.clone()],
    );
    let (status, body, _) = send(&gw, get("/health")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["down"], json!(["cache"]));
    assert_eq!(body["lock"]["ok"], true);
    assert_eq!(body["cache"]["nodes"][0]["addr"], dead);
    assert_eq!(body["cache"]["nodes"][0]["healthy"], false);

    tx.set(Service::Cache, vec![healthy.clone()]);
    let (status, body, _) = send(&gw, get("/health")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");

    let (status, body, _) = send(&gw, get("/cluster")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["lock"]["leader_addr"], healthy);
    assert_eq!(body["lock"]["term"], 2);
    assert_eq!(body["queue"]["members"], json!([healthy]));
    assert_eq!(body["cache"]["peers"][0]["alive"], true);

    // A lock cluster without a leader is down even if its nodes answer.
    let no_leader = fake(
        &log,
        Arc::new(|s: &Seen| {
            if s.uri == "/cluster" {
                (
                    StatusCode::OK,
                    json!({"id": 1, "leader_id": null, "leader_addr": null, "term": 3}),
                )
            } else {
                (StatusCode::OK, json!({"status": "ok"}))
            }
        }),
    )
    .await;
    tx.set(Service::Lock, vec![no_leader]);
    let (status, body, _) = send(&gw, get("/health")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["down"], json!(["lock"]));
    assert!(body["lock"]["reason"].as_str().unwrap().contains("leader"));
}

#[tokio::test]
async fn metrics_and_stats_count_per_route_and_backend() {
    let log = Log::default();
    let node = fake(&log, ok_echo()).await;
    let (gw, _tx) = gateway_with(Settings::default(), vec![], vec![node.clone()], vec![]);
    for _ in 0..3 {
        send(
            &gw,
            post("/api/queue/enqueue", r#"{"queue":"q","payload":1}"#),
        )
        .await;
    }
    send(&gw, post("/api/queue/enqueue", "{bad")).await;
    let (_, stats, _) = send(&gw, get("/stats")).await;
    assert_eq!(stats["queue"]["requests"], 3);
    assert_eq!(stats["rejected"], 1);
    let resp = router(gw.clone()).oneshot(get("/metrics")).await.unwrap();
    let text = String::from_utf8(
        to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    let line = format!("gateway_backend_requests_total{{service=\"queue\",route=\"/api/queue/enqueue\",backend=\"{node}\",outcome=\"200\"}} 3");
    assert!(text.contains(&line), "{text}");
    assert!(
        text.contains("gateway_backend_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains(
            "http_requests_total{method=\"POST\",route=\"/api/queue/enqueue\",status=\"200\"} 3"
        ),
        "{text}"
    );
    assert!(
        text.contains("gateway_rejected_total{reason=\"invalid_input\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn dns_names_become_ring_members() {
    use common::discovery::Members;
    let log = Log::default();
    let node = fake(&log, ok_echo()).await;
    let port = node.rsplit(':').next().unwrap();
    // A name, as compose gives for a scaled service; resolved to addresses.
    let queue = Members::spawn(
        vec![format!("localhost:{port}")],
        Duration::from_millis(100),
    )
    .await;
    let none = Members::fixed(Vec::<String>::new());
    let gw = Gateway::new(
        Settings::default(),
        Backends::from_members(&none, &queue, &none),
    )
    .unwrap();
    assert!(
        gw.members(Service::Queue).contains(&node),
        "{:?}",
        gw.members(Service::Queue)
    );
    let (status, body, _) = send(
        &gw,
        post("/api/queue/enqueue", r#"{"queue":"q","payload":1}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["node"], node);
}

/// `--max-in-flight`: past the limit of calls outstanding to one node, the
/// gateway answers 503 `overloaded` with `Retry-After` at once (nothing
/// reaches the node), and the place comes back when a call finishes.
/// A backend's own `Retry-After` (its 429 `queue_full`, say) is passed on.
#[tokio::test]
async fn calls_past_the_in_flight_limit_are_shed_and_retry_after_passes_through() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let reached = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = {
        let (gate, reached) = (gate.clone(), reached.clone());
        Router::new().fallback(move || {
            let (gate, reached) = (gate.clone(), reached.clone());
            async move {
                reached.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                gate.acquire().await.unwrap().forget();
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "7")],
                    axum::Json(json!({"error": {"code": "queue_full", "message": "full"}})),
                )
            }
        })
    };
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let settings = Settings {
        max_in_flight: 2,
        ..Settings::default()
    };
    let (gw, _tx) = gateway_with(settings, vec![], vec![addr.clone()], vec![]);
    let enqueue = || post("/api/queue/enqueue", r#"{"queue":"q","payload":1}"#);
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (gw, req) = (gw.clone(), enqueue());
            tokio::spawn(async move { send(&gw, req).await })
        })
        .collect();
    while reached.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body, headers) = send(&gw, enqueue()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(code(&body), "overloaded");
    assert_eq!(body["error"]["limit"], 2, "{body}");
    assert_eq!(body["error"]["backend"], addr.as_str(), "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 2);
    let (_, stats, _) = send(&gw, get("/stats")).await;
    assert_eq!(stats["in_flight"][&addr], 2, "{stats}");
    assert_eq!(stats["shed"], 1, "{stats}");

    // The two held calls finish with the backend's answer and its header...
    gate.add_permits(2);
    for call in held {
        let (status, body, headers) = call.await.unwrap();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(code(&body), "queue_full");
        assert_eq!(headers["retry-after"], "7");
    }
    // ...and their places are free again.
    gate.add_permits(1);
    let (status, body, _) = send(&gw, enqueue()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 3);
    let (_, stats, _) = send(&gw, get("/stats")).await;
    assert_eq!(stats["in_flight"], json!({}), "{stats}");
}

#[tokio::test]
async fn lists_fan_out_merge_and_name_the_nodes_that_did_not_answer() {
    // Two queue nodes each list what they own; a third is down. The lock
    // list goes to one lock node, the query passed through.
    let log = Log::default();
    let page = |names: &[&str], more: bool| -> Script {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        Arc::new(move |s: &Seen| {
            if s.uri.starts_with("/api/events") {
                let ev = json!({"at_ms": names.len() as u64 * 10, "service": "queue",
                    "node": s.node, "kind": "redrive", "summary": "x",
                    "queue": {"queue": "q", "count": 1}});
                return (StatusCode::OK, json!({"events": [ev]}));
            }
            let queues: Vec<Value> = names
                .iter()
                .map(|n| json!({"queue": n, "ready": 1, "node": s.node}))
                .collect();
            let next = more.then(|| names.last().cloned()).flatten();
            (StatusCode::OK, json!({"queues": queues, "next": next}))
        })
    };
    let a = fake(&log, page(&["q1", "q3"], false)).await;
    let b = fake(&log, page(&["q2"], false)).await;
    let dead = dead_addr().await;
    let lock = fake(&log, ok_echo()).await;
    let (gw, _tx) = gateway_with(
        Settings::default(),
        vec![lock.clone()],
        vec![a.clone(), b.clone(), dead.clone()],
        vec![],
    );
    let (status, body, _) = send(&gw, get("/api/queues?prefix=q&limit=10")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> = body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["q1", "q2", "q3"], "{body}");
    assert_eq!(body["unavailable"], json!([dead]), "{body}");
    assert!(body.get("next").is_none(), "{body}");
    // Every live node was asked with the client's query.
    let asked: Vec<Seen> = log
        .all()
        .into_iter()
        .filter(|s| s.uri.starts_with("/api/queues"))
        .collect();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert!(asked
        .iter()
        .all(|s| s.uri == "/api/queues?prefix=q&limit=10"));
    // A page cut short says where to go on.
    let (_, body, _) = send(&gw, get("/api/queues?limit=2")).await;
    assert_eq!(body["queues"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(body["next"], "q2", "{body}");

    // Events: every lock and queue node asked, merged newest first.
    let (status, body, _) = send(&gw, get("/api/events?limit=5")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let at: Vec<u64> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["at_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(at, vec![20, 10], "{body}");
    // The lock node answered (with no events); the dead one is named.
    assert_eq!(body["unavailable"], json!([dead]), "{body}");
    assert!(log
        .all()
        .iter()
        .any(|s| s.node == lock && s.uri == "/api/events?limit=5"));

    // The lock list goes to a lock node, query unchanged.
    let (status, _, _) = send(&gw, get("/api/locks?prefix=r&after=r1&limit=2")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(log
        .all()
        .iter()
        .any(|s| s.node == lock && s.uri == "/api/locks?prefix=r&after=r1&limit=2"));
}
