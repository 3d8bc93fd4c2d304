//! The public routes the gateway forwards, served by one function instead
//! of axum's router: [`Route::find`] matches the path by hand, [`App`]
//! applies the token check, the deadline and the request metrics in line
//! and runs the route's handler in [`crate::http`]. Every other request
//! (`/health`, `/cluster`, `/stats`, `/metrics`, the docs, unknown paths)
//! goes on to the axum router `crate::router` builds.
//!
//! Why not the router for these too: a router layer is a boxed future per
//! request and an extracted `HeaderMap` is a copy of every header, and on a
//! proxy's hot path those were what separated the gateway's hop from
//! nginx's (docs/benchmarks.md, "The gateway hop"). A proxy of hyper's
//! server and the same backend client without them matched nginx.
//!
//! Invariants, the same as the router's:
//! - a path that names a route, with a method the route does not answer, is
//!   a JSON 405 with `Allow`; a path that names none goes to the router (404);
//! - with tokens configured, no backend is called without a valid one (401);
//! - a body over the limit is refused (413) before anything is forwarded;
//! - no request outlives the request timeout (504 `timeout`);
//! - every request is counted and timed under its route template.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::ApiError;

use crate::error::Error;
use crate::state::Gateway;
use crate::{http, protect};

/// A public route the gateway forwards to a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    LockAcquire,
    LockRelease,
    LockRenew,
    LockGet,
    LockList,
    QueueEnqueue,
    QueueDequeue,
    QueueAck,
    QueueNack,
    QueueExtend,
    QueueRedrive,
    QueueConfig,
    QueueGet,
    QueueDead,
    QueueList,
    Events,
    CacheSet,
    CacheGet,
    CacheDelete,
    CacheLine,
    CacheStats,
}

impl Route {
    /// Every route, for tests and documents that list them.
    pub const ALL: [Route; 21] = [
        Route::LockAcquire,
        Route::LockRelease,
        Route::LockRenew,
        Route::LockGet,
        Route::LockList,
        Route::QueueEnqueue,
        Route::QueueDequeue,
        Route::QueueAck,
        Route::QueueNack,
        Route::QueueExtend,
        Route::QueueRedrive,
        Route::QueueConfig,
        Route::QueueGet,
        Route::QueueDead,
        Route::QueueList,
        Route::Events,
        Route::CacheSet,
        Route::CacheGet,
        Route::CacheDelete,
        Route::CacheLine,
        Route::CacheStats,
    ];

