//! Conversions between the API's types and the columns: times as unix milliseconds,
//! headers as a length-prefixed blob (both backends), rows as [`StoredEvent`]s (SQLite's;
//! Postgres decodes its own).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::Row;
use rusqlite::types::Type;

use crate::{NewEvent, Status, StoreError, StoredEvent};

/// An event ready to insert, encoded by the caller (off SQLite's writer thread, before
/// Postgres's round trip), as both backends store it.
pub(crate) struct InsertRow {
    /// The event's UUIDv7, minted here: see [`StoredEvent::uid`].
    pub(crate) uid: uuid::Uuid,
    pub(crate) dedupe_key: String,
    pub(crate) order_key: Option<String>,
    pub(crate) correlation_id: String,
    pub(crate) body: Bytes,
    /// [`encode_headers`]'s blob.
    pub(crate) headers: Vec<u8>,
    /// Unix milliseconds.
    pub(crate) received_at: i64,
}

// === impl InsertRow ===

impl InsertRow {
    /// Mints `event`'s uid and encodes it; fails only on a header over 4 GiB.
    pub(crate) fn new(event: NewEvent) -> Result<Self, StoreError> {
        Ok(Self {
            uid: uuid::Uuid::now_v7(),
            headers: encode_headers(&event.headers)?,
            received_at: to_millis(event.received_at),
            dedupe_key: event.dedupe_key,
            order_key: event.order_key,
            correlation_id: event.correlation_id,
            body: event.body,
        })
    }
}

/// `t` as unix milliseconds (negative before 1970), saturating far outside that range.
pub(crate) fn to_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// The inverse of [`to_millis`].
pub(crate) fn from_millis(ms: i64) -> SystemTime {
    let offset = Duration::from_millis(ms.unsigned_abs());
    let shifted = if ms >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    };
    // Only a corrupt row can hold a time SystemTime cannot represent; the epoch is a
    // harmless stand-in (the event is simply due).
    shifted.unwrap_or(UNIX_EPOCH)
}

/// `start + by` in milliseconds, saturating.
pub(crate) fn add_millis(start: i64, by: Duration) -> i64 {
    start.saturating_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX))
}

/// A `LIMIT` (SQL's is a signed 64-bit integer): `limit`, or no limit in effect when it
/// does not fit.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Headers as `(u32 LE length, bytes)` for each name and value in turn. A blob rather
/// than JSON text: no escaping, no JSON dependency, and order and duplicates are kept.
pub(crate) fn encode_headers(headers: &[(String, String)]) -> Result<Vec<u8>, StoreError> {
    let size = headers.iter().map(|(n, v)| 8 + n.len() + v.len()).sum();
    let mut out = Vec::with_capacity(size);
    for text in headers.iter().flat_map(|(n, v)| [n, v]) {
        let len = u32::try_from(text.len()).map_err(|error| {
            StoreError::io("insert", "a header is larger than 4 GiB").caused_by(error)
        })?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    Ok(out)
}

/// The inverse of [`encode_headers`]; `None` for a blob it did not write.
pub(crate) fn decode_headers(mut blob: &[u8]) -> Option<Vec<(String, String)>> {
    fn next_text(blob: &mut &[u8]) -> Option<String> {
        let (len, rest) = blob.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        if rest.len() < len {
            return None;
        }
        let (text, rest) = rest.split_at(len);
        *blob = rest;
        String::from_utf8(text.to_vec()).ok()
    }

    let mut headers = Vec::new();
    while !blob.is_empty() {
        let name = next_text(&mut blob)?;
        let value = next_text(&mut blob)?;
        headers.push((name, value));
    }
    Some(headers)
}

/// A row selected with `event_columns!()`.
pub(super) fn event_from_row(row: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    let corrupt = |index: usize, kind: Type, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(index, kind, format!("corrupt {what}").into())
    };
    let headers: Vec<u8> = row.get(5)?;
    let status: String = row.get(7)?;
    let attempts: i64 = row.get(8)?;
    let uid: String = row.get(11)?;
    Ok(StoredEvent {
        id: row.get(0)?,
        uid: uuid::Uuid::parse_str(&uid).map_err(|_| corrupt(11, Type::Text, "uid"))?,
        dedupe_key: row.get(1)?,
        order_key: row.get(2)?,
        correlation_id: row.get(3)?,
        body: Bytes::from(row.get::<_, Vec<u8>>(4)?),
        headers: decode_headers(&headers).ok_or_else(|| corrupt(5, Type::Blob, "headers"))?,
        received_at: from_millis(row.get(6)?),
        pending_since: from_millis(row.get(12)?),
        status: Status::parse(&status).ok_or_else(|| corrupt(7, Type::Text, "status"))?,
        attempts: u32::try_from(attempts).map_err(|_| corrupt(8, Type::Integer, "attempts"))?,
        next_attempt_at: from_millis(row.get(9)?),
        last_error: row.get(10)?,
    })
}

/// A failed read or write, naming the operation and SQLite's reason (which names
/// tables and columns, never values).
pub(super) fn io_error(operation: &'static str, error: rusqlite::Error) -> StoreError {
    StoreError::io(operation, error.to_string()).caused_by(error)
}
