//! `dsync cache …`: get, set and delete keys, and a key's MESI line on
//! every cache node.

use client::{CacheSetRequest, Client};
use serde_json::Value;

use crate::cli::CacheCommand;
use crate::duration::ms;
use crate::error::{self, Error};
use crate::output::{table, Output};

/// Run one `dsync cache …` command.
pub async fn run(c: &Client, out: Output, cmd: CacheCommand) -> Result<i32, Error> {
    match cmd {
        CacheCommand::Get { key } => match c.cache_get(&key).await? {
            Some(v) => {
                out.emit(&v, || v.value.to_string());
                Ok(error::OK)
            }
            None => Err(Error::Refused(format!("{key:?}: miss (no value)"))),
        },
        CacheCommand::Set {
            key,
            value,
            string,
            ttl,
        } => {
            let value = if string {
                Value::String(value)
            } else {
                serde_json::from_str(&value).map_err(|e| {
                    Error::Usage(format!(
                        "VALUE is not JSON ({e}); quote a string as JSON, or use --string"
                    ))
                })?
            };
            let r = c
                .cache_set(&CacheSetRequest {
                    key: key.clone(),
                    value,
                    ttl_ms: ttl.map(ms),
                })
                .await?;
            out.emit(&r, || {
                format!(
                    "set {key:?} (version {}.{})",
                    r.version.epoch, r.version.seq
                )
            });
            Ok(error::OK)
        }
        CacheCommand::Del { key } => {
            let r = c.cache_delete(&key).await?;
            out.emit(&r, || format!("deleted {key:?}"));
            Ok(error::OK)
        }
        CacheCommand::Line { key } => {
            let line = c.cache_line(&key).await?;
            out.emit(&line, || render_line(&line));
            Ok(error::OK)
        }
        CacheCommand::Stats => {
            let s = c.cache_stats().await?;
            out.emit(&s, || {
                serde_json::to_string_pretty(&s).unwrap_or_else(|_| s.to_string())
            });
            Ok(error::OK)
        }
    }
}

/// `GET /api/cache/line` as a table: one row per node, the home marked.
pub fn render_line(line: &Value) -> String {
    let home = line["home"].as_str().unwrap_or("");
    let rows: Vec<Vec<String>> = line["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|n| {
            let node = n["node"].as_str().unwrap_or("?").to_string();
            let version = match (n["version"]["epoch"].as_u64(), n["version"]["seq"].as_u64()) {
                (Some(e), Some(s)) => format!("{e}.{s}"),
                _ => "-".into(),
            };
            vec![
                node.clone(),
                n["state"].as_str().unwrap_or("?").to_string(),
                version,
                if n["alive"].as_bool().unwrap_or(false) {
                    "yes".into()
                } else {
                    "no".into()
                },
                if node == home {
                    "home".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    let mut text = format!(
        "{}\n",
        line["key"]
            .as_str()
            .map(|k| format!("{k:?}"))
            .unwrap_or_default()
    );
    text.push_str(&table(&["NODE", "STATE", "VERSION", "ALIVE", ""], &rows));
    if !line["directory"].is_null() {
        text.push_str(&format!("directory at home: {}\n", line["directory"]));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_line_is_a_table_with_the_home_marked() {
        let line = json!({
            "key": "k", "home": "b:2", "directory": {"owner": "a:1"},
            "nodes": [
                {"node": "a:1", "alive": true, "state": "M", "version": {"epoch": 1, "seq": 3}},
                {"node": "b:2", "alive": true, "state": "I"},
            ]
        });
        let t = render_line(&line);
        assert!(t.contains("a:1   M      1.3      yes"), "{t}");
        assert!(t.contains("b:2   I      -        yes    home"), "{t}");
        assert!(t.contains("directory at home"), "{t}");
    }
}