    /// The route's template: its path in the OpenAPI document and its
    /// `route` label in the metrics.
    pub fn template(self) -> &'static str {
        match self {
            Route::LockAcquire => "/api/lock/acquire",
            Route::LockRelease => "/api/lock/release",
            Route::LockRenew => "/api/lock/renew",
            Route::LockGet => "/api/lock/{resource}",
            Route::LockList => "/api/locks",
            Route::QueueList => "/api/queues",
            Route::Events => "/api/events",
            Route::QueueEnqueue => "/api/queue/enqueue",
            Route::QueueDequeue => "/api/queue/dequeue",
            Route::QueueAck => "/api/queue/ack",
            Route::QueueNack => "/api/queue/nack",
            Route::QueueExtend => "/api/queue/extend",
            Route::QueueRedrive => "/api/queue/redrive",
            Route::QueueConfig => "/api/queue/config",
            Route::QueueGet => "/api/queue/{queue}",
            Route::QueueDead => "/api/queue/{queue}/dead",
            Route::CacheSet => "/api/cache/set",
            Route::CacheGet => "/api/cache/get",
            Route::CacheDelete => "/api/cache/delete",
            Route::CacheLine => "/api/cache/line",
            Route::CacheStats => "/api/cache/stats",
        }
    }

    /// The one method the route answers (a `GET` route answers `HEAD` too).
    pub fn method(self) -> Method {
        match self {
            Route::LockGet
            | Route::LockList
            | Route::QueueList
            | Route::Events
            | Route::QueueGet
            | Route::QueueDead
            | Route::CacheGet
            | Route::CacheLine
            | Route::CacheStats => Method::GET,
            Route::CacheDelete => Method::DELETE,
            _ => Method::POST,
        }
    }

    /// The route `path` names and its path parameter, still
    /// percent-encoded; `None` when it names none. A name the services
    /// use (`acquire`, `enqueue`, …) is that route, never a parameter;
    /// a parameter is one non-empty segment.
    pub fn find(path: &str) -> Option<(Route, Option<&str>)> {
        use Route::*;
        let path = path.strip_prefix("/api/")?;
        match path {
            "locks" => return Some((LockList, None)),
            "queues" => return Some((QueueList, None)),
            "events" => return Some((Events, None)),
            _ => {}
        }
        let (service, rest) = path.split_once('/')?;
        let one_segment = |s: &str| !s.is_empty() && !s.contains('/');
        Some(match (service, rest) {
            ("lock", "acquire") => (LockAcquire, None),
            ("lock", "release") => (LockRelease, None),
            ("lock", "renew") => (LockRenew, None),
            ("lock", r) if one_segment(r) => (LockGet, Some(r)),
            ("queue", "enqueue") => (QueueEnqueue, None),
            ("queue", "dequeue") => (QueueDequeue, None),
            ("queue", "ack") => (QueueAck, None),
            ("queue", "nack") => (QueueNack, None),
            ("queue", "extend") => (QueueExtend, None),
            ("queue", "redrive") => (QueueRedrive, None),
            ("queue", "config") => (QueueConfig, None),
            ("queue", r) if one_segment(r) => (QueueGet, Some(r)),
            ("queue", r) => match r.split_once('/') {
                Some((q, "dead")) if one_segment(q) => (QueueDead, Some(q)),
                _ => return None,
            },
            ("cache", "set") => (CacheSet, None),
            ("cache", "get") => (CacheGet, None),
            ("cache", "delete") => (CacheDelete, None),
            ("cache", "line") => (CacheLine, None),
            ("cache", "stats") => (CacheStats, None),
            _ => return None,
        })
    }

    fn answers(self, method: &Method) -> bool {
        let own = self.method();
        *method == own || (own == Method::GET && *method == Method::HEAD)
    }
}

/// The gateway's whole HTTP service: the proxied routes here, the rest to
/// `router`. Cheap to clone (two handles).
#[derive(Clone)]
pub struct App {
    gw: Gateway,
    router: Router,
}

impl App {
    pub fn new(gw: Gateway, router: Router) -> Self {
        Self { gw, router }
    }
}

impl tower::Service<Request> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready, and so is the proxy.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match Route::find(req.uri().path()) {
            Some((route, param)) => {
                let param = param.map(str::to_owned);
                Box::pin(serve(self.gw.clone(), route, param, req))
            }
            None => {
                let call = tower::Service::call(&mut self.router, req);
                Box::pin(call)
            }
        }
    }
}

/// Serve one request to a proxied route: method, token, deadline, metrics,
/// then the handler.
async fn serve(
    gw: Gateway,
    route: Route,
    param: Option<String>,
    req: Request,
) -> Result<Response, Infallible> {
    let start = Instant::now();
    let method = req.method().clone();
    let resp = if !route.answers(&method) {
        method_not_allowed(route, &method, req.uri().path())
    } else if !protect::admits(&gw.settings().api_tokens, req.headers()) {
        gw.count_rejected("unauthorized");
        Error::Unauthorized.into_response()
    } else {
        let limit = gw.settings().request_timeout;
        match tokio::time::timeout(limit, handle(&gw, route, param, req)).await {
            Ok(Ok(reply)) => reply.into_response(),
            Ok(Err(e)) => e.into_response(),
            Err(_) => {
                gw.count_rejected("timeout");
                Error::RequestTimeout {
                    timeout_ms: limit.as_millis() as u64,
                }
                .into_response()
            }
        }
    };
    gw.metrics().observe(
        method.as_str(),
        route.template(),
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    Ok(resp)
}

/// Run `route`'s handler.
async fn handle(
    gw: &Gateway,
    route: Route,
    param: Option<String>,
    req: Request,
) -> Result<crate::state::Reply, Error> {
    let name = || decode_param(param.as_deref().unwrap_or_default());
    match route {
        Route::LockAcquire => http::lock_acquire(gw, req).await,
        Route::LockRelease => http::lock_release(gw, req).await,
        Route::LockRenew => http::lock_renew(gw, req).await,
        Route::LockGet => http::lock_get(gw, req).await,
        Route::LockList => http::lock_list(gw, req).await,
        Route::QueueList => http::queue_list(gw, req).await,
        Route::Events => http::events(gw, req).await,
        Route::QueueEnqueue => http::queue_enqueue(gw, req).await,
        Route::QueueDequeue => http::queue_dequeue(gw, req).await,
        Route::QueueAck => http::queue_ack(gw, req).await,
        Route::QueueNack => http::queue_nack(gw, req).await,
        Route::QueueExtend => http::queue_extend(gw, req).await,
        Route::QueueRedrive => http::queue_redrive(gw, req).await,
        Route::QueueConfig => http::queue_config(gw, req).await,
        Route::QueueGet => http::queue_get(gw, req, name()?).await,
        Route::QueueDead => http::queue_dead(gw, req, name()?).await,
        Route::CacheSet => http::cache_set(gw, req).await,
        Route::CacheGet => http::cache_get(gw, req).await,
        Route::CacheDelete => http::cache_delete(gw, req).await,
        Route::CacheLine => http::cache_line(gw, req).await,
        Route::CacheStats => http::cache_stats(gw, req).await,
    }
}

/// A path parameter as the services read it: percent-decoded UTF-8.
fn decode_param(raw: &str) -> Result<String, Error> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::InvalidInput(format!("path segment `{raw}` is not UTF-8 once decoded")))
}

