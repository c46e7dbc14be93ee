//! `RUSTC_BOOTSTRAP=1 cargo fuzz run verify` (from crates/webhooks): whatever a sender puts in the
//! headers and body, verification answers (never panics), never accepts an unsigned or
//! forged request, and key templates parse or refuse and render without panicking.
//!
//! Input layout: "name: value" header lines, a blank line, then the body; the first
//! byte picks the scheme.
#![no_main]

use std::time::{Duration, SystemTime};

use fincode_config::KeyTemplate;
use fincode_webhooks::verify::{Algorithm, Encoding, Scheme, Verifier};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;

const SECRET: &str = "fuzz-secret-never-in-the-input";
const WHSEC: &str = "whsec_ZnV6ei1zZWNyZXQtbmV2ZXItaW4tdGhlLWlucHV0";

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&rest[..at], &rest[at + 2..]),
        None => (rest, &[][..]),
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) {
            headers.append(name, value);
        }
    }
    let header = HeaderName::from_static("x-fincode-signature");
    let (scheme, secret) = match pick % 6 {
        0 => (
            Scheme::Hmac {
                algorithm: Algorithm::Sha256,
                encoding: Encoding::Hex,
                header,
                prefix: "sha256=".to_owned(),
            },
            SECRET,
        ),
        1 => (
            Scheme::Hmac {
                algorithm: Algorithm::Sha512,
                encoding: Encoding::Base64,
                header,
                prefix: String::new(),
            },
            SECRET,
        ),
        2 => (Scheme::StandardWebhooks, WHSEC),
        3 => (
            Scheme::Stripe {
                header: HeaderName::from_static("stripe-signature"),
            },
            SECRET,
        ),
        4 => (Scheme::SharedSecret { header }, SECRET),
        _ => (Scheme::None, SECRET),
    };
    let none = scheme == Scheme::None;
    let verifier = Verifier::new(
        scheme,
        vec![SecretString::from(secret)],
        Duration::from_secs(300),
    )
    .expect("a valid verifier");
    let verdict = verifier.verify(&headers, body, SystemTime::now());
    // Without the secret nothing verifies: finding a MAC would be forging HMAC-SHA256. (The
    // fuzzer may copy the shared secret out of this binary; then acceptance is right.)
    let knows_secret = rest
        .windows(SECRET.len())
        .any(|w| w == SECRET.as_bytes());
    assert!(none || knows_secret || verdict.is_err(), "accepted a forged request");

    if let Ok(text) = std::str::from_utf8(rest) {
        if let Ok(template) = KeyTemplate::parse(text) {
            let event = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
            let _ = template.render(&event, &headers);
        }
    }
});
