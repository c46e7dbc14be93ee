//! The audit layer's id scan (a hand-written pass over JSON bytes from FinCode and the app)
//! never panics on any input, and agrees with `serde_json` on its verdict: a body it calls
//! a whole, valid success is valid JSON to `serde_json`, and on every object `serde_json`
//! reads, the verdict is "`status` is SUCCESS" (with a key repeated, the last wins in
//! both). The ids it finds are cross-checked against a full parse by the crate's proptest.
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
        let success = map.get("status").and_then(Value::as_str) == Some("SUCCESS");
        assert_eq!(found.succeeded, success, "the verdict differs from serde_json's");
    }
});
