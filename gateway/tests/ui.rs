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

/// A WebDriver session on a `chromedriver` this test started: the driver
/// runs in a process group of its own, and dropping the session ends the
/// browser (a DELETE of the session) and then that group, by its id.
mod webdriver {
    use std::os::unix::process::CommandExt;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use base64::Engine;
    use serde_json::{json, Value};

    /// The W3C key of an element reference.
    const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

    pub struct Browser {
        http: reqwest::Client,
        /// `http://127.0.0.1:port/session/id`.
        session: String,
        driver: Child,
    }

    impl Browser {
        /// Start `chromedriver` on `port` and a headless `chromium` session
        /// with its profile under `dir`.
        pub async fn start(
            driver: &Path,
            chromium: &Path,
            port: u16,
            dir: &Path,
        ) -> anyhow::Result<Browser> {
            let log = std::fs::File::create(dir.join("chromedriver.log"))?;
            let child = Command::new(driver)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .process_group(0)
                .spawn()?;
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?;
            let base = format!("http://127.0.0.1:{port}");
            let mut browser = Browser {
                http,
                session: String::new(),
                driver: child,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let ready = browser
                    .http
                    .get(format!("{base}/status"))
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success());
                if ready.is_some() {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "chromedriver did not answer on port {port} within 20 s (see {})",
                    dir.join("chromedriver.log").display()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let profile = dir.join("chromium-profile");
            let caps = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1280,1000",
                        "--no-first-run", "--disable-extensions",
                        "--disable-background-networking", "--disable-sync",
                        "--disable-component-update", "--disable-default-apps",
                        "--no-proxy-server",
                        format!("--user-data-dir={}", profile.display()),
                    ]
                }
            }}});
            let answer = browser
                .call("POST", &format!("{base}/session"), caps)
                .await?;
            let id = answer["sessionId"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("no session id in {answer}"))?;
            browser.session = format!("{base}/session/{id}");
            Ok(browser)
        }

        /// One WebDriver command; its `value`, or the driver's error.
        async fn call(&self, method: &str, url: &str, body: Value) -> anyhow::Result<Value> {
            let req = match method {
                "GET" => self.http.get(url),
                "DELETE" => self.http.delete(url),
                _ => self.http.post(url).json(&body),
            };
            let resp = req.send().await?;
            let status = resp.status();
            let v: Value = resp.json().await?;
            let value = v.get("value").cloned().unwrap_or(Value::Null);
            if !status.is_success() {
                anyhow::bail!(
                    "WebDriver {method} {url}: {status}: {} {}",
                    value["error"],
                    value["message"]
                );
            }
            // A new session answers {value: {sessionId, capabilities}}.
            Ok(value)
        }

        async fn cmd(&self, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
            self.call(method, &format!("{}{path}", self.session), body)
                .await
        }

        pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
            self.cmd("POST", "/url", json!({ "url": url }))
                .await
                .map(drop)
        }

        /// Switch the console to `page` (its hash route: same document).
        pub async fn show(&self, page: &str) -> anyhow::Result<()> {
            self.exec(&format!("location.hash = '#/{page}';"))
                .await
                .map(drop)
        }

        /// Run `script` (a function body) in the page; its return value.
        pub async fn exec(&self, script: &str) -> anyhow::Result<Value> {
            self.cmd(
                "POST",
                "/execute/sync",
                json!({"script": script, "args": []}),
            )
            .await
        }

        async fn find(&self, css: &str) -> anyhow::Result<String> {
            let v = self
                .cmd(
                    "POST",
                    "/element",
                    json!({"using": "css selector", "value": css}),
                )
                .await?;
            v[ELEMENT]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow::anyhow!("no element reference for {css}: {v}"))
        }

        /// Click the element `css` selects, finding it again if the page
        /// re-rendered it in between (the console redraws every 3 s).
        pub async fn click(&self, css: &str) -> anyhow::Result<()> {
            let mut last = None;
            for _ in 0..10 {
                match self.find(css).await {
                    Ok(el) => match self
                        .cmd("POST", &format!("/element/{el}/click"), json!({}))
                        .await
                    {
                        Ok(_) => return Ok(()),
                        Err(e) => last = Some(e),
                    },
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(last.unwrap().context(format!("click {css}")))
        }

        /// Type `text` into the (static) input `css` after clearing it.
        pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
            let el = self.find(css).await?;
            self.cmd("POST", &format!("/element/{el}/clear"), json!({}))
                .await?;
            self.cmd(
                "POST",
                &format!("/element/{el}/value"),
                json!({ "text": text }),
            )
            .await
            .map(drop)
        }

        /// Poll `script` until it returns `true`, for at most `within`;
        /// the error says what it last returned and what the page showed.
        pub async fn wait(&self, what: &str, script: &str, within: Duration) -> anyhow::Result<()> {
            let deadline = Instant::now() + within;
            loop {
                let v = self.exec(script).await?;
                if v == Value::Bool(true) {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    let text = self
                        .exec("return document.querySelector('main').innerText + '\\n' + document.getElementById('auth').innerText")
                        .await
                        .unwrap_or_default();
                    anyhow::bail!(
                        "waited {within:?} for {what}; last answer {v}; the page showed:\n{}",
                        text.as_str().unwrap_or_default()
                    );
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }

        /// A PNG of the viewport.
        pub async fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
            let v = self.cmd("GET", "/screenshot", Value::Null).await?;
            let b64 = v.as_str().ok_or_else(|| anyhow::anyhow!("no screenshot"))?;
            Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
        }
    }

    impl Drop for Browser {
        fn drop(&mut self) {
            // End the session (chromium quits) from a thread of its own:
            // drop cannot await on the test's runtime. Bounded by the
            // client's timeout.
            if !self.session.is_empty() {
                let url = self.session.clone();
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()?;
                    rt.block_on(async {
                        reqwest::Client::builder()
                            .timeout(Duration::from_secs(10))
                            .build()
                            .ok()?
                            .delete(url)
                            .send()
                            .await
                            .ok()
                    })
                })
                .join();
            }
            // Then the driver's process group (the driver and anything of
            // the browser still in it), by the group id this test made.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.driver.id())])
                .status();
            let _ = self.driver.wait();
        }
    }
}

