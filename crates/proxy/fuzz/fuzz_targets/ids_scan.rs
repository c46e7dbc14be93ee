//! The audit layer's id scan (a hand-written pass over JSON bytes from FinCode and the app)
//! never panics on any input, and agrees with `serde_json` on its verdict: a body it calls
//! a whole, valid success is valid JSON to `serde_json`, and on every object `serde_json`
//! reads, the verdict is "`status` is SUCCESS" (the key read as the redactor reads keys;
//! with a key repeated, the last wins in both). The ids it finds are cross-checked against a full parse by the crate's proptest.
#![no_main]

use fincode_proxy::audit::ids::scan;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let found = scan(data, true);
    let _ = scan(data, false);
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
            .filter(|(key, _)| {
                key.chars()
                    .filter(|c| *c != '_' && *c != '-')
                    .map(|c| c.to_ascii_lowercase())
                    .eq("status".chars())
            })
            .map(|(_, value)| value)
            .collect();
        if statuses.len() <= 1 {
            let success = statuses.first().and_then(|v| v.as_str()) == Some("SUCCESS");
            assert_eq!(found.succeeded, success, "the verdict differs from serde_json's");
        }
    }
});
