//! The gateway's client to its backends: HTTP/1.1 on pooled keep-alive TCP
//! connections, one exchange at a time on each. The request head is written
//! as bytes and the answer is parsed with `httparse` in place.
//!
//! Why not hyper's pooled client: a proxy's call is one small request and
//! one small answer, and the pooled client spends more than the exchange
//! itself around it (a connection task per connection that every request
//! is handed to and every answer handed back from, the pool's checkout
//! bookkeeping, building a request and a response object). Measured in
//! docs/architecture.md ("the gateway's client").
//!
//! Invariants:
//! - a connection goes back to the pool only after a whole answer was read
//!   from it (its length known: `Content-Length`, or chunks to the last)
//!   and the backend did not ask to close it; a call cut short (timeout,
//!   error, the caller gone) drops its connection, whose state is unknown;
//! - a pooled connection is checked before reuse: one the backend closed
//!   while idle (EOF waiting in its buffer) is dropped, not written to;
//! - a request is sent twice only when a reused connection broke before a
//!   single byte of answer came back (the backend closed it as we wrote:
//!   the request was not taken), and then on a fresh connection.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderValue, Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Idle connections kept per backend.
const MAX_IDLE_PER_BACKEND: usize = 256;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Largest answer head accepted from a backend.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Headers parsed per answer; ours send a handful.
const MAX_HEADERS: usize = 32;

/// A backend's answer, whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub retry_after: Option<HeaderValue>,
    pub body: Bytes,
}

struct Conn {
    stream: TcpStream,
    idle_since: Instant,
}

/// Keep-alive connections per backend address.
#[derive(Default)]
pub struct Upstream {
    idle: Mutex<HashMap<String, Vec<Conn>>>,
}

/// Why an exchange failed: the connection broke before any answer byte
/// (`before_answer`: on a reused connection, it may be sent once more on a
/// new one) or later, or the answer was not HTTP/1.1 we understand.
struct Failed {
    before_answer: bool,
    reason: String,
}

impl Upstream {
    /// `method path_and_query` on `backend` with an optional JSON body.
    pub async fn exchange(
        &self,
        backend: &str,
        method: &Method,
        path_and_query: &str,
        body: Option<&[u8]>,
    ) -> Result<Answer, String> {
        let request = request_bytes(backend, method, path_and_query, body);
        if let Some(mut conn) = self.checkout(backend) {
            match exchange_on(&mut conn.stream, &request).await {
                Ok((answer, keep)) => {
                    if keep {
                        self.checkin(backend, conn);
                    }
                    return Ok(answer);
                }
                // Closed under us as we wrote: nothing was taken; once more
                // on a new connection.
                Err(f) if f.before_answer => {}
                Err(f) => return Err(f.reason),
            }
        }
        let mut stream = connect(backend).await?;
        let (answer, keep) = exchange_on(&mut stream, &request)
            .await
            .map_err(|f| f.reason)?;
        if keep {
            self.checkin(
                backend,
                Conn {
                    stream,
                    idle_since: Instant::now(),
                },
            );
        }
        Ok(answer)
    }

    fn checkout(&self, backend: &str) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(backend)?;
        while let Some(conn) = list.pop() {
            if conn.idle_since.elapsed() < IDLE_TIMEOUT && still_open(&conn.stream) {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, backend: &str, mut conn: Conn) {
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(backend.to_string()).or_default();
        if list.len() < MAX_IDLE_PER_BACKEND {
            list.push(conn);
        }
    }
}

/// An idle connection has nothing to read; EOF (the backend closed it) or
/// stray bytes mean it cannot carry another exchange.
fn still_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

async fn connect(backend: &str) -> Result<TcpStream, String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend))
        .await
        .map_err(|_| format!("connect to {backend}: no answer within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("connect to {backend}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("connect to {backend}: {e}"))?;
    Ok(stream)
}

