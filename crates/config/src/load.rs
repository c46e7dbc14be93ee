//! Turning TOML text plus the environment into a [`Config`], collecting every problem on the way.
//!
//! The file is parsed into a `toml::Table` and the env overlay written into it. The schema's
//! derived `Deserialize` then reads the table through [`ValueDe`], whose errors carry their
//! key. Each error becomes a problem, the offending value is taken out of the table (so its
//! default stands in) and the table is read again, until it reads: one pass over the file
//! finds every bad value. Unknown keys get a suggestion (or, when they look like a secret,
//! are refused as one); then the rules that span keys run on the result (`rules.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;

use serde::Deserialize as _;
use toml::{Table, Value};

use crate::de::{Expect, FieldError, Kind, Seg, ValueDe, dotted};
use crate::env::{Env, Origins, apply_overlay};
use crate::problem::{ConfigError, Problem, Severity};
use crate::schema::{
    CREATE_TRANSACTION_ROUTE, Config, EXAMPLE_BASE_URL, ListenersConfig, default_extra_headers,
};
use crate::secrets::is_secret_key;
use crate::types::Refusal;

/// Echoed values are cut to this many characters; a config value longer than that is not
/// something a human needs to see in full.
const MAX_ECHO_CHARS: usize = 120;

// === impl Config ===

impl Config {
    /// Reads the TOML file at `path`, overlays `FINCODE_SIDECAR__*` variables from `env` and
    /// validates the result.
    ///
    /// Returns the configuration with its warnings, or every problem found at once.
    pub fn load(path: &Path, env: &Env) -> Result<(Config, Vec<Problem>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, env).map_err(|err| match err {
            ConfigError::Syntax {
                line,
                column,
                message,
                ..
            } => ConfigError::Syntax {
                path: Some(path.to_owned()),
                line,
                column,
                message,
            },
            other => other,
        })
    }

    /// Like [`Config::load`], from TOML text already in memory.
    pub fn from_toml_str(text: &str, env: &Env) -> Result<(Config, Vec<Problem>), ConfigError> {
        let mut root: Table = text.parse().map_err(|err| syntax_error(text, &err))?;
        seed_extra_headers(&mut root);
        let mut problems = Vec::new();
        let origins = apply_overlay(&mut root, env, &mut problems);
        seed_listener_defaults(&mut root);
        let mut report = Report {
            origins,
            problems: problems.into_iter().map(|p| (Phase::Overlay, p)).collect(),
            phase: Phase::Value,
        };
        report.require_base_url(&root);
        let store_given: Vec<String> = match root.get("store") {
            Some(Value::Table(store)) => store.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let mut config = report.read(root);
        report.phase = Phase::Rule;
        report.check(&mut config, &store_given);
        let problems = report.sorted();
        if problems.iter().any(Problem::is_error) {
            Err(ConfigError::Invalid { problems })
        } else {
            Ok((config, problems))
        }
    }

    /// The configuration as a TOML file that [`Config::load`] reads back to an equal `Config`.
    pub fn to_toml_string(&self) -> String {
        // Every field is a string, bool, i64-range integer or string map, all of which TOML can
        // hold, so this cannot fail; if it ever did, the comment makes the file fail to load
        // (no base_url) with the reason visible, rather than crashing the caller.
        toml::to_string(self)
            .unwrap_or_else(|err| format!("# fincode-sidecar could not write this config: {err}\n"))
    }

    /// The dotted keys whose values differ between `self` and `other`, sorted: what a
    /// reload changes. Names only, never values. A key set in one and unset in the other
    /// counts as changed; map entries are named `section.map."entry"`.
    pub fn changed_keys(&self, other: &Config) -> Vec<String> {
        let (Ok(old), Ok(new)) = (toml::Value::try_from(self), toml::Value::try_from(other)) else {
            // Cannot happen (see `to_toml_string`); claim everything changed rather than nothing.
            return vec![String::new()];
        };
        let mut changed = Vec::new();
        diff_keys(String::new(), Some(&old), Some(&new), &mut changed);
        changed.sort();
        changed
    }
}

