//! Charts of a benchmark invocation, each as SVG and PNG (plotters), per
//! service:
//! - `<service>-throughput`: median ops/s of every case, ours and the
//!   baselines' side by side (one colour per system);
//! - `<service>-latency`: p50, p99 and p99.9 of every case;
//! - `<service>-over-time`: p99 per second through each case's first run;
//! - `<service>-concurrency`: ops/s against the number of clients, for the
//!   scenarios run at several.
//!
//! The long runs ([`crate::soak`]) draw their series over time with the same
//! [`Chart`] and [`save`]: a chart is data (bars or lines), drawn by one
//! piece of code on either backend.
//!
//! Text needs a TrueType font (DejaVu Sans, from Debian's
//! `fonts-dejavu-core`, which scripts/install-bench-deps.sh installs);
//! without one no chart is drawn and the caller is told why.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Run, Summary};

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];
const FONT: &str = "sans-serif";
const WIDTH: u32 = 1100;
/// Ten colours (matplotlib's tab10): enough for one line per node.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
/// The height of a line chart.
pub const LINES_HEIGHT: u32 = 600;

type Drawn = Result<(), Box<dyn std::error::Error>>;

/// What a chart shows; drawn the same on SVG and PNG ([`save`]).
pub enum Chart {
    /// Horizontal bars, one per `(label, value, colour)`, the first on top.
    Bars {
        title: String,
        x_desc: String,
        bars: Vec<(String, f64, RGBColor)>,
    },
    /// One line per `(label, points)`, in palette order; `points` marks
    /// every point too (for series of few points).
    Lines {
        title: String,
        x_desc: String,
        y_desc: String,
        series: Vec<(String, Vec<(f64, f64)>)>,
        points: bool,
    },
}

impl Chart {
    fn render<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        match self {
            Chart::Bars {
                title,
                x_desc,
                bars: data,
            } => bars(area, title, x_desc, data),
            Chart::Lines {
                title,
                x_desc,
                y_desc,
                series,
                points,
            } => lines(area, title, x_desc, y_desc, series, *points),
        }
    }
}

/// Register the font once; false when there is none.
fn font() -> bool {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LOADED.get_or_init(|| {
        FONT_PATHS.iter().any(|p| {
            std::fs::read(p).ok().is_some_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

/// Can charts be drawn here (is there a font)? The reason when not.
pub fn ready() -> anyhow::Result<()> {
    anyhow::ensure!(
        font(),
        "no TrueType font at {FONT_PATHS:?} (scripts/install-bench-deps.sh installs fonts-dejavu-core)"
    );
    Ok(())
}

/// Draw `chart` into `dir` as `<base>.svg` and `<base>.png`; the names of
/// the two files.
pub fn save(dir: &Path, base: &str, height: u32, chart: &Chart) -> anyhow::Result<Vec<String>> {
    ready()?;
    let svg = format!("{base}.svg");
    let png = format!("{base}.png");
    let (svg_path, png_path) = (dir.join(&svg), dir.join(&png));
    {
        let area = SVGBackend::new(&svg_path, (WIDTH, height)).into_drawing_area();
        chart
            .render(&area)
            .map_err(|e| anyhow::anyhow!("{svg}: {e}"))?;
        area.present().map_err(|e| anyhow::anyhow!("{svg}: {e}"))?;
    }
    {
        let area = BitMapBackend::new(&png_path, (WIDTH, height)).into_drawing_area();
        chart
            .render(&area)
            .map_err(|e| anyhow::anyhow!("{png}: {e}"))?;
        area.present().map_err(|e| anyhow::anyhow!("{png}: {e}"))?;
    }
    Ok(vec![svg, png])
}

/// Draw every chart of the benchmark runs into `dir`; the names of the
/// files written.
pub fn draw(dir: &Path, runs: &[Run], summary: &[Summary]) -> anyhow::Result<Vec<String>> {
    ready()?;
    let mut written = Vec::new();
    let services: Vec<&str> = {
        let mut v: Vec<&str> = summary.iter().map(|s| s.service.as_str()).collect();
        v.dedup();
        v
    };
    for service in services {
        let rows: Vec<&Summary> = summary.iter().filter(|s| s.service == service).collect();
        let first_runs: Vec<&Run> = runs
            .iter()
            .filter(|r| r.service == service && r.run == 1)
            .collect();
        let mut charts = vec![
            (
                "throughput",
                bar_height(rows.len()),
                throughput(service, &rows),
            ),
            (
                "latency",
                bar_height(rows.len() * 3),
                latency(service, &rows),
            ),
            ("over-time", LINES_HEIGHT, over_time(service, &first_runs)),
        ];
        let concurrency = concurrency_series(&rows);
        if !concurrency.is_empty() {
            charts.push((
                "concurrency",
                LINES_HEIGHT,
                Chart::Lines {
                    title: format!("{service}: throughput against clients"),
                    x_desc: "clients".into(),
                    y_desc: "ops/s (median)".into(),
                    series: concurrency,
                    points: true,
                },
            ));
        }
        for (name, height, chart) in charts {
            written.extend(save(dir, &format!("{service}-{name}"), height, &chart)?);
        }
    }
    Ok(written)
}

fn bar_height(bars: usize) -> u32 {
    (120 + 22 * bars as u32).max(300)
}

fn label(s: &Summary) -> String {
    let store = if s.service == "queue" && s.store != "-" {
        format!(" {}", s.store)
    } else {
        String::new()
    };
    format!(
        "{} {} {:?} c={}{store}",
        s.system, s.scenario, s.via, s.clients
    )
}

fn color_of(system: &str, systems: &[&str]) -> RGBColor {
    let i = systems.iter().position(|s| *s == system).unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

fn systems<'a>(rows: &[&'a Summary]) -> Vec<&'a str> {
    let mut v: Vec<&str> = Vec::new();
    for r in rows {
        if !v.contains(&r.system.as_str()) {
            v.push(&r.system);
        }
    }
    v
}

fn bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    bars: &[(String, f64, RGBColor)],
) -> Drawn
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9) * 1.15;
    let n = bars.len().max(1);
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(330)
        .build_cartesian_2d(0.0..max, (0..n as i32).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|y| match y {
            // Bar 0 at the top: segment i from the bottom is bar n-1-i.
            SegmentValue::CenterOf(i) if (0..n as i32).contains(i) => {
                labels[n - 1 - *i as usize].clone()
            }
            _ => String::new(),
        })
        .x_desc(x_desc)
        .label_style((FONT, 13))
        .draw()?;
    for (i, (_, v, c)) in bars.iter().enumerate() {
        let y = (n - 1 - i) as i32;
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(y)),
                (*v, SegmentValue::Exact(y + 1)),
            ],
            c.filled(),
        );
        bar.set_margin(3, 3, 0, 0);
        chart.draw_series(std::iter::once(bar))?;
        chart.draw_series(std::iter::once(Text::new(
            format!(" {v:.0}"),
            (*v, SegmentValue::CenterOf(y)),
            TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
        )))?;
    }
    Ok(())
}