fn request_bytes(backend: &str, method: &Method, pq: &str, body: Option<&[u8]>) -> Vec<u8> {
    let body = body.unwrap_or_default();
    let mut out = Vec::with_capacity(128 + pq.len() + body.len());
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(pq.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(backend.as_bytes());
    if !body.is_empty() || *method == Method::POST {
        out.extend_from_slice(b"\r\ncontent-type: application/json");
    }
    out.extend_from_slice(b"\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// Write `request`, read one whole answer. Also whether the connection can
/// carry another exchange.
async fn exchange_on(stream: &mut TcpStream, request: &[u8]) -> Result<(Answer, bool), Failed> {
    let broke = |before_answer: bool| {
        move |e: std::io::Error| Failed {
            before_answer,
            reason: e.to_string(),
        }
    };
    stream.write_all(request).await.map_err(broke(true))?;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        // The head, skipping informational (1xx) answers.
        let head = loop {
            if let Some(head) = parse_head(&buf)? {
                break head;
            }
            if buf.len() > MAX_HEAD_BYTES {
                return Err(invalid("answer head too large"));
            }
            read_more(stream, &mut buf).await.map_err(|e| Failed {
                before_answer: buf.is_empty(),
                reason: e.to_string(),
            })?;
        };
        if head.status.is_informational() {
            buf.drain(..head.len);
            continue;
        }
        buf.drain(..head.len);
        let (body, keep) = match head.framing {
            Framing::Length(n) => {
                while buf.len() < n {
                    read_more(stream, &mut buf).await.map_err(broke(false))?;
                }
                let keep = buf.len() == n;
                buf.truncate(n);
                (Bytes::from(buf), keep)
            }
            Framing::Chunked => {
                let body = read_chunked(stream, &mut buf).await?;
                (Bytes::from(body), buf.is_empty())
            }
            Framing::UntilClose => {
                loop {
                    match stream.read_buf(&mut buf).await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => return Err(broke(false)(e)),
                    }
                }
                (Bytes::from(buf), false)
            }
        };
        let answer = Answer {
            status: head.status,
            content_type: head.content_type,
            retry_after: head.retry_after,
            body,
        };
        return Ok((answer, keep && !head.close));
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.reserve(4096);
    match stream.read_buf(buf).await? {
        0 => Err(ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

struct Head {
    len: usize,
    status: StatusCode,
    content_type: Option<HeaderValue>,
    retry_after: Option<HeaderValue>,
    framing: Framing,
    close: bool,
}

fn invalid(what: &str) -> Failed {
    Failed {
        before_answer: false,
        reason: format!("invalid answer from backend: {what}"),
    }
}

/// The answer head at the start of `buf`, once it is all there.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Failed> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(&e.to_string())),
    };
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| invalid("no status"))?;
    let mut head = Head {
        len,
        status,
        content_type: None,
        retry_after: None,
        framing: Framing::UntilClose,
        close: resp.version == Some(0),
    };
    for h in resp.headers.iter() {
        let value = || HeaderValue::from_bytes(h.value).ok();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| invalid("bad content-length"))?;
            head.framing = Framing::Length(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if h.value.eq_ignore_ascii_case(b"chunked") {
                head.framing = Framing::Chunked;
            } else {
                return Err(invalid("unsupported transfer-encoding"));
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            head.close = h.value.eq_ignore_ascii_case(b"close");
        } else if h.name.eq_ignore_ascii_case("content-type") {
            head.content_type = value();
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            head.retry_after = value();
        }
    }
    // No body, whatever the headers say (RFC 9110 6.4.1).
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        head.framing = Framing::Length(0);
    }
    Ok(Some(head))
}

/// A chunked body from `buf` and the stream; leaves in `buf` what follows it.
async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Vec<u8>, Failed> {
    let mut body = Vec::new();
    loop {
        let (size, line) = loop {
            if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
                let line = std::str::from_utf8(&buf[..end]).map_err(|_| invalid("chunk size"))?;
                let digits = line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(digits, 16).map_err(|_| invalid("chunk size"))?;
                break (size, end + 2);
            }
            if buf.len() > MAX_HEAD_BYTES {
                return Err(invalid("chunk size line too long"));
            }
            read_more(stream, buf).await.map_err(|e| Failed {
                before_answer: false,
                reason: e.to_string(),
            })?;
        };
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            loop {
                if let Some(end) = buf[line..].windows(4).position(|w| w == b"\r\n\r\n") {
                    buf.drain(..line + end + 4);
                    return Ok(body);
                }
                if buf[line..].starts_with(b"\r\n") {
                    buf.drain(..line + 2);
                    return Ok(body);
                }
                read_more(stream, buf).await.map_err(|e| Failed {
                    before_answer: false,
                    reason: e.to_string(),
                })?;
            }
        }
        while buf.len() < line + size + 2 {
            read_more(stream, buf).await.map_err(|e| Failed {
                before_answer: false,
                reason: e.to_string(),
            })?;
        }
        body.extend_from_slice(&buf[line..line + size]);
        buf.drain(..line + size + 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A backend that answers each connection's requests with `answers` in
    /// turn (raw bytes), then closes it; it counts the requests it read.
    async fn backend(answers: Vec<&'static [u8]>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let (answers, counter) = (answers.clone(), counter.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for answer in answers {
                        // One whole request (these have no body).
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                                return;
                            }
                        }
                        buf.clear();
                        counter.fetch_add(1, Ordering::SeqCst);
                        s.write_all(answer).await.unwrap();
                    }
                });
            }
        });
        (addr, seen)
    }

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const OK: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}";

    #[tokio::test]
    async fn answers_by_length_chunks_and_close_and_after_a_continue() {
        let chunked: &[u8] =
            b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 3\r\ntransfer-encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n";
        let continued: &[u8] =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}";
        let (addr, seen) = backend(vec![OK, chunked, continued]).await;
        let up = Upstream::default();
        let a = up.exchange(&addr, &Method::GET, "/x", None).await.unwrap();
        assert_eq!((a.status.as_u16(), &a.body[..]), (200, &b"{\"a\":1}"[..]));
        assert_eq!(a.content_type.unwrap(), "application/json");
        let b = up
            .exchange(&addr, &Method::POST, "/y", Some(b"{}"))
            .await
            .unwrap();
        assert_eq!((b.status.as_u16(), &b.body[..]), (429, &b"{\"a\":1}"[..]));
        assert_eq!(b.retry_after.unwrap(), "3");
        let c = up.exchange(&addr, &Method::GET, "/z", None).await.unwrap();
        assert_eq!((c.status.as_u16(), &c.body[..]), (201, &b"{}"[..]));
        // All three on the one kept connection.
        assert_eq!(seen.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_while_idle_is_not_reused() {
        // Each connection carries one answer, then the backend closes it.
        let (addr, seen) = backend(vec![OK]).await;
        let up = Upstream::default();
        for _ in 0..3 {
            let a = up.exchange(&addr, &Method::GET, "/x", None).await.unwrap();
            assert_eq!(a.status.as_u16(), 200);
            // Let the close reach us, as it does between real calls.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen.load(Ordering::SeqCst), 3, "each request sent once");
    }

    #[tokio::test]
    async fn a_backend_that_breaks_off_is_an_error_and_nothing_is_kept() {
        let cut: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{\"a\"";
        let (addr, _) = backend(vec![cut]).await;
        let up = Upstream::default();
        assert!(up.exchange(&addr, &Method::GET, "/x", None).await.is_err());
        let garbage: &[u8] = b"SPDY/9 what\r\n\r\n";
        let (addr, _) = backend(vec![garbage]).await;
        let err = up
            .exchange(&addr, &Method::GET, "/x", None)
            .await
            .unwrap_err();
        assert!(err.contains("invalid answer"), "{err}");
        assert!(up.idle.lock().unwrap().values().all(Vec::is_empty));
        // Nothing listening: refused, quickly.
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().to_string()
        };
        let err = up
            .exchange(&dead, &Method::GET, "/x", None)
            .await
            .unwrap_err();
        assert!(err.contains("connect to"), "{err}");
    }
}