/// Appends to `out` every leaf key under `prefix` that differs between `old` and `new`.
fn diff_keys(
    prefix: String,
    old: Option<&toml::Value>,
    new: Option<&toml::Value>,
    out: &mut Vec<String>,
) {
    use toml::Value::Table;
    match (old, new) {
        (Some(Table(old)), Some(Table(new))) => {
            let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
            for key in keys {
                let name = if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    key.clone()
                } else {
                    format!("{key:?}")
                };
                let path = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}.{name}")
                };
                diff_keys(path, old.get(key), new.get(key), out);
            }
        }
        (old, new) if old == new => {}
        _ => out.push(prefix),
    }
}

/// Every dotted key the schema knows (sections included), in schema order.
///
/// Learnt from the derived `Deserialize` itself, so the list cannot drift from what is read:
/// a struct with `deny_unknown_fields` offered a key it cannot have answers with its fields.
pub(crate) fn known_keys() -> &'static [String] {
    static KNOWN: OnceLock<Vec<String>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut known = Vec::new();
        walk(&mut Vec::new(), &mut known);
        known
    })
}

fn walk(path: &mut Vec<String>, known: &mut Vec<String>) {
    const PROBE: &str = "\u{0}";
    let mut value = Value::Table(Table::from_iter([(PROBE.to_owned(), Value::Boolean(true))]));
    for key in path.iter().rev() {
        value = Value::Table(Table::from_iter([(key.clone(), value)]));
    }
    let Err(FieldError {
        path: Some(at),
        kind: Kind::UnknownField { field, expected },
    }) = Config::deserialize(ValueDe::root(value))
    else {
        return;
    };
    if field != PROBE || at.len() != path.len() {
        return;
    }
    for key in expected {
        path.push((*key).to_owned());
        known.push(path.join("."));
        walk(path, known);
        path.pop();
    }
}

/// When a problem was found, which orders problems within a section: the overlay's own,
/// then bad values in schema order, then unknown keys, then the rules that span keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Overlay,
    Value,
    Unknown,
    Rule,
}

/// The problems found so far, and where each key's value came from.
pub(crate) struct Report {
    origins: Origins,
    problems: Vec<(Phase, Problem)>,
    phase: Phase,
}

// === impl Report ===

impl Report {
    /// `upstream.base_url` has no default: there is no sensible default tenant.
    fn require_base_url(&mut self, root: &Table) {
        let given = match root.get("upstream") {
            Some(Value::Table(upstream)) => upstream.contains_key("base_url"),
            _ => false,
        };
        if !given {
            self.report(
                Severity::Error,
                "upstream.base_url",
                None,
                "missing required key",
                format!(
                    "add base_url = \"{EXAMPLE_BASE_URL}\" under [upstream] (or set \
                     FINCODE_SIDECAR__UPSTREAM__BASE_URL)"
                ),
            );
        }
    }

