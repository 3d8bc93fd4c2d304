//! The monitoring files (`monitoring/`) against what the services really
//! export. A dashboard panel or an alert rule on a metric name that no
//! service exports shows nothing and never fires, silently; this test makes
//! that a failure instead.
//!
//! - Every PromQL expression of the Grafana dashboard
//!   (`monitoring/grafana/distributed-sync.json`) and of the alert rules
//!   (`monitoring/alerts.yml`) is split into tokens by a small PromQL reader
//!   ([`promql`]); every metric name in them must be a series that some node
//!   exports on `/metrics` after some traffic (the real binaries, started as
//!   processes by `chaos::system::System`), by its full sample name
//!   (`lock_grants_total`, `…_bucket`), on the kind of node its `job`
//!   matcher names. A labelled family that has no series yet (no gateway
//!   error happened, say) passes on its `# TYPE` line with the suffix its
//!   type gives.
//! - The label names of its matchers and of its `by (…)` lists must exist
//!   on those series (or be a target label Prometheus adds: `job`,
//!   `instance`), and a `label="value"` matcher's value must be
//!   one some series carries.
//! - The dashboard is importable: a `datasource` variable of type
//!   `prometheus` that every panel and query uses, unique panel ids.
//! - With `promtool` on PATH (Debian's `prometheus` package), `promtool
//!   check config` and `check rules` accept the files; without it that test
//!   says so and passes (the compose test runs promtool inside the
//!   Prometheus image either way).
//!
//! Needs the workspace's binaries built (`cargo build --workspace --bins`;
//! `cargo nextest run --workspace` builds them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chaos::system::{Kind, Options, System};
use client::{
    AcquireRequest, CacheSetRequest, Client, DequeueRequest, NackRequest, QueueConfig,
    ReleaseRequest,
};
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("monitoring/grafana/distributed-sync.json"))
        .expect("the dashboard is JSON")
}

/// One PromQL expression and where it came from (for the failure message).
struct Expr {
    origin: String,
    text: String,
}

