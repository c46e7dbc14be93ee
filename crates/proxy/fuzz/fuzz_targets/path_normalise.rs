//! The path normaliser never panics, and what it accepts is canonical: absolute, no
//! `//`, no dot segments, nothing a server downstream could decode into a dot or a
//! separator, and its own normal form.
#![no_main]

use std::borrow::Cow;

use fincode_proxy::path::normalise;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(out) = normalise(path) else {
        return;
    };
    assert!(out.starts_with('/'), "{out:?}");
    assert!(!out.contains("//"), "{out:?}");
    assert!(!out.contains(';') && !out.contains('\\'), "{out:?}");
    assert!(!out.split('/').any(|s| s == "." || s == ".."), "{out:?}");
    let lower = out.to_ascii_lowercase();
    for escape in ["%2e", "%2f", "%5c", "%25", "%3b", "%00"] {
        assert!(!lower.contains(escape), "{out:?}");
    }
    assert!(
        matches!(normalise(&out), Ok(Cow::Borrowed(again)) if again == out.as_ref()),
        "not idempotent: {path:?} -> {out:?}"
    );
});