    /// Reads `root` into a [`Config`], reporting each value it cannot read and reading
    /// again without it, until it reads.
    fn read(&mut self, mut root: Table) -> Config {
        // Lists with a bad item: read as absent once every item has been checked, so the
        // rules see the default rather than what is left of the list.
        let mut spoiled: Vec<Vec<Seg>> = Vec::new();
        // The original indices of the items taken out of each list, to name later ones.
        let mut taken: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        // Keys already refused (a required one taken out is then missing, which says
        // nothing new), and env values being read again as plain strings, with the refusal
        // of their first reading (the one to report if the second fails too).
        let mut refused: BTreeSet<String> = BTreeSet::new();
        let mut retried: BTreeMap<String, (Value, Refusal)> = BTreeMap::new();
        loop {
            let error = match Config::deserialize(ValueDe::root(Value::Table(root.clone()))) {
                Ok(config) if spoiled.is_empty() => return config,
                Ok(_) => {
                    for list in spoiled.drain(..) {
                        take(&mut root, &list);
                    }
                    continue;
                }
                Err(error) => error,
            };
            let path = error.path.unwrap_or_default();
            let removed = match error.kind {
                Kind::UnknownField { field, expected } => {
                    let mut at = path.clone();
                    at.push(Seg::Key(field));
                    let value = take(&mut root, &at);
                    if let Some(value) = &value {
                        let near = expected.iter().map(|f| format!("{}.{f}", dotted(&path)));
                        self.report_unknown(&dotted(&at), value, near.collect());
                    }
                    value
                }
                Kind::MissingField(field) => {
                    let key = format!("{}.{field}", dotted(&path));
                    if refused.contains(&key) {
                        take(&mut root, &path);
                        continue;
                    }
                    // Only a route limit has a required key of its own: its rate.
                    self.report(
                        Severity::Error,
                        &key,
                        None,
                        "missing required key: a route limit needs its rate",
                        format!(
                            "add {field} = 20 to the route's table (burst is optional and \
                             defaults to per_second)"
                        ),
                    );
                    take(&mut root, &path)
                }
                kind => {
                    let key = dotted(&path);
                    let mut value = get(&root, &path).cloned();
                    let mut refusal = refusal(kind, &key);
                    // An env value that read as TOML of the wrong type may be meant as a
                    // string (`FINCODE_SIDECAR__LOG__LEVEL=inf`): give the raw text a second
                    // chance.
                    if let Some((original, first)) = retried.remove(&key) {
                        (value, refusal) = (Some(original), first);
                    } else if let (Some(raw), Some(typed)) = (self.origins.raw_of(&key), &value)
                        && !typed.is_str()
                    {
                        let raw = Value::String(raw.to_owned());
                        set(&mut root, &path, raw);
                        retried.insert(key, (typed.clone(), refusal));
                        continue;
                    }
                    if let Some((Seg::Index(index), list)) = path.split_last() {
                        let list_key = dotted(list);
                        let gone = taken.entry(list_key.clone()).or_default();
                        let original = original_index(*index, gone);
                        gone.push(original);
                        let key = format!("{list_key}[{original}]");
                        self.refuse(&key, value.as_ref(), refusal);
                        refused.insert(key);
                        spoiled.push(list.to_vec());
                        remove_item(&mut root, list, *index)
                    } else {
                        self.refuse(&key, value.as_ref(), refusal);
                        refused.insert(key);
                        take(&mut root, &path)
                    }
                }
            };
            if removed.is_none() {
                // Nothing left to take out: cannot happen for a schema of tables, but never
                // loop on it. The problem is reported, so the defaults are never used.
                return Config::with_base_url(http::Uri::from_static(EXAMPLE_BASE_URL));
            }
        }
    }

    /// Errors first, then grouped by section in schema order (unknown sections last), so
    /// the report reads like the file; within a section by [`Phase`], bad values in schema
    /// order, the rest in the order found.
    fn sorted(self) -> Vec<Problem> {
        let known = known_keys();
        let sections: Vec<&str> = known
            .iter()
            .filter(|k| !k.contains('.'))
            .map(String::as_str)
            .collect();
        let mut problems = self.problems;
        problems.sort_by_key(|(phase, p)| {
            let section = p.key.split('.').next().unwrap_or_default();
            let rank = sections
                .iter()
                .position(|s| *s == section)
                .unwrap_or(sections.len());
            let position = if *phase == Phase::Value {
                schema_position(&p.key, known)
            } else {
                0
            };
            (p.severity, rank, *phase, position)
        });
        problems.into_iter().map(|(_, p)| p).collect()
    }

    pub(crate) fn report(
        &mut self,
        severity: Severity,
        key: &str,
        value: Option<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        // A list item (`webhooks.allow_ips[2]`) comes from wherever its list did. Only item
        // keys end in ']': TOML keys holding brackets are quoted, so they end in '"'.
        let source_key = key
            .strip_suffix(']')
            .and_then(|k| k.rsplit_once('['))
            .map_or(key, |(list, _)| list);
        let problem = Problem {
            severity,
            key: key.to_owned(),
            source: self.origins.source_of(source_key),
            value,
            message: message.into(),
            fix: fix.into(),
        };
        self.problems.push((self.phase, problem));
    }

    fn refuse(&mut self, key: &str, value: Option<&Value>, refusal: Refusal) {
        let shown = value.filter(|_| refusal.echo).and_then(echo);
        self.report(Severity::Error, key, shown, refusal.message, refusal.fix);
    }

