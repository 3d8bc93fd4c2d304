//! What dsync prints: JSON with `--json`, readable text otherwise; tables
//! for views with several nodes.
//!
//! - stdout carries the answer (a token, a value, ids, a table); stderr
//!   carries notes and errors, so `X=$(dsync …)` captures only the answer;
//! - with `--json` every answer is one JSON document on one line.

use std::io::{IsTerminal, Write};

use serde::Serialize;

/// The output mode of one run.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Print `value` as one line of JSON with `--json`, else `text()`.
    pub fn emit<T: Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string(value).unwrap_or_else(|_| "null".into())
            );
        } else {
            let t = text();
            if t.ends_with('\n') {
                print!("{t}");
            } else {
                println!("{t}");
            }
        }
        let _ = std::io::stdout().flush();
    }

    /// A note for a person on stderr, only when stderr is a terminal (so
    /// scripts see only the answer).
    pub fn note(&self, text: impl AsRef<str>) {
        if !self.json && std::io::stderr().is_terminal() {
            eprintln!("{}", text.as_ref());
        }
    }
}

/// Left-aligned columns, two spaces apart, headers first.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            s.extend(std::iter::repeat_n(' ', pad));
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&mut headers.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// Indent every line of `text` by `n` spaces.
pub fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NODE", "STATE"],
            &[
                vec!["127.0.0.1:7201".into(), "M".into()],
                vec!["b".into(), "I".into()],
            ],
        );
        assert_eq!(
            t,
            "NODE            STATE\n127.0.0.1:7201  M\nb               I\n"
        );
    }
}