/// Every `expr` of the dashboard's panels and every query of its variables.
fn dashboard_exprs(dash: &Value) -> Vec<Expr> {
    fn walk(v: &Value, origin: &str, out: &mut Vec<Expr>) {
        match v {
            Value::Object(map) => {
                let title = map
                    .get("title")
                    .and_then(Value::as_str)
                    .map(|t| format!("panel {t:?}"));
                let origin = title.as_deref().unwrap_or(origin);
                if let Some(Value::String(e)) = map.get("expr") {
                    out.push(Expr {
                        origin: origin.to_string(),
                        text: e.clone(),
                    });
                }
                for (k, child) in map {
                    if k != "templating" {
                        walk(child, origin, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, origin, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dash, "dashboard", &mut out);
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] == "query" {
            let q = match &var["query"] {
                Value::String(s) => s.clone(),
                other => other["query"].as_str().unwrap_or_default().to_string(),
            };
            // `label_values(metric, label)`: the metric is what must exist.
            let q = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map_or(q.clone(), |(m, _)| m.to_string());
            out.push(Expr {
                origin: format!("variable {}", var["name"]),
                text: q,
            });
        }
    }
    out
}

/// Every rule's `expr:` in alerts.yml. The file keeps each on one line
/// (its header says so); a block scalar (`expr: |`) is read too, as the
/// more-indented lines after it.
fn alert_exprs(yaml: &str) -> Vec<Expr> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut alert = String::from("?");
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        if let Some(name) = t
            .strip_prefix("- alert:")
            .or_else(|| t.strip_prefix("alert:"))
            .or_else(|| t.strip_prefix("- record:"))
            .or_else(|| t.strip_prefix("record:"))
        {
            alert = name.trim().to_string();
        }
        if let Some(rest) = t.strip_prefix("expr:") {
            let rest = rest.trim();
            let text = if rest.starts_with('|') || rest.starts_with('>') {
                let indent = line.len() - t.len();
                let mut body = Vec::new();
                while i + 1 < lines.len() {
                    let next = lines[i + 1];
                    let nt = next.trim_start();
                    if !nt.is_empty() && next.len() - nt.len() <= indent {
                        break;
                    }
                    body.push(nt);
                    i += 1;
                }
                body.join(" ")
            } else {
                rest.trim_matches(|c| c == '\'' || c == '"').to_string()
            };
            out.push(Expr {
                origin: format!("alert {alert}"),
                text,
            });
        }
        i += 1;
    }
    out
}

/// A small PromQL reader: enough to find the metric names, their label
/// matchers and the label lists of `by`/`without`/`on`/`ignoring`/`group_*`
/// in the expressions this repository writes (Grafana's `$variables`
/// included).
mod promql {
    /// Words that are not metric names when no `(` follows them.
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "atan2",
        "inf",
        "nan",
    ];
    /// Keywords whose `( … )` lists label names.
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];

    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Ident(String),
        /// `{…}`: (label, op, value) matchers.
        Matchers(Vec<(String, String, String)>),
        Open,
        Close,
        Other,
    }

    /// A metric named in an expression, with its matchers.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Selector {
        pub metric: String,
        pub matchers: Vec<(String, String, String)>,
    }

    /// What an expression refers to.
    #[derive(Debug, Default, PartialEq)]
    pub struct Refs {
        pub selectors: Vec<Selector>,
        /// Labels of `by (…)`, `without (…)`, `on (…)` and the like.
        pub grouping: Vec<String>,
    }

    fn is_ident_start(c: char) -> bool {
        c.is_ascii_alphabetic() || c == '_' || c == ':'
    }

    fn is_ident(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_' || c == ':'
    }

    /// A quoted string starting at `chars[*i]` (the quote); returns its
    /// contents and leaves `*i` after the closing quote.
    fn string(chars: &[char], i: &mut usize) -> String {
        let quote = chars[*i];
        let mut s = String::new();
        *i += 1;
        while *i < chars.len() && chars[*i] != quote {
            if chars[*i] == '\\' && quote != '`' && *i + 1 < chars.len() {
                *i += 1;
            }
            s.push(chars[*i]);
            *i += 1;
        }
        *i += 1;
        s
    }

    fn tokens(expr: &str) -> Vec<Tok> {
        let chars: Vec<char> = expr.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if c == '#' {
                // A comment runs to the end of the line.
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            } else if c == '"' || c == '\'' || c == '`' {
                string(&chars, &mut i);
                out.push(Tok::Other);
            } else if c == '$' {
                // A Grafana variable: `$name`, `${name}` or `${name:fmt}`.
                i += 1;
                if i < chars.len() && chars[i] == '{' {
                    while i < chars.len() && chars[i] != '}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < chars.len() && is_ident(chars[i]) {
                        i += 1;
                    }
                }
                out.push(Tok::Other);
            } else if c == '[' {
                // A range or subquery: durations and variables only.
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                i += 1;
                out.push(Tok::Other);
            } else if c == '{' {
                i += 1;
                let mut matchers = Vec::new();
                loop {
                    while i < chars.len() && (chars[i].is_whitespace() || chars[i] == ',') {
                        i += 1;
                    }
                    if i >= chars.len() || chars[i] == '}' {
                        i += 1;
                        break;
                    }
                    let start = i;
                    while i < chars.len() && is_ident(chars[i]) {
                        i += 1;
                    }
                    let label: String = chars[start..i].iter().collect();
                    while i < chars.len() && chars[i].is_whitespace() {
                        i += 1;
                    }
                    let start = i;
                    while i < chars.len() && "=!~".contains(chars[i]) {
                        i += 1;
                    }
                    let op: String = chars[start..i].iter().collect();
                    while i < chars.len() && chars[i].is_whitespace() {
                        i += 1;
                    }
                    let value = if i < chars.len() && "\"'`".contains(chars[i]) {
                        string(&chars, &mut i)
                    } else {
                        // Not a matcher we understand: skip to the next one.
                        while i < chars.len() && chars[i] != ',' && chars[i] != '}' {
                            i += 1;
                        }
                        String::new()
                    };
                    assert!(
                        !label.is_empty() && !op.is_empty(),
                        "cannot read the matchers of {expr:?}"
                    );
                    matchers.push((label, op, value));
                }
                out.push(Tok::Matchers(matchers));
            } else if is_ident_start(c) {
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            } else if c.is_ascii_digit() || c == '.' {
                // A number or a duration (`offset 5m`): digits, letters, dots.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                out.push(Tok::Other);
            } else if c == '(' {
                i += 1;
                out.push(Tok::Open);
            } else if c == ')' {
                i += 1;
                out.push(Tok::Close);
            } else {
                i += 1;
                out.push(Tok::Other);
            }
        }
        out
    }

    /// The metric names (with matchers) and grouping labels of `expr`.
    pub fn refs(expr: &str) -> Refs {
        let toks = tokens(expr);
        let mut refs = Refs::default();
        let mut i = 0;
        while i < toks.len() {
            match &toks[i] {
                Tok::Ident(word)
                    if toks.get(i + 1) == Some(&Tok::Open)
                        && LABEL_LISTS.contains(&word.as_str()) =>
                {
                    i += 2;
                    while i < toks.len() && toks[i] != Tok::Close {
                        if let Tok::Ident(label) = &toks[i] {
                            refs.grouping.push(label.clone());
                        }
                        i += 1;
                    }
                }
                // A function or aggregation: its name is not a metric.
                Tok::Ident(_) if toks.get(i + 1) == Some(&Tok::Open) => {}
                Tok::Ident(word) if KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) => {}
                // `sum by (…) (…)`: an aggregation with its grouping first.
                Tok::Ident(_) if matches!(toks.get(i + 1), Some(Tok::Ident(w)) if w == "by" || w == "without") =>
                    {}
                Tok::Ident(word) => {
                    let matchers = match toks.get(i + 1) {
                        Some(Tok::Matchers(m)) => {
                            i += 1;
                            m.clone()
                        }
                        _ => Vec::new(),
                    };
                    refs.selectors.push(Selector {
                        metric: word.clone(),
                        matchers,
                    });
                }
                Tok::Matchers(m) => {
                    // `{__name__="x", …}` without a leading name.
                    if let Some((_, _, name)) =
                        m.iter().find(|(l, op, _)| l == "__name__" && op == "=")
                    {
                        refs.selectors.push(Selector {
                            metric: name.clone(),
                            matchers: m.clone(),
                        });
                    }
                }
                _ => {}
            }
            i += 1;
        }
        refs
    }
}