    /// A key the schema does not have. Secret-looking names are refused as secrets (the worse
    /// mistake); others get a "did you mean" among the known keys and `near` (the keys its
    /// own table may have). Values are never echoed: they could be anything.
    fn report_unknown(&mut self, dotted: &str, value: &Value, near: Vec<String>) {
        let phase = std::mem::replace(&mut self.phase, Phase::Unknown);
        let leaf = dotted.rsplit('.').next().unwrap_or(dotted);
        if is_secret_key(leaf) {
            self.refuse_secret(dotted);
        } else {
            for nested in secret_keys_within(dotted, value) {
                self.refuse_secret(&nested);
            }
            let what = if dotted.contains('.') || !value.is_table() {
                "key"
            } else {
                "section"
            };
            let mut candidates = known_keys().to_vec();
            candidates.extend(near);
            let (message, fix) = match suggest(dotted, &candidates) {
                Some(known) => (
                    format!("unknown {what}; did you mean `{known}`?"),
                    format!("rename it to `{known}`"),
                ),
                None => (
                    format!("unknown {what}"),
                    "remove it; config.example.toml documents every key".to_owned(),
                ),
            };
            self.report(Severity::Error, dotted, None, message, fix);
        }
        self.phase = phase;
    }

    fn refuse_secret(&mut self, dotted: &str) {
        let section = dotted.split_once('.').map(|(section, _)| section);
        let tailored = format!("{dotted}_env");
        let fix = if known_keys().contains(&tailored) {
            format!(
                "put the value in an environment variable and name it: set {tailored} = \"{}\"",
                suggested_var(&tailored)
            )
        } else if section == Some("auth") {
            "put the value in an environment variable and name it: set auth.token_env = \
             \"FINCODE_API_TOKEN\""
                .to_owned()
        } else {
            "remove it; secrets come from environment variables named by *_env keys (for the \
             FinCode API token: set auth.token_env = \"FINCODE_API_TOKEN\")"
                .to_owned()
        };
        self.report(
            Severity::Error,
            dotted,
            None,
            "secrets are never written in the config file",
            fix,
        );
    }
}

/// What to tell the operator about a value the schema could not read.
fn refusal(kind: Kind, key: &str) -> Refusal {
    const WHOLE_NUMBER: &str = "write a whole number without quotes, e.g. 64";
    match kind {
        Kind::Refused(refusal) => refusal,
        Kind::WrongType { found, expected } => match expected {
            Expect::Bool => Refusal::new(
                format!("expected true or false, found {found}"),
                "write true or false, without quotes",
            ),
            Expect::Str => Refusal::new(
                format!("expected a string, found {found}"),
                "write the value in double quotes",
            ),
            Expect::Integer => Refusal::new(
                format!("expected a non-negative integer, found {found}"),
                WHOLE_NUMBER,
            ),
            Expect::Float => Refusal::new(
                format!("expected a number, found {found}"),
                "write a number without quotes, e.g. 0.5",
            ),
            Expect::List => Refusal::new(
                format!("expected a list, found {found}"),
                "write it as a list in square brackets, each item in quotes: [\"a\", \"b\"]",
            ),
            Expect::Table => table_refusal(key),
            Expect::Other => Refusal::new(
                format!("found {found}, which this key cannot hold"),
                "see config.example.toml, which documents every key",
            ),
        },
        Kind::OutOfRange { n, .. } if n < 0 => Refusal::new(
            "expected a non-negative integer, found a negative integer",
            WHOLE_NUMBER,
        ),
        Kind::OutOfRange { expected, .. } => {
            let max = match expected.as_str() {
                "u8" => u64::from(u8::MAX),
                "u16" => u64::from(u16::MAX),
                "u32" => u64::from(u32::MAX),
                _ => u64::MAX,
            };
            Refusal::new(format!("must be at most {max}"), "use a smaller number")
        }
        Kind::Choice { found, variants } => {
            let quoted: Vec<String> = variants.iter().map(|v| format!("\"{v}\"")).collect();
            let choices = match quoted.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            };
            let leaf = key.rsplit('.').next().unwrap_or(key);
            Refusal::new(
                format!("expected {choices}, found {found}"),
                format!(
                    "set {leaf} = {} or another of those, in quotes",
                    quoted.first().map_or("\"\"", String::as_str)
                ),
            )
        }
        Kind::UnknownField { .. } | Kind::MissingField(_) => Refusal::new(
            "cannot be read",
            "see config.example.toml, which documents every key",
        ),
    }
}

