//! The audit layer's id scan (a hand-written pass over JSON bytes from FinCode and the app)
//! never panics on any input, and agrees with `serde_json` on its verdict: a body it calls
//! a whole, valid success is valid JSON to `serde_json`, and on every object `serde_json`
//! reads, the verdict is "`status` is SUCCESS" (the key read as the redactor reads keys;
//! with a key repeated, the last wins in both), and FinCode's error `code` it keeps is the
//! one `serde_json` reads from a failed envelope, when it has a code's shape
//! (`^[A-Z][A-Z0-9_]{0,47}$`). The ids it finds are cross-checked against a full parse by
//! the crate's proptest.
#![no_main]

use fincode_proxy::audit::ids::scan;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let found = scan(data, true);
    let parsed = serde_json::from_slice::<Value>(data);
    if found.succeeded {
        assert!(parsed.is_ok(), "a success read from invalid JSON");
    }
    if let Ok(Value::Object(map)) = &parsed {
        // The scan reads keys as the redactor does: case-insensitively, `_` and `-`
        // ignored. With one such `status` key the verdicts must agree; with several
        // spellings of it the scan takes the last in the text, which a map cannot say.
        let statuses: Vec<&Value> = map
            .iter()
            .filter(|(key, _)| normal(key) == "status")
            .map(|(_, value)| value)
            .collect();
        if statuses.len() <= 1 {
            let success = statuses.first().and_then(|v| v.as_str()) == Some("SUCCESS");
            assert_eq!(found.succeeded, success, "the verdict differs from serde_json's");
        }
        // The code, on the same terms: one spelling of `status` and of `code`. A status
        // that is a number is left out (integers with a sign or leading zeros read
        // differently as text and as a `serde_json` number).
        let codes: Vec<&Value> = map
            .iter()
            .filter(|(key, _)| normal(key) == "code")
            .map(|(_, value)| value)
            .collect();
        let status = statuses.first().copied();
        if statuses.len() <= 1 && codes.len() <= 1 && !status.is_some_and(Value::is_number) {
            let failed = status.and_then(Value::as_str).is_some_and(|s| s != "SUCCESS");
            let code = codes
                .first()
                .and_then(|v| v.as_str())
                .filter(|c| is_fincode_code(c) && failed);
            assert_eq!(found.code.as_deref(), code, "the code differs from serde_json's");
        }
    }
    if found.code.is_some() {
        assert!(found.failed, "a code kept from a body that did not fail");
    }
    assert_eq!(scan(data, false).code, None, "a request's code was kept");
});

/// A key as the scan reads it: lower case, `_` and `-` left out.
fn normal(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// FinCode's error codes: an upper-case letter, then up to 47 of `A-Z`, `0-9`, `_`.
fn is_fincode_code(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && text.len() <= 48
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}