#[test]
fn the_promql_reader_finds_metrics_matchers_and_grouping_labels() {
    let r = promql::refs(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{job="gateway", route=~"/api/.*"}[$__rate_interval])))"#,
    );
    assert_eq!(r.selectors.len(), 1);
    assert_eq!(
        r.selectors[0].metric,
        "http_request_duration_seconds_bucket"
    );
    assert_eq!(
        r.selectors[0].matchers,
        vec![
            ("job".into(), "=".into(), "gateway".into()),
            ("route".into(), "=~".into(), "/api/.*".into()),
        ]
    );
    assert_eq!(r.grouping, vec!["le", "route"]);

    let r = promql::refs(
        "sum(rate(cache_hits_total[5m])) / (sum(rate(cache_hits_total[5m])) + sum(rate(cache_misses_total[5m]))) > bool 0.5 and on(instance) up offset 5m",
    );
    let names: Vec<_> = r.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(
        names,
        [
            "cache_hits_total",
            "cache_hits_total",
            "cache_misses_total",
            "up"
        ]
    );
    assert_eq!(r.grouping, vec!["instance"]);

    let r = promql::refs(
        r#"count(up{job="lock-service"} == 1) < 2 or absent(up{job="lock-service"} == 1) unless max(raft_term{instance="$node"}) - min_over_time(raft_term[10m:1m]) > 5e0"#,
    );
    let names: Vec<_> = r.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["up", "up", "raft_term", "raft_term"]);
    assert_eq!(r.selectors[2].matchers[0].2, "$node");
}

#[test]
fn alerts_yml_is_read_rule_by_rule() {
    let yaml = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 1m\n      - alert: B\n        expr: |\n          sum(x_total)\n            > 1\n        labels: {}\n";
    let exprs = alert_exprs(yaml);
    assert_eq!(exprs.len(), 2);
    assert_eq!(
        (exprs[0].origin.as_str(), exprs[0].text.as_str()),
        ("alert A", "up == 0")
    );
    assert_eq!(
        (exprs[1].origin.as_str(), exprs[1].text.as_str()),
        ("alert B", "sum(x_total) > 1")
    );
}

