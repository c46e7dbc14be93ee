//! A snapshot of the environment, and the `FINCODE_SIDECAR__SECTION__KEY` overlay.

use std::collections::BTreeMap;
use std::fmt;

use toml::{Table, Value};

use crate::problem::{Problem, Severity, Source};

/// Environment variables that override file keys start with this (case-insensitive).
pub(crate) const OVERLAY_PREFIX: &str = "FINCODE_SIDECAR__";

/// A snapshot of the environment.
///
/// Taken once so that loading is a pure function of (file, snapshot): tests pass their own
/// variables, and a reload sees one consistent view. `Debug` lists variable names only, because
/// values include secrets such as the API token.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

// === impl Env ===

impl Env {
    /// The current process environment. Variables whose name or value is not UTF-8 are skipped;
    /// no configuration or secret of ours is ever non-UTF-8.
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars_os().filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        }))
    }

    /// An environment made of exactly these pairs (later duplicates win). For tests and for
    /// callers that assemble the environment themselves.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of variable `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("names", &self.vars.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Which dotted keys the overlay set, from which variable, so problems can point at the variable
/// rather than the file.
#[derive(Debug, Default)]
pub(crate) struct Origins {
    by_key: BTreeMap<String, Origin>,
}

#[derive(Debug)]
struct Origin {
    var: String,
    raw: String,
}

// === impl Origins ===

impl Origins {
    /// Where `dotted` came from: the variable that set it or one of its parent tables; else one
    /// that created it as a table by setting a key inside it; else the file.
    pub(crate) fn source_of(&self, dotted: &str) -> Source {
        let mut key = dotted;
        loop {
            if let Some(origin) = self.by_key.get(key) {
                return Source::Env(origin.var.clone());
            }
            match key.rsplit_once('.') {
                Some((parent, _)) => key = parent,
                None => break,
            }
        }
        let inside = format!("{dotted}.");
        self.by_key
            .iter()
            .find(|(key, _)| key.starts_with(&inside))
            .map_or(Source::File, |(_, origin)| Source::Env(origin.var.clone()))
    }

    /// The raw text of the variable that set exactly `dotted`, for a second reading as a plain
    /// string when its TOML reading has the wrong type (`level=inf` reads as a float).
    pub(crate) fn raw_of(&self, dotted: &str) -> Option<&str> {
        self.by_key.get(dotted).map(|o| o.raw.as_str())
    }
}

/// Writes every `FINCODE_SIDECAR__*` variable into `root` and records where each key came from.
///
/// `FINCODE_SIDECAR__AUTH__EXTRA_HEADERS__PLATFORM=x` sets `auth.extra_headers.platform`. The
/// value is read as a TOML value when it is one (`9`, `true`, `"s"`, `[1, 2]`), else as a string,
/// so URLs and addresses need no quoting.
pub(crate) fn apply_overlay(root: &mut Table, env: &Env, problems: &mut Vec<Problem>) -> Origins {
    let mut origins = Origins::default();
    for (var, raw) in &env.vars {
        let Some(rest) = strip_prefix_ignore_case(var, OVERLAY_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let dotted = path.join(".");
        if path.iter().any(String::is_empty) {
            problems.push(Problem {
                severity: Severity::Error,
                key: dotted,
                source: Source::Env(var.clone()),
                value: None,
                message: "the variable name has an empty key segment".to_owned(),
                fix: "name it FINCODE_SIDECAR__<SECTION>__<KEY>, with a double underscore \
                      between non-empty parts, e.g. FINCODE_SIDECAR__UPSTREAM__BASE_URL"
                    .to_owned(),
            });
            continue;
        }
        let value = raw
            .parse::<Value>()
            .unwrap_or_else(|_| Value::String(raw.clone()));
        if let Err(blocked_at) = insert_at(root, &path, value) {
            problems.push(Problem {
                severity: Severity::Error,
                key: dotted,
                source: Source::Env(var.clone()),
                value: None,
                message: format!("cannot set a key inside `{blocked_at}`, which is not a table"),
                fix: format!("remove {var}, or the value it is trying to go inside"),
            });
            continue;
        }
        origins.by_key.insert(
            dotted,
            Origin {
                var: var.clone(),
                raw: raw.clone(),
            },
        );
    }
    origins
}

/// Inserts `value` at `path`, creating tables on the way. On failure, returns the dotted key of
/// the non-table value that is in the way.
fn insert_at(root: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut table = root;
    for (depth, segment) in parents.iter().enumerate() {
        let entry = table
            .entry(segment.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        table = match entry {
            Value::Table(inner) => inner,
            _ => return Err(path[..=depth].join(".")),
        };
    }
    table.insert(last.clone(), value);
    Ok(())
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}
