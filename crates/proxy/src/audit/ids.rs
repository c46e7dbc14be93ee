//! Finding resource ids in a JSON body without building it: a serde visitor walks the top
//! level and the `data` object, keeps the few ids it knows, and skips everything else
//! unparsed into any tree (a 500-byte FinCode answer costs a scan, not a `Value`).

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

/// What a body said: the ids found, and what FinCode's envelope reports.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) ids: Vec<(&'static str, String)>,
    /// `"status"` present and not `"SUCCESS"`.
    pub(crate) failed: bool,
    /// `"status": "SUCCESS"` in a body that is whole, valid JSON: FinCode's business
    /// success, which the telemetry layer counts for create-transaction.
    pub(crate) succeeded: bool,
}

/// Scans `body` (a request's when `response` is false). Anything that is not a JSON
/// object gives nothing; a body that breaks off keeps what was found before the break.
pub(crate) fn scan(body: &[u8], response: bool) -> Found {
    let mut found = Found::default();
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return found;
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let whole = deserializer
        .deserialize_map(Level {
            found: &mut found,
            response,
            data: false,
        })
        .and_then(|()| deserializer.end())
        .is_ok();
    found.succeeded = whole && found.succeeded;
    found
}

/// A key the scan cares about, read without allocating.
enum Key {
    Id(&'static str),
    /// `id` inside a response's `data`: the transaction's id.
    DataId,
    Status,
    Data,
    Other,
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(classify(key))
    }
}

struct KeySeed;

impl<'de> de::DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Keys compare case-insensitively with `_` and `-` ignored, as the redactor's do.
fn classify(key: &str) -> Key {
    let mut normal = [0_u8; 16];
    let mut len = 0;
    for byte in key.bytes().filter(|b| *b != b'_' && *b != b'-') {
        if len == normal.len() {
            return Key::Other;
        }
        normal[len] = byte.to_ascii_lowercase();
        len += 1;
    }
    match &normal[..len] {
        b"transactionid" => Key::Id("transaction_id"),
        b"reference" => Key::Id("reference"),
        b"customercode" | b"customerid" => Key::Id("customer_code"),
        b"id" => Key::DataId,
        b"status" => Key::Status,
        b"data" => Key::Data,
        _ => Key::Other,
    }
}

/// One object level: the top, or `data`.
struct Level<'a> {
    found: &'a mut Found,
    response: bool,
    data: bool,
}

impl<'de> Visitor<'de> for Level<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let name = match key {
                Key::Id(name) => name,
                Key::DataId if self.data && self.response => "transaction_id",
                Key::Status if !self.data && self.response => {
                    if let Some(status) = map.next_value::<Scalar>()?.0 {
                        self.found.failed = status != "SUCCESS";
                        self.found.succeeded = status == "SUCCESS";
                    }
                    continue;
                }
                Key::Data if !self.data => {
                    map.next_value_seed(DataSeed {
                        found: &mut *self.found,
                        response: self.response,
                    })?;
                    continue;
                }
                Key::DataId | Key::Status | Key::Data | Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if let Some(value) = map.next_value::<Scalar>()?.0
                && !self
                    .found
                    .ids
                    .iter()
                    .any(|(n, v)| *n == name && *v == value)
            {
                self.found.ids.push((name, value));
            }
        }
        Ok(())
    }
}

/// `data`: scanned when it is an object, skipped when it is anything else.
struct DataSeed<'a> {
    found: &'a mut Found,
    response: bool,
}

impl<'de> de::DeserializeSeed<'de> for DataSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(AnyData(Level {
            found: self.found,
            response: self.response,
            data: true,
        }))
    }
}

struct AnyData<'a>(Level<'a>);

impl<'de> Visitor<'de> for AnyData<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.visit_map(map)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A string or number id as text; anything else is skipped (`None`).
struct Scalar(Option<String>);

impl<'de> de::Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a number")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Scalar, E> {
        Ok(Scalar(Some(value.to_owned())))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Scalar, E> {
        Ok(Scalar(Some(value.to_string())))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Scalar, E> {
        Ok(Scalar(Some(value.to_string())))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
        Ok(Scalar(None))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar(None))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut found: Found) -> Found {
        found.ids.sort();
        found
    }

    #[test]
    fn ids_come_from_the_top_level_and_data_and_the_envelope_says_failure() {
        let found = sorted(scan(
            br#"{"status":"SUCCESS","data":{"id":"TXN-1","reference":"PCN9","customer_code":42,"amount":5,"nested":{"reference":"no"}}}"#,
            true,
        ));
        assert_eq!(
            found,
            Found {
                ids: vec![
                    ("customer_code", "42".to_owned()),
                    ("reference", "PCN9".to_owned()),
                    ("transaction_id", "TXN-1".to_owned()),
                ],
                failed: false,
                succeeded: true,
            }
        );
        assert!(scan(br#"{"status":"FAILED","code":"X"}"#, true).failed);
        // A request's `id` is not a transaction id, and its `status` says nothing.
        let request = scan(br#"{"id":"1","Reference":"R","status":"NEW"}"#, false);
        assert_eq!(request.ids, [("reference", "R".to_owned())]);
        assert!(!request.failed);
        // Escaped keys and values are read as JSON means them.
        let escaped = scan(br#"{"reference":"P\u0043N1","data":"pong"}"#, true);
        assert_eq!(escaped.ids, [("reference", "PCN1".to_owned())]);
    }

    #[test]
    fn success_needs_the_success_status_in_a_whole_valid_body() {
        assert!(scan(br#" {"status":"SUCCESS","data":{"id":"T"}} "#, true).succeeded);
        for body in [
            &br#"{"status":"FAILED"}"#[..],
            br#"{"data":{"status":"SUCCESS"}}"#,
            br#"{"status":"SUCCESS","data":"#,
            br#"{"status":"SUCCESS"} trailing"#,
            br#"{"message":"ok"}"#,
        ] {
            assert!(!scan(body, true).succeeded, "{body:?}");
        }
    }

    #[test]
    fn anything_else_gives_nothing_and_never_fails() {
        for body in [
            &b"not json"[..],
            b"[1,2]",
            b"",
            b"{",
            b"{\"reference\":",
            b"{\"data\":[{\"id\":1}],\"reference\":{\"x\":1}}",
            b"\"text\"",
        ] {
            let found = scan(body, true);
            assert!(found.ids.is_empty(), "{body:?}: {found:?}");
        }
        // What came before a break is kept.
        let cut = scan(br#"{"reference":"PCN1","data":{"id":"#, true);
        assert_eq!(cut.ids, [("reference", "PCN1".to_owned())]);
    }

    #[test]
    fn the_scan_agrees_with_a_full_parse_on_fincode_shaped_bodies() {
        let body = br#"{"status":"SUCCESS","message":"ok","data":{"id":"TXN-7","reference":"PCN0000000007","customerCode":"C-1","amount":2500,"card":{"first6":"411111"}}}"#;
        let value: serde_json::Value = serde_json::from_slice(body).unwrap();
        let found = scan(body, true);
        assert_eq!(found.ids.len(), 3);
        for (name, id) in &found.ids {
            let key = match *name {
                "transaction_id" => "id",
                "reference" => "reference",
                _ => "customerCode",
            };
            assert_eq!(value["data"][key].as_str(), Some(id.as_str()));
        }
    }
}