/// A table was expected: the fix says how to write the one at `key`.
fn table_refusal(key: &str) -> Refusal {
    match key {
        "auth.extra_headers" => Refusal::new(
            "expected a table of header names to string values",
            "write it as extra_headers = { platform = \"fincode\" }",
        )
        .hiding_value(),
        "rate_limit.routes" => Refusal::new(
            "expected a table of route templates to limits",
            format!(
                "write it as a [rate_limit.routes] section with lines such as \
                 \"{CREATE_TRANSACTION_ROUTE}\" = {{ per_second = 20, burst = 40 }}"
            ),
        )
        .hiding_value(),
        _ => match key.strip_prefix("rate_limit.routes.") {
            Some(route) => Refusal::new(
                "expected a table with per_second and (optionally) burst",
                format!("write it as {route} = {{ per_second = 20, burst = 40 }}"),
            ),
            None => Refusal::new("expected a table", format!("write it as a [{key}] section"))
                .hiding_value(),
        },
    }
}

/// Where a bad value's key sits in the schema: its own place, or its list's or map's.
fn schema_position(key: &str, known: &[String]) -> usize {
    let mut key = key;
    loop {
        if let Some(position) = known.iter().position(|k| k == key) {
            return position;
        }
        match key.rfind(['.', '[']) {
            Some(cut) => key = &key[..cut],
            None => return known.len(),
        }
    }
}

/// The index an item had in the list as written, given those already taken out of it.
fn original_index(index: usize, taken: &[usize]) -> usize {
    let mut sorted = taken.to_vec();
    sorted.sort_unstable();
    sorted.into_iter().fold(index, |original, gone| {
        original + usize::from(gone <= original)
    })
}

fn get<'v>(root: &'v Table, path: &[Seg]) -> Option<&'v Value> {
    let (Seg::Key(first), rest) = path.split_first()? else {
        return None;
    };
    rest.iter()
        .try_fold(root.get(first)?, |value, seg| match seg {
            Seg::Key(key) => value.as_table()?.get(key),
            Seg::Index(index) => value.as_array()?.get(*index),
        })
}

fn get_mut<'v>(root: &'v mut Table, path: &[Seg]) -> Option<&'v mut Value> {
    let (Seg::Key(first), rest) = path.split_first()? else {
        return None;
    };
    rest.iter()
        .try_fold(root.get_mut(first)?, |value, seg| match seg {
            Seg::Key(key) => value.as_table_mut()?.get_mut(key),
            Seg::Index(index) => value.as_array_mut()?.get_mut(*index),
        })
}

/// Takes the value at `path` (a table entry) out of `root`.
fn take(root: &mut Table, path: &[Seg]) -> Option<Value> {
    match path.split_last()? {
        (Seg::Key(key), []) => root.remove(key),
        (Seg::Key(key), parent) => get_mut(root, parent)?.as_table_mut()?.remove(key),
        (Seg::Index(index), list) => remove_item(root, list, *index),
    }
}

fn remove_item(root: &mut Table, list: &[Seg], index: usize) -> Option<Value> {
    let items = get_mut(root, list)?.as_array_mut()?;
    (index < items.len()).then(|| items.remove(index))
}

fn set(root: &mut Table, path: &[Seg], value: Value) {
    if let Some(slot) = get_mut(root, path) {
        *slot = value;
    }
}