/// `name` on PATH, or at `$var` when set.
fn program(var: &str, names: &[&str]) -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

const TOKEN: &str = "console-test-token";

/// JavaScript: the trimmed text of the first element `css` selects
/// (an empty string when there is none).
fn text_of(css: &str) -> String {
    format!("var e = document.querySelector({css:?}); return e ? e.textContent.trim() : '';")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    use chaos::system::{Kind, Options, System};
    use client::{
        AcquireRequest, CacheSetRequest, Client, DequeueRequest, NackRequest, QueueConfig,
    };
    use serde_json::{json, Value};
    use std::path::Path;
    use std::time::Duration;

    if std::env::var("DSYNC_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: the console's browser test (DSYNC_SKIP_BROWSER=1)");
        return;
    }
    let chromium = program("CHROMIUM", &["chromium", "chromium-browser"]);
    let driver = program("CHROMEDRIVER", &["chromedriver"]);
    let (Some(chromium), Some(driver)) = (chromium, driver) else {
        panic!(
            "the console's browser test needs `chromium` and `chromedriver` on PATH \
             (Debian: chromium, chromium-driver; `bash scripts/install-deps.sh` installs them). \
             Set DSYNC_SKIP_BROWSER=1 to skip it."
        );
    };
    let bins = chaos::system::workspace_bins();
    let dir = tempfile::tempdir().unwrap();
    let sys = System::start_with_env(
        Options {
            bins,
            dir: dir.path().to_path_buf(),
            redis: false,
            netns: false,
            disk_shim: false,
            lock_worker_threads: Some(1),
        },
        &[(Kind::Gateway, "API_TOKENS", TOKEN)],
    )
    .await
    .expect("the system starts");
    let gw = sys.gateway_url();
    let api = Client::builder(gw.clone()).token(TOKEN).build().unwrap();
    let port = common::port::reserve().unwrap();
    let b = webdriver::Browser::start(&driver, &chromium, port, dir.path())
        .await
        .expect("chromium starts under chromedriver");
    let secs = Duration::from_secs;

    // Without a token: the nodes still show (from the public /health) and
    // the page says a token is needed.
    b.goto(&format!("{gw}/ui")).await.unwrap();
    b.exec(
        "performance.setResourceTimingBufferSize(100000); window.__csp = []; \
         document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.blockedURI));",
    )
    .await
    .unwrap();
    b.wait(
        "the token-required state",
        "var a = document.getElementById('auth'); return !a.hidden && /Token required/.test(a.textContent);",
        secs(20),
    )
    .await
    .unwrap();

    // With the token: all ten nodes up, the leader and its term.
    b.type_into("#token", TOKEN).await.unwrap();
    b.click("#token-form button[type=submit]").await.unwrap();
    b.wait(
        "ten nodes up, a leader and a term on the overview",
        "var n = document.querySelectorAll('#nodes .node'); \
         var up = document.querySelectorAll('#nodes .node[data-up=true]'); \
         return n.length === 10 && up.length === 10 && document.getElementById('auth').hidden \
           && /127\\.0\\.0\\.1/.test(document.getElementById('leader').textContent) \
           && /^\\d+$/.test(document.getElementById('term').textContent);",
        secs(20),
    )
    .await
    .unwrap();
    for (svc, n) in [("gateway", 1), ("lock", 3), ("queue", 3), ("cache", 3)] {
        let count = b
            .exec(&format!(
                "return document.querySelectorAll('#nodes .node[data-service={svc}]').length;"
            ))
            .await
            .unwrap();
        assert_eq!(count, json!(n), "{svc} nodes on the overview");
    }
    assert_eq!(
        b.exec("return sessionStorage.getItem('dsync.token');")
            .await
            .unwrap(),
        json!(TOKEN)
    );

    // Locks: a lock acquired through the API, with its token, looked up by
    // name and (once the list route is there) in the list.
    let grant = api
        .acquire(&AcquireRequest {
            resource: "console/res".into(),
            owner: "console-owner".into(),
            ttl_ms: Some(120_000),
            ..Default::default()
        })
        .await
        .expect("acquire");
    b.show("locks").await.unwrap();
    b.type_into("#lock-resource", "console/res").await.unwrap();
    b.click("#lock-lookup button").await.unwrap();
    let token = grant.token.to_string();
    b.wait(
        "the lock's token in the lookup",
        &format!(
            "var t = document.querySelector('#lock-result tr[data-resource=\"console/res\"] .token'); \
             return !!t && t.textContent === '{token}' && /console-owner/.test(t.parentNode.textContent);"
        ),
        secs(15),
    )
    .await
    .unwrap();
    let list = b.exec(&text_of("#locks-list")).await.unwrap();
    if list.as_str().unwrap_or_default().contains("not available") {
        eprintln!("note: GET /api/locks is not served by this gateway; the list was not checked");
    } else {
        b.wait(
            "the lock's token in the list",
            &format!(
                "var t = document.querySelector('#locks-list tr[data-resource=\"console/res\"] .token'); \
                 return !!t && t.textContent === '{token}';"
            ),
            secs(15),
        )
        .await
        .unwrap();
    }

    // Queues: a message raises the depth of a queue looked up by name.
    b.show("queues").await.unwrap();
    b.type_into("#queue-name", "console-q").await.unwrap();
    b.click("#queue-lookup button").await.unwrap();
    let depth = |q: &str| {
        format!(
            "var d = document.querySelector('#queue-watched tr[data-queue=\"{q}\"] .depth'); return d ? d.textContent : null;"
        )
    };
    let is =
        |script: String, want: &str| format!("return (function(){{ {script} }})() === '{want}';");
    b.wait("depth 0 before", &is(depth("console-q"), "0"), secs(15))
        .await
        .unwrap();
    api.enqueue_one("console-q", json!({"hello": "console"}))
        .await
        .expect("enqueue");
    b.wait(
        "depth 1 after enqueue",
        &is(depth("console-q"), "1"),
        secs(15),
    )
    .await
    .unwrap();

    // A dead letter, redriven from the page after its confirmation.
    api.configure_queue(&QueueConfig {
        queue: "console-dlq".into(),
        max_attempts: Some(1),
    })
    .await
    .expect("configure");
    api.enqueue_one("console-dlq", json!({"job": 7}))
        .await
        .expect("enqueue");
    let got = api
        .dequeue(&DequeueRequest {
            queue: "console-dlq".into(),
            ..Default::default()
        })
        .await
        .expect("dequeue");
    assert_eq!(got.len(), 1);
    api.nack(&NackRequest {
        queue: "console-dlq".into(),
        receipt: got[0].receipt.clone(),
        ..Default::default()
    })
    .await
    .expect("nack");
    assert_eq!(
        api.queue_stats("console-dlq").await.unwrap().dead_lettered,
        1
    );
    b.type_into("#queue-name", "console-dlq").await.unwrap();
    b.click("#queue-lookup button").await.unwrap();
    let dead = |q: &str| {
        format!(
            "var d = document.querySelector('#queue-watched tr[data-queue=\"{q}\"] .dead'); return d ? d.textContent : null;"
        )
    };
    b.wait(
        "one dead letter shown",
        &is(dead("console-dlq"), "1"),
        secs(15),
    )
    .await
    .unwrap();
    b.click("#queue-watched tr[data-queue=\"console-dlq\"] button.peek")
        .await
        .unwrap();
    b.wait(
        "the dead letter's payload",
        "var t = document.getElementById('dead-table'); return !!t && /\"job\":7/.test(t.textContent);",
        secs(15),
    )
    .await
    .unwrap();
    b.click("#redrive-shown").await.unwrap();
    b.wait(
        "the confirmation",
        "return document.getElementById('confirm').open && /console-dlq/.test(document.getElementById('confirm-text').textContent);",
        secs(5),
    )
    .await
    .unwrap();
    assert_eq!(
        api.queue_stats("console-dlq").await.unwrap().dead_lettered,
        1,
        "nothing is redriven before the confirmation"
    );
    b.click("#confirm-ok").await.unwrap();
    b.wait(
        "the redrive's notice",
        "var n = document.getElementById('notice'); return !n.hidden && /Redriven 1 message/.test(n.textContent);",
        secs(15),
    )
    .await
    .unwrap();
    b.wait(
        "no dead letter left",
        &is(dead("console-dlq"), "0"),
        secs(15),
    )
    .await
    .unwrap();
    let stats = api.queue_stats("console-dlq").await.unwrap();
    assert_eq!((stats.ready, stats.dead_lettered), (1, 0), "{stats:?}");

    // Cache: a key's line on all three nodes, and each node's stats.
    api.cache_set(&CacheSetRequest {
        key: "console-key".into(),
        value: json!("v"),
        ttl_ms: None,
    })
    .await
    .expect("cache set");
    b.show("cache").await.unwrap();
    b.type_into("#cache-key", "console-key").await.unwrap();
    b.click("#cache-lookup button").await.unwrap();
    b.wait(
        "the key's line on three nodes, one of them holding it, and three nodes' stats",
        "var rows = document.querySelectorAll('#cache-line tr[data-node]'); \
         var held = [...rows].filter(r => /^[MES]$/.test(r.querySelector('.state').textContent)); \
         return rows.length === 3 && held.length >= 1 \
           && document.querySelectorAll('#cache-stats tr.up[data-node]').length === 3;",
        secs(15),
    )
    .await
    .unwrap();

    // Some traffic for the charts (~12 s: four samples), then the
    // overview's screenshot.
    b.show("overview").await.unwrap();
    for i in 0..60u64 {
        let _ = api.enqueue_one("console-q", json!(i)).await;
        let _ = api.queue_stats("console-q").await;
        let _ = api.cache_get("console-key").await;
        if i % 3 == 0 {
            if let Ok(g) = api
                .acquire(&AcquireRequest {
                    resource: format!("console/job-{}", i % 4),
                    owner: "console-worker".into(),
                    ttl_ms: Some(60_000),
                    ..Default::default()
                })
                .await
            {
                if i % 2 == 0 {
                    let _ = api
                        .release(&client::ReleaseRequest {
                            resource: g.resource.clone(),
                            owner: g.owner.clone(),
                            token: g.token,
                            ..Default::default()
                        })
                        .await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.wait(
        "rate lines for every service, ten nodes up and no notice on the overview",
        "return document.querySelectorAll('#charts polyline').length >= 3 \
           && document.querySelectorAll('#nodes .node[data-up=true]').length === 10 \
           && document.getElementById('notice').hidden;",
        secs(30),
    )
    .await
    .unwrap();
    let png = b.screenshot().await.unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is a PNG"
    );
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("console.png"), &png).unwrap();
    eprintln!(
        "screenshot of the console: {} ({} bytes)",
        target.join("console.png").display(),
        png.len()
    );

    // Nothing the page asked for left 127.0.0.1, and the CSP blocked
    // nothing (it would have, for anything not from the gateway).
    let seen = b
        .exec(
            "return { urls: [location.href].concat(performance.getEntries() \
               .filter(e => e.entryType === 'resource' || e.entryType === 'navigation') \
               .map(e => e.name)), csp: window.__csp };",
        )
        .await
        .unwrap();
    let urls: Vec<&str> = seen["urls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(urls.len() > 20, "too few requests recorded: {urls:?}");
    let local = format!("{gw}/");
    let away: Vec<&&str> = urls.iter().filter(|u| !u.starts_with(&local)).collect();
    assert!(away.is_empty(), "requests that left the gateway: {away:?}");
    assert_eq!(seen["csp"], json!([]), "CSP violations");
    drop(b);
}