fn method_not_allowed(route: Route, method: &Method, path: &str) -> Response {
    let mut resp = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {path}"),
    )
    .into_response();
    let allow = HeaderValue::from_static(match route.method() {
        Method::GET => "GET,HEAD",
        Method::DELETE => "DELETE",
        _ => "POST",
    });
    resp.headers_mut().insert(header::ALLOW, allow);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_finds_itself() {
        for route in Route::ALL {
            let path = route
                .template()
                .replace("{resource}", "r%2F1")
                .replace("{queue}", "q");
            assert_eq!(Route::find(&path).map(|(r, _)| r), Some(route), "{path}");
        }
    }

    #[test]
    fn parameters_are_one_segment_and_names_win() {
        assert_eq!(
            Route::find("/api/lock/orders"),
            Some((Route::LockGet, Some("orders")))
        );
        assert_eq!(
            Route::find("/api/lock/acquire"),
            Some((Route::LockAcquire, None))
        );
        assert_eq!(
            Route::find("/api/queue/emails/dead"),
            Some((Route::QueueDead, Some("emails")))
        );
        assert_eq!(Route::find("/api/locks"), Some((Route::LockList, None)));
        assert_eq!(Route::find("/api/queues"), Some((Route::QueueList, None)));
        assert_eq!(Route::find("/api/events"), Some((Route::Events, None)));
        for unknown in [
            "/api/locks/",
            "/api/locks/x",
            "/api/queues/",
            "/api/event",
            "/api/lock",
            "/api/lock/",
            "/api/lock/a/b",
            "/api/queue/",
            "/api/queue/q/",
            "/api/queue//dead",
            "/api/queue/q/dead/x",
            "/api/queue/q/live",
            "/api/cache/other",
            "/api/cache/get/x",
            "/api/other/x",
            "/internal/raft/vote",
            "/health",
        ] {
            assert_eq!(Route::find(unknown), None, "{unknown}");
        }
    }

    /// The dispatcher and `/openapi.json` name the same routes and methods
    /// (the router tests check the other way: every documented route answers).
    #[test]
    fn the_document_has_every_route_with_its_method() {
        let doc = serde_json::to_value(crate::openapi::document_for(&[])).unwrap();
        for route in Route::ALL {
            let method = route.method().as_str().to_lowercase();
            assert!(
                doc["paths"][route.template()][&method].is_object(),
                "{route:?}: {method} {} undocumented",
                route.template()
            );
        }
    }

    #[test]
    fn methods_and_parameters() {
        assert!(Route::CacheGet.answers(&Method::HEAD));
        assert!(!Route::CacheGet.answers(&Method::POST));
        assert!(!Route::LockAcquire.answers(&Method::GET));
        assert!(Route::CacheDelete.answers(&Method::DELETE));
        assert_eq!(decode_param("a%20b").unwrap(), "a b");
        assert!(matches!(decode_param("%ff"), Err(Error::InvalidInput(_))));
    }
}