/// Fills each `[listeners.*]` table the file gives with that listener's own defaults: the
/// three share one type, whose `Default` only knows the webhook listener's.
fn seed_listener_defaults(root: &mut Table) {
    let Some(Value::Table(listeners)) = root.get_mut("listeners") else {
        return;
    };
    let Ok(Value::Table(defaults)) = Value::try_from(ListenersConfig::default()) else {
        return;
    };
    for (name, defaults) in defaults {
        if let (Some(Value::Table(given)), Value::Table(defaults)) =
            (listeners.get_mut(&name), defaults)
        {
            for (key, value) in defaults {
                given.entry(key).or_insert(value);
            }
        }
    }
}

/// Makes the default `extra_headers` explicit before the overlay, so that
/// `FINCODE_SIDECAR__AUTH__EXTRA_HEADERS__X=...` adds to the defaults instead of replacing them.
fn seed_extra_headers(root: &mut Table) {
    let auth = root
        .entry("auth")
        .or_insert_with(|| Value::Table(Table::new()));
    if let Value::Table(auth) = auth {
        auth.entry("extra_headers").or_insert_with(|| {
            Value::Table(
                default_extra_headers()
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            )
        });
    }
}

/// Builds the syntax error from the parser's message and span only. toml's own `Display` quotes
/// the offending line, which could be `password = "..."`.
fn syntax_error(text: &str, err: &toml::de::Error) -> ConfigError {
    let offset = err.span().map_or(0, |span| span.start).min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    ConfigError::Syntax {
        path: None,
        line,
        column,
        message: err.message().trim().replace('\n', "; "),
    }
}

// --- helpers ---

/// The value as TOML for a problem message: scalars only (a table or array could hold
/// anything), cut to a readable length.
fn echo(value: &Value) -> Option<String> {
    if matches!(value, Value::Table(_) | Value::Array(_)) {
        return None;
    }
    let text = value.to_string();
    Some(if text.chars().count() > MAX_ECHO_CHARS {
        format!(
            "{}...",
            text.chars().take(MAX_ECHO_CHARS).collect::<String>()
        )
    } else {
        text
    })
}

pub(crate) fn toml_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

pub(crate) fn toml_duration(duration: std::time::Duration) -> String {
    toml_string(&humantime::format_duration(duration).to_string())
}

/// Secret-looking keys anywhere inside an unknown table (or array of tables).
fn secret_keys_within(dotted: &str, value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    match value {
        Value::Table(table) => {
            for (key, inner) in table {
                let nested = format!("{dotted}.{key}");
                if is_secret_key(key) {
                    found.push(nested);
                } else {
                    found.extend(secret_keys_within(&nested, inner));
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                found.extend(secret_keys_within(dotted, item));
            }
        }
        _ => {}
    }
    found
}

/// `auth.token_env` -> `FINCODE_API_TOKEN`; otherwise `FINCODE_<KEY>` from the key's leaf.
fn suggested_var(env_key: &str) -> String {
    if env_key == "auth.token_env" {
        return "FINCODE_API_TOKEN".to_owned();
    }
    let leaf = env_key.rsplit('.').next().unwrap_or(env_key);
    format!(
        "FINCODE_{}",
        leaf.trim_end_matches("_env").to_ascii_uppercase()
    )
}

/// The known key nearest to an unknown one, if it is near enough to be a typo: compares the
/// last path segment (so `[listen] base_url` finds `upstream.base_url`), preferring the same
/// section on ties. Edits are counted as insertions, deletions, substitutions and swaps of
/// neighbouring letters (`burts` for `burst`, the commonest typo), each one edit.
pub(crate) fn suggest(unknown: &str, known: &[String]) -> Option<String> {
    let (section, leaf) = unknown.rsplit_once('.').unwrap_or(("", unknown));
    let leaf = leaf.to_ascii_lowercase();
    let threshold = (leaf.chars().count() / 3).max(1);
    known
        .iter()
        .filter(|k| k.contains('.') == unknown.contains('.') || !unknown.contains('.'))
        .map(|k| {
            let (k_section, k_leaf) = k.rsplit_once('.').unwrap_or(("", k));
            (strsim::osa_distance(&leaf, k_leaf), k_section != section, k)
        })
        .filter(|(distance, _, _)| *distance <= threshold)
        .min_by_key(|(distance, other_section, _)| (*distance, *other_section))
        .map(|(_, _, k)| k.clone())
}
