//! What a benchmark invocation leaves behind, in its output directory:
//! - `runs.json`: every run, with its full result (histogram percentiles,
//!   errors by kind, the per-second timeline);
//! - `runs.csv`: one line a run;
//! - `summary.csv` and `summary.md`: medians over the runs of each case,
//!   the spread (slowest and fastest run), and where a case was also run
//!   another way (direct vs through the gateway) the ratio between them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::load::{median, Measured};
use crate::scenario::Via;

/// One run of one case.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// `ours`, or the baseline (`etcd`, `redis`, `nginx`).
    pub system: String,
    pub service: String,
    pub scenario: String,
    pub via: Via,
    pub clients: usize,
    /// The queue/cache store the system ran on (`embedded` or `redis`).
    pub store: String,
    /// Which repeat this is (1-based).
    pub run: usize,
    pub result: Measured,
}

/// The medians over the runs of one case.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub system: String,
    pub service: String,
    pub scenario: String,
    pub via: Via,
    pub clients: usize,
    pub store: String,
    pub runs: usize,
    pub ops_per_s: f64,
    pub ops_per_s_min: f64,
    pub ops_per_s_max: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub errors: u64,
}

type Key = (String, String, String, String, usize, Via);

fn key(r: &Run) -> Key {
    (
        r.system.clone(),
        r.service.clone(),
        r.scenario.clone(),
        r.store.clone(),
        r.clients,
        r.via,
    )
}

/// Medians per case, in the order the cases first ran.
pub fn summarize(runs: &[Run]) -> Vec<Summary> {
    let mut order: Vec<Key> = Vec::new();
    let mut by: BTreeMap<Key, Vec<&Run>> = BTreeMap::new();
    for r in runs {
        let k = key(r);
        if !by.contains_key(&k) {
            order.push(k.clone());
        }
        by.entry(k).or_default().push(r);
    }
    order
        .into_iter()
        .map(|k| {
            let rs = &by[&k];
            let col = |f: fn(&Measured) -> f64| median(rs.iter().map(|r| f(&r.result)).collect());
            let tput: Vec<f64> = rs.iter().map(|r| r.result.ops_per_s).collect();
            Summary {
                system: k.0.clone(),
                service: k.1.clone(),
                scenario: k.2.clone(),
                store: k.3.clone(),
                clients: k.4,
                via: k.5,
                runs: rs.len(),
                ops_per_s: median(tput.clone()),
                ops_per_s_min: tput.iter().copied().fold(f64::INFINITY, f64::min),
                ops_per_s_max: tput.iter().copied().fold(0.0, f64::max),
                p50_us: col(|m| m.p50_us as f64),
                p99_us: col(|m| m.p99_us as f64),
                p999_us: col(|m| m.p999_us as f64),
                errors: rs.iter().map(|r| r.result.error_count()).sum(),
            }
        })
        .collect()
}

/// Write every file into `dir`.
/// `notes` go under the summary (e.g. a baseline that could not run);
/// `charts` (file names in `dir`) are shown in it, the SVGs; `sections`
/// (markdown, e.g. the soak's: [`crate::soak`]) follow the tables.
pub fn write(
    dir: &Path,
    runs: &[Run],
    title: &str,
    notes: &[String],
    charts: &[String],
    sections: &[String],
) -> anyhow::Result<Vec<Summary>> {
    std::fs::create_dir_all(dir)?;
    let summary = summarize(runs);
    // With only long runs (soak, storm: files of their own) there is no
    // table to write.
    if !runs.is_empty() {
        write_runs(dir, runs, &summary)?;
    }
    let mut md = markdown(&summary, title);
    for n in notes {
        md.push_str(&format!("\n> {n}\n"));
    }
    let svgs: Vec<&String> = charts.iter().filter(|c| c.ends_with(".svg")).collect();
    if !svgs.is_empty() {
        md.push_str("\n## Charts\n\n");
        for c in svgs {
            md.push_str(&format!("![{}]({c})\n\n", c.trim_end_matches(".svg")));
        }
    }
    for section in sections {
        md.push_str(section);
    }
    std::fs::write(dir.join("summary.md"), md)?;
    Ok(summary)
}

/// `runs.json`, `runs.csv` and `summary.csv`.
fn write_runs(dir: &Path, runs: &[Run], summary: &[Summary]) -> anyhow::Result<()> {
    std::fs::write(dir.join("runs.json"), serde_json::to_string_pretty(runs)?)?;
    let mut csv = String::from(
        "system,service,scenario,via,clients,store,run,ops,seconds,ops_per_s,p50_us,p90_us,p99_us,p999_us,max_us,errors\n",
    );
    for r in runs {
        let m = &r.result;
        writeln!(
            csv,
            "{},{},{},{:?},{},{},{},{},{:.3},{:.1},{},{},{},{},{},{}",
            r.system,
            r.service,
            r.scenario,
            r.via,
            r.clients,
            r.store,
            r.run,
            m.ops,
            m.seconds,
            m.ops_per_s,
            m.p50_us,
            m.p90_us,
            m.p99_us,
            m.p999_us,
            m.max_us,
            m.error_count()
        )?;
    }
    std::fs::write(dir.join("runs.csv"), csv)?;
    let mut csv = String::from(
        "system,service,scenario,via,clients,store,runs,ops_per_s,ops_per_s_min,ops_per_s_max,p50_us,p99_us,p999_us,errors\n",
    );
    for s in summary {
        writeln!(
            csv,
            "{},{},{},{:?},{},{},{},{:.1},{:.1},{:.1},{:.0},{:.0},{:.0},{}",
            s.system,
            s.service,
            s.scenario,
            s.via,
            s.clients,
            s.store,
            s.runs,
            s.ops_per_s,
            s.ops_per_s_min,
            s.ops_per_s_max,
            s.p50_us,
            s.p99_us,
            s.p999_us,
            s.errors
        )?;
    }
    std::fs::write(dir.join("summary.csv"), csv)?;
    Ok(())
}

