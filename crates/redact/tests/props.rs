//! Property tests: no generated card number or secret survives redaction, valid JSON
//! stays valid JSON, and no control character ever comes out of the text rules.
#![allow(clippy::unwrap_used)]

use fincode_redact::Redactor;
use proptest::prelude::*;
use serde_json::Value;

/// A Luhn-valid card number of 13 to 19 digits.
fn pan() -> impl Strategy<Value = String> {
    prop::collection::vec(0u8..10, 12..=18).prop_map(|body| {
        let mut digits: Vec<u8> = body;
        // The check digit that makes the whole number pass Luhn.
        let sum: u32 = digits
            .iter()
            .rev()
            .enumerate()
            .map(|(i, d)| {
                let d = u32::from(*d);
                if i % 2 == 0 {
                    let v = d * 2;
                    if v > 9 { v - 9 } else { v }
                } else {
                    d
                }
            })
            .sum();
        digits.push(((10 - sum % 10) % 10) as u8);
        digits.iter().map(|d| char::from(b'0' + d)).collect()
    })
}

/// The PAN must appear only as first 6 / last 4 with the middle starred out.
fn leaks(output: &str, pan: &str) -> bool {
    let n = pan.len();
    let masked = format!("{}{}{}", &pan[..6], "*".repeat(n - 10), &pan[n - 4..]);
    output.contains(pan) || !output.contains(&masked)
}

/// Keys whose values the default rules drop, in assorted spellings.
const DROP_KEYS: &[&str] = &[
    "password",
    "currentPassword",
    "NEW_PASSWORD",
    "refresh_token",
    "refreshToken",
    "Access-Token",
    "token",
    "pin",
    "transactionPin",
    "cvv",
    "otp",
    "clientSecret",
    "apiKey",
    "dateOfBirth",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".*".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".*", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON the rules have nothing to say about: short keys no rule matches, plain strings
/// (with quotes, backslashes, slashes and non-ASCII to exercise escaping), small numbers.
fn harmless_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[a-zA-Z \"\\\\/é日]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("k[a-z]{0,3}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn harmless_json_passes_through_unchanged(value in harmless_json(), pretty in any::<bool>()) {
        let input = if pretty {
            serde_json::to_string_pretty(&value).unwrap()
        } else {
            value.to_string()
        };
        let out = Redactor::default().json(input.as_bytes());
        // Compared with the input as serde_json reads it: its float parsing is not exact.
        let parsed: Value = serde_json::from_str(&out).unwrap();
        prop_assert_eq!(parsed, serde_json::from_str::<Value>(&input).unwrap());
    }

    #[test]
    fn no_pan_survives_in_text(pan in pan(), before in "[a-z :,]{0,20}", after in "[a-z :,.]{0,20}", sep in prop_oneof![Just(""), Just(" "), Just("-")]) {
        let grouped: String = pan
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(sep);
        let text = format!("{before}{grouped}{after}");
        let out = Redactor::default().text(&text).into_owned();
        prop_assert!(!leaks(&out, &pan), "{text:?} -> {out:?}");
    }

    #[test]
    fn no_pan_survives_in_json(pan in pan(), key in "[a-zA-Z]{1,12}", as_number in any::<bool>()) {
        // A number cannot keep leading zeros (and then it is not that card number).
        let value = if as_number && !pan.starts_with('0') && pan.parse::<u64>().is_ok() {
            serde_json::json!({ "data": [{ key.clone(): pan.parse::<u64>().unwrap() }] })
        } else {
            serde_json::json!({ "data": [{ key.clone(): format!("card {pan}") }] })
        };
        let out = Redactor::default().json(value.to_string().as_bytes());
        // A random key may be one whose value is dropped outright (`cvv`, `pin`...):
        // then no masked form remains either, and that is no leak.
        let dropped = !out.contains(&pan[pan.len() - 4..]) && out.contains(fincode_redact::REDACTED);
        prop_assert!(dropped || !leaks(&out, &pan), "{value} -> {out}");
        prop_assert!(!out.contains(&pan), "{value} -> {out}");
    }

    #[test]
    fn no_secret_survives_under_a_sensitive_key(
        secret in "[A-Za-z0-9]{12,40}",
        key in prop::sample::select(DROP_KEYS),
        depth in 0usize..4,
    ) {
        let mut value = serde_json::json!({ key: secret.clone(), "ok": "visible" });
        for _ in 0..depth {
            value = serde_json::json!({ "nested": [value] });
        }
        let out = Redactor::default().json(value.to_string().as_bytes());
        prop_assert!(!out.contains(&secret), "{value} -> {out}");
        prop_assert!(out.contains("visible"));
    }

    #[test]
    fn valid_json_stays_valid_json(value in json_value()) {
        let out = Redactor::default().json(value.to_string().as_bytes());
        let parsed: Result<Value, _> = serde_json::from_str(&out);
        prop_assert!(parsed.is_ok(), "{value} -> {out}");
    }

    #[test]
    fn text_never_emits_a_control_character(text in any::<String>()) {
        let out = Redactor::default().text(&text);
        prop_assert!(!out.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}'), "{text:?} -> {out:?}");
    }

    #[test]
    fn urls_never_emit_a_control_character(path in any::<String>()) {
        let out = Redactor::default().url(&path);
        prop_assert!(!out.chars().any(char::is_control), "{path:?} -> {out:?}");
    }
}
