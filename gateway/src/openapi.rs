//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]`
//! attributes and the wire types of the `api` crate, so the document and
//! the code cannot drift apart. Served at `/openapi.json` and rendered by the
//! vendored Swagger UI at `/docs`.

use api::types::*;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "distributed-sync gateway",
        description = "One HTTP front door to the lock service (leases, fencing tokens), the \
                       at-least-once queue service and the MESI-coherent cache. Every error is \
                       `{\"error\":{\"code\",\"message\",…}}`. When the gateway runs with \
                       API_TOKENS, every route except /health, /openapi.json and /docs needs \
                       `Authorization: Bearer <token>`."
    ),
    paths(
        http::lock_acquire,
        http::lock_release,
        http::lock_renew,
        http::lock_get,
        http::lock_list,
        http::queue_enqueue,
        http::queue_dequeue,
        http::queue_ack,
        http::queue_nack,
        http::queue_extend,
        http::queue_redrive,
        http::queue_config,
        http::queue_get,
        http::queue_dead,
        http::queue_list,
        http::events,
        http::cache_set,
        http::cache_get,
        http::cache_delete,
        http::cache_line,
        http::cache_stats,
        http::health,
        http::cluster,
        http::stats,
        http::metrics,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, LockMode, AcquireRequest, LockGrant, ReleaseRequest,
        ReleaseResponse, RenewRequest, RenewResponse, LockHolder, LockWaiter, LockState, NewMessage,
        EnqueueRequest, EnqueueResponse, DequeueRequest, Message, DequeueResponse,
        AckRequest, AckResponse, NackRequest, NackResponse, ExtendRequest, ExtendResponse,
        QueueStats, DeadLetter, DeadLetters, RedriveRequest, RedriveResponse, QueueConfig,
        CacheSetRequest, CacheSetResponse, CacheVersion, CacheValue, CacheDeleteResponse,
        NodeStatus, ServiceHealth, HealthReport, LockNodeView, LockClusterView,
        QueueClusterView, CachePeer, CacheClusterView, ClusterView, ServiceStats,
        GatewayStats, MessageId, Consistency, LockList, QueueList, EventKind, WaitForEdge,
        DeadlockEvent, LeaderEvent, QueueEvent, Event, EventList,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "lock", description = "Distributed locks: leases, fencing tokens, FIFO waiters, deadlock detection"),
        (name = "queue", description = "At-least-once work queues placed by consistent hashing"),
        (name = "cache", description = "MESI-coherent cache; pick the node with X-Cache-Node, ?node= or X-Client-Id"),
        (name = "gateway", description = "The gateway's own health, cluster view, counters and metrics, and the services' recent events"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme the routes refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as generated from the code, node choices unrestricted.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as served: [`document`], with the cache routes' `node`
/// parameter and `X-Cache-Node` header stated as the cache members the
/// gateway has when it starts (any other node is 400 `unknown_node`).
pub fn document_for(cache_members: &[String]) -> utoipa::openapi::OpenApi {
    let mut doc = document();
    if cache_members.is_empty() {
        return doc;
    }
    let choice: utoipa::openapi::RefOr<utoipa::openapi::Schema> =
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(cache_members.iter().cloned()))
            .into();
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/api/cache/") {
            continue;
        }
        for op in [&mut item.get, &mut item.post, &mut item.delete]
            .into_iter()
            .flatten()
        {
            for param in op.parameters.iter_mut().flatten() {
                if param.name == "node" || param.name == "X-Cache-Node" {
                    param.schema = Some(choice.clone());
                }
            }
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_node_choices_are_the_members() {
        let members = vec!["127.0.0.1:7201".to_string(), "127.0.0.1:7202".into()];
        let doc = serde_json::to_value(document_for(&members)).unwrap();
        for path in ["/api/cache/get", "/api/cache/line", "/api/cache/stats"] {
            let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
            for name in ["node", "X-Cache-Node"] {
                let p = params.iter().find(|p| p["name"] == name).unwrap();
                assert_eq!(
                    p["schema"]["enum"],
                    serde_json::json!(members),
                    "{path} {name}"
                );
            }
        }
        // Without members the choice stays open.
        let doc = serde_json::to_value(document_for(&[])).unwrap();
        let params = doc["paths"]["/api/cache/get"]["get"]["parameters"]
            .as_array()
            .unwrap();
        assert!(params.iter().all(|p| p["schema"].get("enum").is_none()));
    }

    #[test]
    fn every_forwarded_post_is_documented_with_its_summary_body_and_answer() {
        let doc = serde_json::to_value(document()).unwrap();
        for (path, status) in [
            ("/api/lock/acquire", "200"),
            ("/api/lock/release", "200"),
            ("/api/lock/renew", "200"),
            ("/api/queue/enqueue", "201"),
            ("/api/queue/dequeue", "200"),
            ("/api/queue/ack", "200"),
            ("/api/queue/nack", "200"),
            ("/api/queue/extend", "200"),
            ("/api/queue/redrive", "200"),
            ("/api/queue/config", "200"),
        ] {
            let op = &doc["paths"][path]["post"];
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{path}: {op}"
            );
            assert!(
                op["requestBody"]["content"]["application/json"]["schema"].is_object(),
                "{path}"
            );
            assert!(
                op["responses"][status]["content"]["application/json"]["schema"].is_object(),
                "{path}"
            );
            assert!(op["security"].is_array(), "{path}");
        }
    }

    #[test]
    fn every_cache_route_documents_how_to_pick_the_node_and_its_key() {
        let doc = serde_json::to_value(document()).unwrap();
        for (path, method, keyed) in [
            ("/api/cache/set", "post", false),
            ("/api/cache/get", "get", true),
            ("/api/cache/delete", "delete", true),
            ("/api/cache/line", "get", true),
            ("/api/cache/stats", "get", false),
        ] {
            let op = &doc["paths"][path][method];
            let params = op["parameters"].as_array().unwrap();
            let find = |name: &str| params.iter().find(|p| p["name"] == name);
            assert_eq!(find("node").unwrap()["in"], "query", "{path}");
            assert_eq!(find("X-Cache-Node").unwrap()["in"], "header", "{path}");
            assert_eq!(find("X-Client-Id").unwrap()["in"], "header", "{path}");
            match find("key") {
                Some(k) if keyed => {
                    assert_eq!(
                        (&k["in"], &k["required"]),
                        (&serde_json::json!("query"), &serde_json::json!(true))
                    );
                    assert_eq!(k["schema"]["maxLength"], 512, "{path}");
                }
                None if !keyed => {}
                other => panic!("{path}: key parameter {other:?}"),
            }
            assert_eq!(op["requestBody"].is_object(), method == "post", "{path}");
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{path}"
            );
        }
    }

    #[test]
    fn every_api_route_documents_its_errors_with_the_error_body() {
        let doc = serde_json::to_value(document()).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            if !path.starts_with("/api/") {
                continue;
            }
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                for status in ["400", "401", "503", "504"] {
                    let r = &responses[status];
                    assert_eq!(
                        r["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}