/// The markdown summary: one table per service. A case of ours run both
/// ways carries the gateway's ratio to direct; a case with a baseline run
/// next to it carries ours over the baseline's throughput.
pub fn markdown(summary: &[Summary], title: &str) -> String {
    let mut out = format!("# {title}\n");
    if !summary.is_empty() {
        out.push_str(
            "\nMedians over the runs of each case; spread is the slowest and fastest run's ops/s. \
             *vs direct*: through the gateway over straight to the node; *vs baseline*: ours over the \
             baseline's ops/s in the same invocation (higher is better).\n",
        );
    }
    let ours = |s: &&Summary| s.system == "ours";
    let direct: BTreeMap<(&str, &str, &str, usize), f64> = summary
        .iter()
        .filter(ours)
        .filter(|s| s.via == Via::Direct)
        .map(|s| {
            (
                (&*s.service, &*s.scenario, &*s.store, s.clients),
                s.ops_per_s,
            )
        })
        .collect();
    // (service, scenario, clients, via) → every baseline's (system, ops/s)
    type Case<'a> = (&'a str, &'a str, usize, Via);
    let mut baseline: BTreeMap<Case, Vec<(&str, f64)>> = BTreeMap::new();
    for s in summary.iter().filter(|s| s.system != "ours") {
        baseline
            .entry((&*s.service, &*s.scenario, s.clients, s.via))
            .or_default()
            .push((&*s.system, s.ops_per_s));
    }
    // One section per service, in the order services first ran (the queue's
    // Redis-store cases run after the other services' cases).
    let mut rows: Vec<_> = summary.iter().collect();
    rows.sort_by_key(|s| summary.iter().position(|f| f.service == s.service));
    let mut service = "";
    for s in rows {
        if s.service != service {
            service = &s.service;
            let _ = write!(
                out,
                "\n## {service}\n\n| system | scenario | via | clients | store | ops/s | spread | p50 | p99 | p99.9 | errors | vs direct | vs baseline |\n\
                 | --- | --- | --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
            );
        }
        let (mut vs_direct, mut vs_baseline) = (String::new(), String::new());
        if s.system == "ours" {
            if s.via == Via::Gateway {
                if let Some(d) = direct.get(&(&*s.service, &*s.scenario, &*s.store, s.clients)) {
                    vs_direct = format!("{:.2}×", s.ops_per_s / d.max(1e-9));
                }
            }
            if let Some(bs) = baseline.get(&(&*s.service, &*s.scenario, s.clients, s.via)) {
                vs_baseline = bs
                    .iter()
                    .map(|(name, b)| format!("{:.2}× {name}", s.ops_per_s / b.max(1e-9)))
                    .collect::<Vec<_>>()
                    .join(", ");
            }
        }
        let _ = writeln!(
            out,
            "| {} | {} | {:?} | {} | {} | {:.0} | {:.0}–{:.0} | {} | {} | {} | {} | {} | {} |",
            s.system,
            s.scenario,
            s.via,
            s.clients,
            s.store,
            s.ops_per_s,
            s.ops_per_s_min,
            s.ops_per_s_max,
            ms(s.p50_us),
            ms(s.p99_us),
            ms(s.p999_us),
            s.errors,
            vs_direct,
            vs_baseline
        );
    }
    out
}

/// A latency in µs, as µs or ms, whichever reads better.
pub fn ms(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Mode;

    fn run(via: Via, n: usize, ops_per_s: f64) -> Run {
        Run {
            system: "ours".into(),
            service: "cache".into(),
            scenario: "hit".into(),
            via,
            clients: 16,
            store: "embedded".into(),
            run: n,
            result: Measured {
                mode: Mode::Closed { clients: 16 },
                ops: (ops_per_s * 2.0) as u64,
                seconds: 2.0,
                ops_per_s,
                p50_us: 100 * n as u64,
                p90_us: 0,
                p99_us: 0,
                p999_us: 0,
                max_us: 0,
                errors: BTreeMap::from([("teapot".to_string(), 1)]),
                timeline: Vec::new(),
            },
        }
    }

    #[test]
    fn medians_spread_errors_and_the_gateway_ratio() {
        let runs = vec![
            run(Via::Direct, 1, 100.0),
            run(Via::Direct, 2, 300.0),
            run(Via::Direct, 3, 200.0),
            run(Via::Gateway, 1, 50.0),
            Run {
                system: "nginx".into(),
                store: "-".into(),
                ..run(Via::Gateway, 1, 25.0)
            },
        ];
        let s = summarize(&runs);
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].ops_per_s, s[0].ops_per_s_min, s[0].ops_per_s_max),
            (200.0, 100.0, 300.0)
        );
        assert_eq!((s[0].p50_us, s[0].errors, s[0].runs), (200.0, 3, 3));
        let md = markdown(&s, "t");
        assert!(
            md.contains("| hit | Gateway | 16 | embedded | 50 |"),
            "{md}"
        );
        assert!(md.contains("0.25×"), "{md}");
    }
}
