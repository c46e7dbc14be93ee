//! Finding records: by pseudonymised resource id, correlation id and time, straight from
//! the files. This is how a data-subject request is answered: the caller turns the clear
//! id into its pseudonym with the same keyed HMAC the sidecar used, and the trail is read
//! segment by segment, line by line, so a year of it never has to fit in memory.

use std::{
    fs::File,
    io::{self, BufRead, BufReader},
    path::Path,
};

use serde_json::{Map, Value};

use crate::chain::{segment_path, segments};

/// A resource id a record can carry under `resources`, pseudonymised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `transactionId`: `resources.transaction_id`, or the id in the request path.
    TransactionId,
    /// The merchant's order reference: `resources.reference`, or the id in the path.
    Reference,
    /// `resources.customer_code`.
    CustomerCode,
    /// `resources.idempotency_key`.
    IdempotencyKey,
}

// === impl Resource ===

impl Resource {
    /// The `resources` fields that may hold this id. A path segment (`path_id`) can be a
    /// transaction id or a reference: the route alone does not say which, so both match it.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Self::TransactionId => &["transaction_id", "path_id"],
            Self::Reference => &["reference", "path_id"],
            Self::CustomerCode => &["customer_code"],
            Self::IdempotencyKey => &["idempotency_key"],
        }
    }
}

/// What [`find`] looks for. Every filter given must match (AND); a record without the
/// field a filter reads does not match it. An empty query matches every record.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Resource ids, each with its pseudonym (`hmac:...`), never the clear value.
    pub resources: Vec<(Resource, String)>,
    /// The request's correlation id, as recorded (in clear).
    pub correlation_id: Option<String>,
    /// Records at or after this time (`time_ms`, ms since the epoch).
    pub since_ms: Option<u64>,
    /// Records at or before this time.
    pub until_ms: Option<u64>,
}

// === impl Query ===

impl Query {
    /// Whether the parsed record `object` matches.
    fn matches(&self, object: &Map<String, Value>) -> bool {
        let resources = object.get("resources").and_then(Value::as_object);
        let resource_matches = |(resource, pseudonym): &(Resource, String)| {
            resources.is_some_and(|resources| {
                resource.fields().iter().any(|field| {
                    resources.get(*field).and_then(Value::as_str) == Some(pseudonym.as_str())
                })
            })
        };
        let time = object.get("time_ms").and_then(Value::as_u64);
        self.resources.iter().all(resource_matches)
            && self.correlation_id.as_deref().is_none_or(|wanted| {
                object.get("correlation_id").and_then(Value::as_str) == Some(wanted)
            })
            && self
                .since_ms
                .is_none_or(|since| time.is_some_and(|t| t >= since))
            && self
                .until_ms
                .is_none_or(|until| time.is_some_and(|t| t <= until))
    }

    /// Whether `line` can match at all, without parsing it: every id the query names must
    /// appear in its bytes. Most lines of a large trail fail here, cheaply.
    fn may_match(&self, line: &str) -> bool {
        self.resources
            .iter()
            .map(|(_, pseudonym)| pseudonym.as_str())
            .chain(self.correlation_id.as_deref())
            .all(|needle| line.contains(needle))
    }
}

/// Calls `out` with each record in the trail in `dir` that matches `query`, as its raw
/// line (no newline), oldest first; returns how many matched. The chain's own structure
/// (`segment` headers and `checkpoint` lines) is not a record of anything and never
/// matches; `gap`, `recovery` and `retention` records do, by time, since an auditor
/// reading a period must see them. Lines that are not JSON are skipped: telling damage
/// apart is `verify`'s job.
pub fn find(dir: &Path, query: &Query, mut out: impl FnMut(&str)) -> io::Result<u64> {
    let mut matched = 0;
    let mut bytes = Vec::new();
    for number in segments(dir)? {
        let mut reader = BufReader::new(File::open(segment_path(dir, number))?);
        loop {
            bytes.clear();
            if reader.read_until(b'\n', &mut bytes)? == 0 {
                break;
            }
            let Ok(line) = std::str::from_utf8(bytes.trim_ascii_end()) else {
                continue;
            };
            if !query.may_match(line) {
                continue;
            }
            let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let structure = matches!(
                object.get("kind").and_then(Value::as_str),
                Some("segment" | "checkpoint")
            );
            if !structure && query.matches(&object) {
                matched += 1;
                out(line);
            }
        }
    }
    Ok(matched)
}