fn lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
    points: bool,
) -> Drawn
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let xs = || series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let min_x = xs().fold(f64::INFINITY, f64::min);
    let min_x = if min_x.is_finite() {
        min_x.min(0.0)
    } else {
        0.0
    };
    let max_x = xs().fold(min_x, f64::max);
    // Some room right of the last point, whatever the scale.
    let max_x = max_x + ((max_x - min_x) * 0.05).max(1.0);
    let max_y = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(1e-3)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(min_x..max_x, 0.0..max_y)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style((FONT, 13))
        .draw()?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let line = LineSeries::new(pts.iter().copied(), c.stroke_width(2));
        let line = if points { line.point_size(4) } else { line };
        chart
            .draw_series(line)?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
    }
    if !series.is_empty() {
        chart
            .configure_series_labels()
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

fn throughput(service: &str, rows: &[&Summary]) -> Chart {
    let systems = systems(rows);
    Chart::Bars {
        title: format!("{service}: throughput (median ops/s)"),
        x_desc: "ops/s".into(),
        bars: rows
            .iter()
            .map(|s| (label(s), s.ops_per_s, color_of(&s.system, &systems)))
            .collect(),
    }
}

fn latency(service: &str, rows: &[&Summary]) -> Chart {
    let mut data = Vec::new();
    for s in rows {
        for (p, v, c) in [
            ("p50", s.p50_us, PALETTE[0]),
            ("p99", s.p99_us, PALETTE[1]),
            ("p99.9", s.p999_us, PALETTE[3]),
        ] {
            data.push((format!("{} {p}", label(s)), v / 1000.0, c));
        }
    }
    Chart::Bars {
        title: format!("{service}: latency (ms; median over runs)"),
        x_desc: "ms".into(),
        bars: data,
    }
}

fn over_time(service: &str, runs: &[&Run]) -> Chart {
    let series = runs
        .iter()
        .filter(|r| !r.result.timeline.is_empty())
        .map(|r| {
            let label = format!(
                "{} {} {:?} c={} {}",
                r.system, r.scenario, r.via, r.clients, r.store
            );
            let pts = r
                .result
                .timeline
                .iter()
                .filter(|s| s.ops > 0)
                .map(|s| (s.t, s.p99_us as f64 / 1000.0))
                .collect();
            (label, pts)
        })
        .collect();
    Chart::Lines {
        title: format!("{service}: p99 per second (first run of each case)"),
        x_desc: "second of the run".into(),
        y_desc: "p99 (ms)".into(),
        series,
        points: false,
    }
}

/// (label, [(clients, ops/s)]) for every scenario run at several counts.
fn concurrency_series(rows: &[&Summary]) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut by: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in rows {
        let key = format!("{} {} {:?} {}", s.system, s.scenario, s.via, s.store);
        by.entry(key)
            .or_default()
            .push((s.clients as f64, s.ops_per_s));
    }
    by.into_iter().filter(|(_, pts)| pts.len() > 1).collect()
}