#[test]
fn the_alert_rules_cover_what_issue_24_asks() {
    let yaml = read("monitoring/alerts.yml");
    let exprs = alert_exprs(&yaml);
    let alerts: BTreeSet<&str> = exprs
        .iter()
        .filter_map(|e| e.origin.strip_prefix("alert "))
        .collect();
    for want in [
        "LockNoLeader",
        "LockLeaderFlapping",
        "QueueBacklogGrowing",
        "QueueDeadLetters",
        "TargetDown",
    ] {
        assert!(
            alerts.contains(want),
            "alerts.yml has no {want}: {alerts:?}"
        );
    }
    // Every rule is read, none is an empty expression.
    assert_eq!(
        exprs.len(),
        yaml.matches("- alert:").count(),
        "an alert without an expr: line"
    );
    assert!(exprs.iter().all(|e| !e.text.trim().is_empty()));
}

#[test]
fn the_dashboard_is_importable_with_a_datasource_variable() {
    let dash = dashboard();
    assert!(dash["title"].is_string(), "a dashboard has a title");
    assert!(
        dash["uid"].is_string(),
        "a stable uid, so a re-import replaces"
    );
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus");
    let ds_ref = format!("${{{}}}", ds["name"].as_str().unwrap());
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8);
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("a numeric panel id")),
            "duplicate panel id {}",
            p["id"]
        );
        if p["type"] == "row" || p["type"] == "text" {
            continue;
        }
        let uses = |d: &Value| d["uid"] == json!(ds_ref);
        assert!(
            uses(&p["datasource"]),
            "panel {} does not use {ds_ref}",
            p["title"]
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            assert!(
                uses(&t["datasource"]),
                "a query of panel {} does not use {ds_ref}",
                p["title"]
            );
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()));
            queries += 1;
        }
    }
    assert_eq!(
        dashboard_exprs(&dash).len(),
        queries + vars.iter().filter(|v| v["type"] == "query").count()
    );
}

#[test]
fn promtool_accepts_the_config_and_the_rules() {
    let dir = repo().join("monitoring");
    let run = |args: &[&str]| {
        std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
    };
    if run(&["--version"]).is_err() {
        eprintln!(
            "promtool is not on PATH (Debian's prometheus package): not checked here; \
             scripts/compose-test.sh runs it in the Prometheus image"
        );
        return;
    }
    for args in [
        &["check", "config", "prometheus.yml"][..],
        &["check", "rules", "alerts.yml"],
    ] {
        let out = run(args).expect("promtool");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// One exported series name: the kinds of node exporting it, and every
/// label's values.
#[derive(Default, Debug)]
struct Series {
    kinds: BTreeSet<Kind>,
    labels: BTreeMap<String, BTreeSet<String>>,
}

/// What every node exports: series by sample name, and the declared
/// families (`# TYPE name type`) with their kinds.
#[derive(Default, Debug)]
struct Exported {
    series: BTreeMap<String, Series>,
    families: BTreeMap<String, (String, BTreeSet<Kind>)>,
}

impl Exported {
    fn add(&mut self, kind: Kind, text: &str) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(ty)) = (parts.next(), parts.next()) {
                    self.families
                        .entry(name.to_string())
                        .or_insert_with(|| (ty.to_string(), BTreeSet::new()))
                        .1
                        .insert(kind);
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let series = self.series.entry(line[..end].to_string()).or_default();
            series.kinds.insert(kind);
            if line[end..].starts_with('{') {
                let close = line.rfind('}').expect("a closing brace");
                // Label values here are simple (no `,` or `"` inside).
                for pair in line[end + 1..close].split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    series
                        .labels
                        .entry(k.to_string())
                        .or_default()
                        .insert(v.trim_matches('"').to_string());
                }
            }
        }
    }

    /// A family declared with no series yet, by a sample name its type
    /// would give (`x_total` of counter `x`, `x_bucket` of histogram `x`).
    fn declared(&self, name: &str) -> Option<&BTreeSet<Kind>> {
        let candidates = [
            (name, ""),
            (name.strip_suffix("_total").unwrap_or(""), "counter"),
            (name.strip_suffix("_bucket").unwrap_or(""), "histogram"),
            (name.strip_suffix("_sum").unwrap_or(""), "histogram"),
            (name.strip_suffix("_count").unwrap_or(""), "histogram"),
        ];
        candidates.iter().find_map(|(family, ty)| {
            let (t, kinds) = self.families.get(*family)?;
            let fits = if ty.is_empty() { t == "gauge" } else { t == ty };
            fits.then_some(kinds)
        })
    }
}

