//! `RUSTC_BOOTSTRAP=1 cargo fuzz run redact` (from crates/redact): no input panics the redactor,
//! valid JSON stays valid JSON, and no control character comes out of the text rules.
#![no_main]

use fincode_redact::Redactor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let redactor = Redactor::default();
    let out = redactor.json(data);
    if serde_json::from_slice::<serde_json::Value>(data).is_ok() {
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok());
    }
    let text = String::from_utf8_lossy(data);
    assert!(!redactor.text(&text).chars().any(char::is_control));
    assert!(!redactor.url(&text).chars().any(char::is_control));
    assert!(!redactor.header_value("x-any", data).chars().any(char::is_control));
});
