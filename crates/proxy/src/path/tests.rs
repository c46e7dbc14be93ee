use proptest::prelude::*;

use super::*;

#[test]
fn normal_paths_are_borrowed_unchanged() {
    for path in [
        "/",
        "/transactionmanagement/create-transaction",
        "/transactionmanagement/transactions/TXN-42",
        "/a/.../b",
        "/a/.x/b",
        "/v1.0/x",
        "/a/b/",
        "/a%20b",
        "/caf\u{e9}/x",
    ] {
        assert!(
            matches!(normalise(path), Ok(Cow::Borrowed(p)) if p == path),
            "{path}"
        );
    }
}

#[test]
fn slashes_collapse_and_unreserved_escapes_decode() {
    for (path, want) in [
        (
            "//transactionmanagement//create-transaction",
            "/transactionmanagement/create-transaction",
        ),
        ("///a", "/a"),
        ("/a//", "/a/"),
        ("/%73ecuritymanagement/logout", "/securitymanagement/logout"),
        ("/%7E%2D%5f%41", "/~-_A"),
        ("//a%20b//c%41", "/a%20b/cA"),
        ("//caf\u{e9}//x", "/caf\u{e9}/x"),
    ] {
        assert_eq!(normalise(path).as_deref(), Ok(want), "{path}");
    }
}

#[test]
fn ambiguous_paths_are_refused() {
    for (path, why) in [
        ("", PathError::NotAbsolute),
        ("*", PathError::NotAbsolute),
        ("a/b", PathError::NotAbsolute),
        ("/../admin", PathError::DotSegment),
        ("/a/./b", PathError::DotSegment),
        ("/..", PathError::DotSegment),
        ("/a//../b", PathError::DotSegment),
        ("/a/%2e%2E/b", PathError::EncodedDot),
        ("/a/.%2e", PathError::EncodedDot),
        ("/%2E/x", PathError::EncodedDot),
        ("/a/%2ex", PathError::EncodedDot),
        ("/a/..%2fb", PathError::EncodedSeparator),
        ("/a/..%2Fb", PathError::EncodedSeparator),
        ("/a/..%5cb", PathError::EncodedSeparator),
        ("/a/..%5Cb", PathError::EncodedSeparator),
        ("/a/..\\b", PathError::Backslash),
        ("/a/..;/b", PathError::PathParameter),
        ("/a;jsessionid=1/b", PathError::PathParameter),
        ("/a%3bx/b", PathError::PathParameter),
        ("/a/%252e%252e/b", PathError::EncodedPercent),
        ("/a/%25", PathError::EncodedPercent),
        ("/a/%00", PathError::EncodedControl),
        ("/a/%0d%0a", PathError::EncodedControl),
        ("/a/%7f", PathError::EncodedControl),
        ("/a/%2", PathError::MalformedEscape),
        ("/a/%", PathError::MalformedEscape),
        ("/a/%zz", PathError::MalformedEscape),
        ("/a/%%32%65%%32%65/b", PathError::MalformedEscape),
    ] {
        assert_eq!(normalise(path), Err(why), "{path}");
    }
}

/// Decodes every escape (what a server downstream may do), for the properties below.
fn decode_all(path: &str) -> Vec<u8> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = escape_at(bytes, i)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn collapse_slashes(bytes: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if !(b == b'/' && out.last() == Some(&b'/')) {
            out.push(b);
        }
    }
    out
}

fn path_strategy() -> impl Strategy<Value = String> {
    // Paths built from the pieces that matter: separators, dots, escapes (good, bad,
    // malformed), path parameters, letters and a non-ASCII character.
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just("//".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just(";".to_owned()),
        Just("\\".to_owned()),
        Just("%".to_owned()),
        Just("\u{e9}".to_owned()),
        "[a-zA-Z0-9_~-]{1,4}",
        "%[0-9a-fA-F]{2}",
        "%[0-9a-gA-G]{1,2}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| format!("/{}", pieces.concat()))
}

proptest! {
    #[test]
    fn normalised_paths_are_canonical(path in path_strategy()) {
        if let Ok(out) = normalise(&path) {
            prop_assert!(out.starts_with('/'));
            prop_assert!(!out.contains("//"), "{out}");
            prop_assert!(!out.contains(';') && !out.contains('\\'), "{out}");
            prop_assert!(!out.split('/').any(|s| s == "." || s == ".."), "{out}");
            // Idempotent: a normal path is its own normal form, borrowed.
            prop_assert!(matches!(normalise(&out), Ok(Cow::Borrowed(p)) if p == out.as_ref()));
            // Decoding once or twice downstream reads the same path the sidecar matched.
            let once = decode_all(&out);
            let once = String::from_utf8_lossy(&once);
            prop_assert_eq!(decode_all(&once), once.as_bytes());
            prop_assert!(!once.split('/').any(|s| s == "." || s == ".."), "{once}");
            prop_assert!(!once.contains("//") && !once.contains('\\'), "{once}");
            // Nothing but the slashes and the escapes' spelling changed.
            prop_assert_eq!(decode_all(&out), collapse_slashes(&decode_all(&path)));
        }
    }

    /// A path with a plain `.` or `..` segment (read by splitting on `/`) and nothing else
    /// wrong is refused as a dot segment, and one without is not.
    #[test]
    fn dot_segments_are_found_as_splitting_finds_them(path in path_strategy()) {
        let has_dots = path.split('/').any(|s| s == "." || s == "..");
        match normalise(&path) {
            Err(PathError::DotSegment) => prop_assert!(has_dots, "{path}"),
            Ok(_) => prop_assert!(!has_dots, "{path}"),
            Err(_) => {}
        }
    }

    #[test]
    fn any_string_is_handled_without_panicking(path in "\\PC*") {
        let _ = normalise(&path);
        let _ = normalise(&format!("/{path}"));
    }
}

#[test]
fn the_base_path_is_stripped_in_any_letter_case_at_a_segment_boundary() {
    let base = "/api/v6/services";
    assert_eq!(strip_base("/api/v6/services/x", base), Some("/x"));
    assert_eq!(strip_base("/API/V6/Services/x", base), Some("/x"));
    assert_eq!(strip_base("/Api/V6/SERVICES", base), Some(""));
    assert_eq!(strip_base("/api/v6/servicesX", base), None);
    assert_eq!(strip_base("/api/v6", base), None);
    assert_eq!(strip_base("/transactionmanagement/x", base), None);
    // A cut inside a multi-byte character is no match, and no panic.
    assert_eq!(strip_base("/api/v6/servicé", base), None);
    assert_eq!(strip_base("/api/v6/servic\u{e9}/x", base), None);
    assert_eq!(strip_base("/api/v6/service\u{e9}", base), None);
    // No base: every absolute path is under it.
    assert_eq!(strip_base("/x", ""), Some("/x"));
}