/// Series Prometheus itself adds for every target.
const SYNTHETIC: &[&str] = &["up", "scrape_duration_seconds", "scrape_samples_scraped"];
/// Labels Prometheus adds to every series of a target (prometheus.yml).
const TARGET_LABELS: &[&str] = &["job", "instance", "__name__"];

/// The kinds of node a `job` matcher selects (the job names of prometheus.yml).
fn job_kinds(op: &str, value: &str) -> Option<BTreeSet<Kind>> {
    let jobs = [
        ("lock-service", Kind::Lock),
        ("queue-service", Kind::Queue),
        ("cache-service", Kind::Cache),
        ("gateway", Kind::Gateway),
    ];
    let selected: BTreeSet<Kind> = match op {
        "=" => jobs
            .iter()
            .filter(|(j, _)| *j == value)
            .map(|(_, k)| *k)
            .collect(),
        "=~" => value
            .split('|')
            .flat_map(|alt| jobs.iter().filter(move |(j, _)| *j == alt))
            .map(|(_, k)| *k)
            .collect(),
        _ => return None,
    };
    Some(selected)
}

/// Lock, queue and cache traffic through the gateway, enough for every
/// family the dashboard draws to have a series: grants, a waiter that is
/// handed the lock, a wait that times out, deliveries, redeliveries and a
/// dead letter, cache misses, hits and invalidations.
async fn traffic(sys: &System) {
    let gw = sys.gateway_url();
    let c = Client::new(gw.clone()).unwrap();
    // Locks: a grant, a waiter granted on release, a wait that times out.
    let first = c
        .acquire(&AcquireRequest {
            resource: "mon-r".into(),
            owner: "a".into(),
            ttl_ms: Some(10_000),
            ..Default::default()
        })
        .await
        .expect("acquire");
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move {
            c.acquire(&AcquireRequest {
                resource: "mon-r".into(),
                owner: "b".into(),
                ttl_ms: Some(10_000),
                wait_ms: Some(5_000),
                ..Default::default()
            })
            .await
        })
    };
    let timed_out = c
        .acquire(&AcquireRequest {
            resource: "mon-r".into(),
            owner: "c".into(),
            wait_ms: Some(300),
            ..Default::default()
        })
        .await;
    assert!(
        timed_out.is_err(),
        "a held exclusive lock was granted again"
    );
    c.release(&ReleaseRequest {
        resource: "mon-r".into(),
        owner: "a".into(),
        token: first.token,
        ..Default::default()
    })
    .await
    .expect("release");
    let second = waiter.await.unwrap().expect("the waiter is granted");
    c.release(&ReleaseRequest {
        resource: "mon-r".into(),
        owner: "b".into(),
        token: second.token,
        ..Default::default()
    })
    .await
    .expect("release");

    // Queues: a delivery acked, and one nacked until it is dead-lettered.
    c.configure_queue(&QueueConfig {
        queue: "mon-dlq".into(),
        max_attempts: Some(2),
    })
    .await
    .expect("configure");
    c.enqueue_one("mon-q", json!({"n": 1}))
        .await
        .expect("enqueue");
    c.enqueue_one("mon-dlq", json!({"n": 2}))
        .await
        .expect("enqueue");
    let dequeue = |queue: &str| DequeueRequest {
        queue: queue.into(),
        visibility_ms: Some(30_000),
        ..Default::default()
    };
    for m in c.dequeue(&dequeue("mon-q")).await.expect("dequeue") {
        c.ack("mon-q", &m.receipt).await.expect("ack");
    }
    for _ in 0..2 {
        for m in c.dequeue(&dequeue("mon-dlq")).await.expect("dequeue") {
            c.nack(&NackRequest {
                queue: "mon-dlq".into(),
                receipt: m.receipt,
                ..Default::default()
            })
            .await
            .expect("nack");
        }
    }
    let stats = c.queue_stats("mon-dlq").await.expect("stats");
    assert_eq!(stats.dead_lettered, 1, "{stats:?}");
    c.enqueue_one("mon-backlog", json!(3))
        .await
        .expect("enqueue");

    // Cache: one key through every node (misses, hits, invalidations).
    let nodes: Vec<String> = sys
        .names(Kind::Cache)
        .iter()
        .map(|n| sys.nodes[n].addr.clone())
        .collect();
    for (round, node) in nodes.iter().enumerate() {
        let via = Client::builder(gw.clone())
            .cache_node(node.clone())
            .build()
            .unwrap();
        via.cache_set(&CacheSetRequest {
            key: "mon-k".into(),
            value: json!(round),
            ttl_ms: None,
        })
        .await
        .expect("cache set");
        for other in &nodes {
            let via = Client::builder(gw.clone())
                .cache_node(other.clone())
                .build()
                .unwrap();
            via.cache_get("mon-k").await.expect("cache get");
            via.cache_get("mon-k").await.expect("cache get");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_dashboard_and_the_alerts_is_exported() {
    let bins = chaos::system::workspace_bins();
    let dir = tempfile::tempdir().unwrap();
    let sys = System::start(Options {
        bins,
        dir: dir.path().to_path_buf(),
        redis: false,
        netns: false,
        disk_shim: false,
        lock_worker_threads: Some(1),
    })
    .await
    .expect("the system starts");
    traffic(&sys).await;

    // Scrape every node, a second time after the queue nodes' depth refresh.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let http = reqwest::Client::new();
    let mut exported = Exported::default();
    for node in sys.nodes.values() {
        let text = http
            .get(format!("http://{}/metrics", node.addr))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("{} /metrics: {e}", node.name));
        exported.add(node.kind, &text.text().await.unwrap());
    }

    let mut exprs = dashboard_exprs(&dashboard());
    exprs.extend(alert_exprs(&read("monitoring/alerts.yml")));
    assert!(
        exprs.len() > 20,
        "too few expressions found: {}",
        exprs.len()
    );
    let mut problems = Vec::new();
    let mut unobserved = BTreeSet::new();
    let mut checked = BTreeSet::new();
    for e in &exprs {
        let refs = promql::refs(&e.text);
        if refs.selectors.is_empty() {
            problems.push(format!("{}: no metric in {:?}", e.origin, e.text));
        }
        let mut expr_labels: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
        for sel in &refs.selectors {
            if SYNTHETIC.contains(&sel.metric.as_str()) {
                continue;
            }
            checked.insert(sel.metric.clone());
            let wanted = sel
                .matchers
                .iter()
                .find(|(l, _, _)| l == "job")
                .and_then(|(_, op, v)| job_kinds(op, v));
            let kinds = match exported.series.get(&sel.metric) {
                Some(s) => {
                    expr_labels.extend(s.labels.keys().map(String::as_str));
                    for (label, op, value) in &sel.matchers {
                        if TARGET_LABELS.contains(&label.as_str()) {
                            continue;
                        }
                        match s.labels.get(label) {
                            None => problems.push(format!(
                                "{}: {} has no label {label:?} (it has {:?})",
                                e.origin,
                                sel.metric,
                                s.labels.keys().collect::<Vec<_>>()
                            )),
                            Some(values)
                                if op == "=" && !value.contains('$') && !values.contains(value) =>
                            {
                                problems.push(format!(
                                    "{}: no {}{{{label}={value:?}}} (values: {values:?})",
                                    e.origin, sel.metric
                                ))
                            }
                            _ => {}
                        }
                    }
                    s.kinds.clone()
                }
                None => match exported.declared(&sel.metric) {
                    Some(kinds) => {
                        unobserved.insert(sel.metric.clone());
                        kinds.clone()
                    }
                    None => {
                        problems.push(format!(
                            "{}: no service exports {} (in {:?})",
                            e.origin, sel.metric, e.text
                        ));
                        continue;
                    }
                },
            };
            if let Some(wanted) = wanted {
                if wanted.is_disjoint(&kinds) {
                    problems.push(format!(
                        "{}: {} comes from {kinds:?}, not from the job its matcher names ({wanted:?})",
                        e.origin, sel.metric
                    ));
                }
            }
        }
        for label in &refs.grouping {
            if !expr_labels.contains(label.as_str())
                && !refs
                    .selectors
                    .iter()
                    .any(|s| unobserved.contains(&s.metric))
            {
                problems.push(format!(
                    "{}: grouping label {label:?} is on none of its metrics (in {:?})",
                    e.origin, e.text
                ));
            }
        }
    }
    eprintln!(
        "{} expressions, {} metric names checked; declared but without a series after the traffic: {unobserved:?}",
        exprs.len(),
        checked.len()
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}
