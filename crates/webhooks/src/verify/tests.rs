//! Known answers (computed independently with Python's `hmac`/`hashlib` when these tests were
//! written, and the Standard Webhooks specification's published vector), edge cases of every
//! parser, and properties of sign → verify.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use secrecy::SecretString;

use super::*;

// Python: hmac.new(b"fincode-test-secret", BODY, hashlib.sha256).hexdigest() and friends.
const HMAC_SECRET: &str = "fincode-test-secret";
const BODY: &[u8] =
    br#"{"eventType":"TRANSACTION_STATUS","Reference":"PCN-0001","Status":"PAID","msgCode":"00"}"#;
const HMAC_SHA256_HEX: &str = "295ab5b574d4c3c3b086ad22893ab361f828ab028e0c73ab25dd4377ac080a9c";
const HMAC_SHA256_BASE64: &str = "KVq1tXTUw8Owhq0iiTqzYfgoqwKODHOrJd1Dd6wICpw=";
const HMAC_SHA512_HEX: &str = "fb2ccf6b1f81c41a2572f3f58176cce67cbcb3e9e871efeceadc40935e6ae979\
                               44979104fcc92d5f26089071922edae5686f7c3e2138da287be6e63391cef38b";
const HMAC_SHA512_BASE64: &str = "+yzPax+BxBolcvP1gXbM5ny8s+noce/s6txAk15q6XlEl5EE/MktXyYIkHGSLtrl\
                                  aG98PiE42ih75uYzkc7ziw==";
/// Every algorithm and encoding with its answer over `BODY`.
const HMAC_KNOWN_ANSWERS: [(Algorithm, Encoding, &str); 4] = [
    (Algorithm::Sha256, Encoding::Hex, HMAC_SHA256_HEX),
    (Algorithm::Sha256, Encoding::Base64, HMAC_SHA256_BASE64),
    (Algorithm::Sha512, Encoding::Hex, HMAC_SHA512_HEX),
    (Algorithm::Sha512, Encoding::Base64, HMAC_SHA512_BASE64),
];
/// HMAC-SHA256 of the empty body.
const HMAC_SHA256_HEX_EMPTY: &str =
    "2260b8412c9f8ecfe5723719fedbce9c3a28a130f45cf25a81f5dfd2767240d7";
/// HMAC-SHA256 of `mib_body()`: bytes(i % 251 for i in range(1 << 20)).
const HMAC_SHA256_HEX_MIB: &str =
    "0a0fccd8a84bb92508fd23840aea40646785353fdc619f3d905466af415a2b9e";

// The Standard Webhooks specification's test vector (reproduced with Python before use).
const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SPEC_TIMESTAMP: u64 = 1_614_265_330;
const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

// Ours: key b"fincode-sidecar-standard-webhooks-key-32b", id "msg_2bW7yQ3mTQbwZx9r",
// timestamp 1700000000, BODY.
const SW_SECRET: &str = "whsec_ZmluY29kZS1zaWRlY2FyLXN0YW5kYXJkLXdlYmhvb2tzLWtleS0zMmI=";
const SW_ID: &str = "msg_2bW7yQ3mTQbwZx9r";
const SW_SIGNATURE: &str = "v1,j8X1yiJYcN/9Bw7FRtjap7DqFGPJC0aywawhduWW9gg=";

// Stripe's documented scheme: hex HMAC-SHA256 of "{t}.{body}" with the secret's raw bytes.
const STRIPE_SECRET: &str = "whsec_stripe_style_test_secret";
const STRIPE_OTHER_SECRET: &str = "whsec_stripe_rotated_secret";
const T: u64 = 1_700_000_000;
const STRIPE_V1: &str = "a152410c5fce1d04ae6ca1c9cf5104ffee171e4919e8c6aeccbd3dc1661fd3ee";
const STRIPE_OTHER_V1: &str = "825fe19f03768cd4de9eec1fb83f52f768d920b4be0a5de07fd068d2054560b5";

const TOLERANCE: Duration = Duration::from_mins(5);

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn secret(text: &str) -> SecretString {
    SecretString::from(text.to_owned())
}

fn verifier(scheme: Scheme, secrets: &[&str]) -> Verifier {
    Verifier::new(
        scheme,
        secrets.iter().map(|s| secret(s)).collect(),
        TOLERANCE,
    )
    .unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::try_from(*name).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn hmac_scheme(algorithm: Algorithm, encoding: Encoding, prefix: &str) -> Scheme {
    Scheme::Hmac {
        algorithm,
        encoding,
        header: HeaderName::from_static("x-fincode-signature"),
        prefix: prefix.to_owned(),
    }
}

/// A verifier of `hmac_scheme(algorithm, encoding, prefix)` that knows `HMAC_SECRET`.
fn hmac_verifier(algorithm: Algorithm, encoding: Encoding, prefix: &str) -> Verifier {
    verifier(hmac_scheme(algorithm, encoding, prefix), &[HMAC_SECRET])
}

/// `value` in the header `hmac_scheme` reads.
fn hmac_header(value: &str) -> HeaderMap {
    headers(&[("x-fincode-signature", value)])
}

fn stripe() -> Scheme {
    Scheme::Stripe {
        header: DEFAULT_STRIPE_HEADER,
    }
}

fn shared() -> Scheme {
    Scheme::SharedSecret {
        header: HeaderName::from_static("x-webhook-secret"),
    }
}

fn sw_headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
    headers(&[
        ("webhook-id", id),
        ("webhook-timestamp", timestamp),
        ("webhook-signature", signature),
    ])
}

fn stripe_header(value: &str) -> HeaderMap {
    headers(&[("stripe-signature", value)])
}

fn mib_body() -> Vec<u8> {
    (0..1usize << 20).map(|i| (i % 251) as u8).collect()
}

fn flipped(body: &[u8], index: usize) -> Vec<u8> {
    let mut body = body.to_vec();
    body[index] ^= 0x01;
    body
}

fn signed(scheme: &Scheme, secret_text: &str, body: &[u8], now: u64, id: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in sign(scheme, &secret(secret_text), body, at(now), id).unwrap() {
        map.append(name, value);
    }
    map
}

// === hmac ===

#[test]
fn hmac_known_answers_verify() {
    for (algorithm, encoding, tag) in HMAC_KNOWN_ANSWERS {
        let v = verifier(hmac_scheme(algorithm, encoding, ""), &[HMAC_SECRET]);
        let h = hmac_header(tag);
        assert_eq!(
            v.verify(&h, BODY, at(0)),
            Ok(()),
            "{algorithm:?} {encoding:?}"
        );
        assert_eq!(
            v.verify(&h, &flipped(BODY, 10), at(0)),
            Err(Rejection::BadSignature),
            "{algorithm:?} {encoding:?}"
        );
    }
}

#[test]
fn hmac_sign_reproduces_known_answers_with_prefix() {
    for (algorithm, encoding, tag) in HMAC_KNOWN_ANSWERS {
        let scheme = hmac_scheme(algorithm, encoding, "sha=");
        let out = sign(&scheme, &secret(HMAC_SECRET), BODY, at(0), "ignored").unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "x-fincode-signature");
        assert_eq!(out[0].1, format!("sha={tag}").as_str());
        assert!(out[0].1.is_sensitive());
        let v = verifier(scheme, &[HMAC_SECRET]);
        let h = hmac_header(&format!("sha={tag}"));
        assert_eq!(v.verify(&h, BODY, at(0)), Ok(()));
    }
}

#[test]
fn hmac_hex_accepts_upper_case() {
    let v = hmac_verifier(Algorithm::Sha256, Encoding::Hex, "");
    let h = hmac_header(&HMAC_SHA256_HEX.to_ascii_uppercase());
    assert_eq!(v.verify(&h, BODY, at(0)), Ok(()));
}

#[test]
fn hmac_empty_body_and_one_mib_body() {
    let v = hmac_verifier(Algorithm::Sha256, Encoding::Hex, "");
    let h = hmac_header(HMAC_SHA256_HEX_EMPTY);
    assert_eq!(v.verify(&h, b"", at(0)), Ok(()));
    assert_eq!(v.verify(&h, b" ", at(0)), Err(Rejection::BadSignature));

    let body = mib_body();
    let h = hmac_header(HMAC_SHA256_HEX_MIB);
    assert_eq!(v.verify(&h, &body, at(0)), Ok(()));
    assert_eq!(
        v.verify(&h, &flipped(&body, body.len() - 1), at(0)),
        Err(Rejection::BadSignature)
    );
    assert_eq!(
        v.verify(&h, &body[..body.len() - 1], at(0)),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn hmac_malformed_headers() {
    let v = hmac_verifier(Algorithm::Sha256, Encoding::Hex, "sha256=");
    let good = format!("sha256={HMAC_SHA256_HEX}");
    assert_eq!(v.verify(&hmac_header(&good), BODY, at(0)), Ok(()));

    assert_eq!(
        v.verify(&HeaderMap::new(), BODY, at(0)),
        Err(Rejection::MissingSignature)
    );
    // Another header carrying the right value does not count.
    assert_eq!(
        v.verify(&headers(&[("x-other-signature", &good)]), BODY, at(0)),
        Err(Rejection::MissingSignature)
    );
    let malformed = [
        String::new(),
        "   ".to_owned(),
        HMAC_SHA256_HEX.to_owned(),                    // no prefix
        format!("SHA256={HMAC_SHA256_HEX}"),           // prefix is case-sensitive
        format!("sha512={HMAC_SHA256_HEX}"),           // wrong prefix
        format!("sha256={}", &HMAC_SHA256_HEX[1..]),   // odd length
        format!("sha256={}", &HMAC_SHA256_HEX[2..]),   // 31 bytes
        format!("sha256={HMAC_SHA256_HEX}00"),         // 33 bytes
        format!("sha256={}zz", &HMAC_SHA256_HEX[2..]), // not hex
        format!("sha256={HMAC_SHA256_BASE64}"),        // base64 where hex is configured
        format!("sha256= {HMAC_SHA256_HEX}"),          // space inside
    ];
    for value in &malformed {
        assert_eq!(
            v.verify(&hmac_header(value), BODY, at(0)),
            Err(Rejection::MalformedSignature),
            "{value:?}"
        );
    }
    // Repeated header: ambiguous, refused even though one copy is right.
    assert_eq!(
        v.verify(
            &headers(&[
                ("x-fincode-signature", &good),
                ("x-fincode-signature", &good)
            ]),
            BODY,
            at(0)
        ),
        Err(Rejection::MalformedSignature)
    );
    // Not visible ASCII.
    let mut h = HeaderMap::new();
    h.insert(
        "x-fincode-signature",
        HeaderValue::from_bytes(format!("sha256={HMAC_SHA256_HEX}\u{e9}").as_bytes()).unwrap(),
    );
    assert_eq!(
        v.verify(&h, BODY, at(0)),
        Err(Rejection::MalformedSignature)
    );
}

#[test]
fn hmac_base64_malformed() {
    let v = hmac_verifier(Algorithm::Sha256, Encoding::Base64, "");
    for value in [
        "KVq1tXTUw8Owhq0iiTqzYfgoqwKODHOrJd1Dd6wICpw", // padding missing
        "KVq1tXTUw8Owhq0iiTqzYfgoqwKODHOrJd1Dd6wICp!=", // not base64
        "KVq1tXTUw8Owhq0iiTqzYfgoqwKODHOrJd1Dd6wI",    // 30 bytes
        HMAC_SHA256_HEX,                               // hex where base64 is configured
    ] {
        assert_eq!(
            v.verify(&hmac_header(value), BODY, at(0)),
            Err(Rejection::MalformedSignature),
            "{value:?}"
        );
    }
}

// === Standard Webhooks ===

#[test]
fn standard_webhooks_spec_vector_verifies() {
    let v = verifier(Scheme::StandardWebhooks, &[SPEC_SECRET]);
    let h = sw_headers(SPEC_ID, &SPEC_TIMESTAMP.to_string(), SPEC_SIGNATURE);
    assert_eq!(v.verify(&h, SPEC_BODY, at(SPEC_TIMESTAMP)), Ok(()));
    assert_eq!(
        v.verify(&h, br#"{"test": 2432232315}"#, at(SPEC_TIMESTAMP)),
        Err(Rejection::BadSignature)
    );
    let other_id = sw_headers("msg_other", &SPEC_TIMESTAMP.to_string(), SPEC_SIGNATURE);
    assert_eq!(
        v.verify(&other_id, SPEC_BODY, at(SPEC_TIMESTAMP)),
        Err(Rejection::BadSignature)
    );
    let other_time = sw_headers(SPEC_ID, &(SPEC_TIMESTAMP + 1).to_string(), SPEC_SIGNATURE);
    assert_eq!(
        v.verify(&other_time, SPEC_BODY, at(SPEC_TIMESTAMP)),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn standard_webhooks_sign_reproduces_spec_vector() {
    let out = sign(
        &Scheme::StandardWebhooks,
        &secret(SPEC_SECRET),
        SPEC_BODY,
        at(SPEC_TIMESTAMP),
        SPEC_ID,
    )
    .unwrap();
    let pairs: Vec<(String, String)> = out
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("webhook-id".to_owned(), SPEC_ID.to_owned()),
            ("webhook-timestamp".to_owned(), SPEC_TIMESTAMP.to_string()),
            ("webhook-signature".to_owned(), SPEC_SIGNATURE.to_owned()),
        ]
    );
    assert!(out[2].1.is_sensitive());
}

#[test]
fn standard_webhooks_own_known_answer() {
    let v = verifier(Scheme::StandardWebhooks, &[SW_SECRET]);
    let h = sw_headers(SW_ID, &T.to_string(), SW_SIGNATURE);
    assert_eq!(v.verify(&h, BODY, at(T)), Ok(()));
    assert_eq!(
        v.verify(&h, &flipped(BODY, 0), at(T)),
        Err(Rejection::BadSignature)
    );
    assert_eq!(
        signed(&Scheme::StandardWebhooks, SW_SECRET, BODY, T, SW_ID),
        h
    );
}

#[test]
fn standard_webhooks_skips_other_versions_and_extra_spaces() {
    let v = verifier(Scheme::StandardWebhooks, &[SPEC_SECRET]);
    let ts = SPEC_TIMESTAMP.to_string();
    let value = format!("v1a,bm90LWEtc2lnbmF0dXJl  v2,AAAA {SPEC_SIGNATURE}");
    assert_eq!(
        v.verify(
            &sw_headers(SPEC_ID, &ts, &value),
            SPEC_BODY,
            at(SPEC_TIMESTAMP)
        ),
        Ok(())
    );
}

#[test]
fn standard_webhooks_malformed_headers() {
    let v = verifier(Scheme::StandardWebhooks, &[SPEC_SECRET]);
    let ts = SPEC_TIMESTAMP.to_string();
    let now = at(SPEC_TIMESTAMP);
    let check = |h: &HeaderMap| v.verify(h, SPEC_BODY, now);

    assert_eq!(
        check(&headers(&[
            ("webhook-id", SPEC_ID),
            ("webhook-timestamp", &ts)
        ])),
        Err(Rejection::MissingSignature)
    );
    assert_eq!(
        check(&headers(&[
            ("webhook-id", SPEC_ID),
            ("webhook-signature", SPEC_SIGNATURE)
        ])),
        Err(Rejection::MissingTimestamp)
    );
    assert_eq!(
        check(&headers(&[
            ("webhook-timestamp", &ts),
            ("webhook-signature", SPEC_SIGNATURE)
        ])),
        Err(Rejection::MalformedSignature),
        "missing id"
    );
    for signature in [
        "",                                                        // empty
        "v1",                                                      // no comma
        "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",         // no v1 entry
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",          // bad padding
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1O!=",         // not base64
        "v1,AAAA",                                                 // 3 bytes
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= garbage", // entry without comma
        "v1=g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",         // Stripe-like syntax
    ] {
        assert_eq!(
            check(&sw_headers(SPEC_ID, &ts, signature)),
            Err(Rejection::MalformedSignature),
            "{signature:?}"
        );
    }
    for timestamp in [
        "",
        "abc",
        "+1614265330",
        "-1614265330",
        "1614265330.0",
        "1e9",
        "99999999999999999999",
    ] {
        assert_eq!(
            check(&sw_headers(SPEC_ID, timestamp, SPEC_SIGNATURE)),
            Err(Rejection::MalformedSignature),
            "{timestamp:?}"
        );
    }
    assert_eq!(
        check(&sw_headers("", &ts, SPEC_SIGNATURE)),
        Err(Rejection::MalformedSignature),
        "empty id"
    );
}

// === Stripe ===

#[test]
fn stripe_known_answer_verifies_and_signs() {
    let v = verifier(stripe(), &[STRIPE_SECRET]);
    let value = format!("t={T},v1={STRIPE_V1}");
    assert_eq!(v.verify(&stripe_header(&value), BODY, at(T)), Ok(()));
    assert_eq!(
        v.verify(&stripe_header(&value), &flipped(BODY, 5), at(T)),
        Err(Rejection::BadSignature)
    );
    assert_eq!(
        signed(&stripe(), STRIPE_SECRET, BODY, T, "ignored"),
        stripe_header(&value)
    );
}

#[test]
fn stripe_ignores_v0_unknown_keys_and_key_order() {
    let v = verifier(stripe(), &[STRIPE_SECRET]);
    let zeros = "0".repeat(64);
    for value in [
        format!("t={T},v1={STRIPE_V1},v0={zeros}"),
        format!("v0=whatever,v1={STRIPE_V1},t={T}"),
        format!("t={T}, v1={STRIPE_V1}, scheme=x"),
    ] {
        assert_eq!(
            v.verify(&stripe_header(&value), BODY, at(T)),
            Ok(()),
            "{value}"
        );
    }
}

#[test]
fn stripe_custom_header() {
    let scheme = Scheme::Stripe {
        header: HeaderName::from_static("x-fincode-signature"),
    };
    let v = verifier(scheme, &[STRIPE_SECRET]);
    let value = format!("t={T},v1={STRIPE_V1}");
    assert_eq!(
        v.verify(&headers(&[("x-fincode-signature", &value)]), BODY, at(T)),
        Ok(())
    );
    assert_eq!(
        v.verify(&stripe_header(&value), BODY, at(T)),
        Err(Rejection::MissingSignature)
    );
}

#[test]
fn stripe_malformed_headers() {
    let v = verifier(stripe(), &[STRIPE_SECRET]);
    let check = |value: &str| v.verify(&stripe_header(value), BODY, at(T));
    assert_eq!(
        v.verify(&HeaderMap::new(), BODY, at(T)),
        Err(Rejection::MissingSignature)
    );
    assert_eq!(
        check(&format!("v1={STRIPE_V1}")),
        Err(Rejection::MissingTimestamp)
    );
    for value in [
        String::new(),
        "garbage".to_owned(),
        "t=,v1=".to_owned(),
        format!("t={T}"),                          // no v1 entry
        format!("t={T},v0={STRIPE_V1}"),           // only v0
        format!("t={T},v1={}", &STRIPE_V1[1..]),   // odd hex
        format!("t={T},v1={}", &STRIPE_V1[2..]),   // 31 bytes
        format!("t={T},v1={}xx", &STRIPE_V1[2..]), // not hex
        format!("t={T},t={T},v1={STRIPE_V1}"),     // t twice
        format!("t=abc,v1={STRIPE_V1}"),           // non-numeric t
        format!("t=-{T},v1={STRIPE_V1}"),
        format!("t={T};v1={STRIPE_V1}"),           // wrong separator
        format!("t={T},,v1={STRIPE_V1}"),          // empty item
        format!("t={T},v1={STRIPE_V1},v1=nothex"), // one bad entry spoils the header
    ] {
        assert_eq!(
            check(&value),
            Err(Rejection::MalformedSignature),
            "{value:?}"
        );
    }
}

// === shared secret ===

#[test]
fn shared_secret_matches_only_the_exact_value() {
    let v = verifier(shared(), &["s3cr3t-value"]);
    let check = |value: &str| v.verify(&headers(&[("x-webhook-secret", value)]), BODY, at(0));
    assert_eq!(check("s3cr3t-value"), Ok(()));
    assert_eq!(
        check(" s3cr3t-value "),
        Ok(()),
        "surrounding spaces are not part of a value"
    );
    for wrong in ["s3cr3t-valu", "s3cr3t-value!", "S3CR3T-VALUE", "x"] {
        assert_eq!(check(wrong), Err(Rejection::BadSignature), "{wrong}");
    }
    assert_eq!(check(""), Err(Rejection::MalformedSignature));
    assert_eq!(
        v.verify(&HeaderMap::new(), BODY, at(0)),
        Err(Rejection::MissingSignature)
    );
    // The body is not bound by this scheme.
    assert_eq!(
        v.verify(
            &headers(&[("x-webhook-secret", "s3cr3t-value")]),
            b"anything",
            at(0)
        ),
        Ok(())
    );
}

// === rotation ===

#[test]
fn rotation_second_secret_matches_for_every_scheme() {
    let cases = [
        (
            hmac_scheme(Algorithm::Sha256, Encoding::Hex, ""),
            "old-secret",
            HMAC_SECRET,
            hmac_header(HMAC_SHA256_HEX),
            BODY,
            0,
        ),
        (
            Scheme::StandardWebhooks,
            SW_SECRET,
            SPEC_SECRET,
            sw_headers(SPEC_ID, &SPEC_TIMESTAMP.to_string(), SPEC_SIGNATURE),
            SPEC_BODY,
            SPEC_TIMESTAMP,
        ),
        (
            stripe(),
            STRIPE_OTHER_SECRET,
            STRIPE_SECRET,
            stripe_header(&format!("t={T},v1={STRIPE_V1}")),
            BODY,
            T,
        ),
        (
            shared(),
            "old-shared",
            "new-shared",
            headers(&[("x-webhook-secret", "new-shared")]),
            BODY,
            0,
        ),
    ];
    for (scheme, first, second, h, body, now) in cases {
        let name = scheme.name();
        let both = verifier(scheme.clone(), &[first, second]);
        assert_eq!(
            both.verify(&h, body, at(now)),
            Ok(()),
            "{name}: second of two"
        );
        let reversed = verifier(scheme.clone(), &[second, first]);
        assert_eq!(
            reversed.verify(&h, body, at(now)),
            Ok(()),
            "{name}: first of two"
        );
        let only_first = verifier(scheme, &[first]);
        assert_eq!(
            only_first.verify(&h, body, at(now)),
            Err(Rejection::BadSignature),
            "{name}: only the other secret"
        );
    }
}

#[test]
fn rotation_header_with_old_and_new_signatures() {
    // Stripe: the sender signs with both secrets; a receiver that knows either one accepts.
    let value = format!("t={T},v1={STRIPE_OTHER_V1},v1={STRIPE_V1}");
    for known in [STRIPE_SECRET, STRIPE_OTHER_SECRET] {
        let v = verifier(stripe(), &[known]);
        assert_eq!(v.verify(&stripe_header(&value), BODY, at(T)), Ok(()));
    }
    let v = verifier(stripe(), &["neither"]);
    assert_eq!(
        v.verify(&stripe_header(&value), BODY, at(T)),
        Err(Rejection::BadSignature)
    );

    // Standard Webhooks: space-separated entries, in either order.
    let ts = T.to_string();
    let spec_over_ours = signed(&Scheme::StandardWebhooks, SPEC_SECRET, BODY, T, SW_ID);
    let spec_sig = spec_over_ours["webhook-signature"].to_str().unwrap();
    for value in [
        format!("{spec_sig} {SW_SIGNATURE}"),
        format!("{SW_SIGNATURE} {spec_sig}"),
    ] {
        for known in [SW_SECRET, SPEC_SECRET] {
            let v = verifier(Scheme::StandardWebhooks, &[known]);
            assert_eq!(
                v.verify(&sw_headers(SW_ID, &ts, &value), BODY, at(T)),
                Ok(())
            );
        }
    }
}

// === tolerance ===

#[test]
fn tolerance_edges_both_ways() {
    let stripe_v = verifier(stripe(), &[STRIPE_SECRET]);
    let stripe_h = stripe_header(&format!("t={T},v1={STRIPE_V1}"));
    let sw_v = verifier(Scheme::StandardWebhooks, &[SW_SECRET]);
    let sw_h = sw_headers(SW_ID, &T.to_string(), SW_SIGNATURE);
    let limit = TOLERANCE.as_secs();
    for (v, h) in [(&stripe_v, &stripe_h), (&sw_v, &sw_h)] {
        let name = v.scheme().name();
        assert_eq!(
            v.verify(h, BODY, at(T + limit)),
            Ok(()),
            "{name}: at the limit, late"
        );
        assert_eq!(
            v.verify(h, BODY, at(T - limit)),
            Ok(()),
            "{name}: at the limit, early"
        );
        // Whole seconds: a fraction past the limit still reads as the limit.
        let fraction = at(T + limit) + Duration::from_millis(999);
        assert_eq!(v.verify(h, BODY, fraction), Ok(()), "{name}: fraction past");
        assert_eq!(
            v.verify(h, BODY, at(T + limit + 1)),
            Err(Rejection::StaleTimestamp),
            "{name}: one second too old"
        );
        assert_eq!(
            v.verify(h, BODY, at(T - limit - 1)),
            Err(Rejection::StaleTimestamp),
            "{name}: one second too far in the future"
        );
        assert_eq!(v.verify(h, BODY, at(0)), Err(Rejection::StaleTimestamp));
        assert_eq!(
            v.verify(h, BODY, at(u64::from(u32::MAX) * 4)),
            Err(Rejection::StaleTimestamp)
        );
        // A clock before the epoch is simply far away.
        let before_epoch = SystemTime::UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(
            v.verify(h, BODY, before_epoch),
            Err(Rejection::StaleTimestamp)
        );
    }
}

#[test]
fn tolerance_is_checked_after_the_signature() {
    // A forged, stale delivery counts as a bad signature, so `stale_timestamp` only ever counts
    // authentic deliveries that arrived late.
    let v = verifier(stripe(), &[STRIPE_SECRET]);
    let forged = stripe_header(&format!("t={T},v1={STRIPE_OTHER_V1}"));
    assert_eq!(
        v.verify(&forged, BODY, at(T + 10_000)),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn zero_tolerance_accepts_only_the_same_second() {
    let v = Verifier::new(stripe(), vec![secret(STRIPE_SECRET)], Duration::ZERO).unwrap();
    let h = stripe_header(&format!("t={T},v1={STRIPE_V1}"));
    assert_eq!(v.verify(&h, BODY, at(T)), Ok(()));
    assert_eq!(
        v.verify(&h, BODY, at(T + 1)),
        Err(Rejection::StaleTimestamp)
    );
}

#[test]
fn hmac_and_shared_secret_ignore_the_clock() {
    let v = hmac_verifier(Algorithm::Sha256, Encoding::Hex, "");
    let h = hmac_header(HMAC_SHA256_HEX);
    assert_eq!(v.verify(&h, BODY, at(u64::from(u32::MAX))), Ok(()));
}

// === construction, signing errors, redaction ===

#[test]
fn new_requires_a_secret_except_for_none() {
    for scheme in [
        hmac_scheme(Algorithm::Sha512, Encoding::Base64, ""),
        Scheme::StandardWebhooks,
        stripe(),
        shared(),
    ] {
        let error = Verifier::new(scheme.clone(), Vec::new(), TOLERANCE).unwrap_err();
        assert!(
            matches!(error, VerifierError::NoSecrets { .. }),
            "{scheme:?}"
        );
        assert!(error.to_string().contains(scheme.name()));
    }
    let none = Verifier::new(Scheme::None, Vec::new(), TOLERANCE).unwrap();
    assert_eq!(none.verify(&HeaderMap::new(), b"", at(0)), Ok(()));
    assert_eq!(none.scheme(), &Scheme::None);
}

#[test]
fn new_names_a_bad_secret_by_position_never_by_value() {
    for bad in [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", // no prefix
        "whsec_",                           // nothing after it
        "whsec_not base64!",
        "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ] {
        let error = Verifier::new(
            Scheme::StandardWebhooks,
            vec![secret(SPEC_SECRET), secret(bad)],
            TOLERANCE,
        )
        .unwrap_err();
        assert!(
            matches!(
                error,
                VerifierError::NotStandardWebhooksSecret { position: 2 }
            ),
            "{bad}"
        );
        let message = error.to_string();
        assert!(message.contains("#2"), "{message}");
        if bad != "whsec_" {
            assert!(!message.contains(bad), "{message}");
        }
        assert!(!format!("{error:?}").contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    }

    let empty = Verifier::new(stripe(), vec![secret("")], TOLERANCE).unwrap_err();
    assert!(matches!(empty, VerifierError::EmptySecret { position: 1 }));

    for bad in ["line\nbreak", " padded", "caf\u{e9}"] {
        let error =
            Verifier::new(shared(), vec![secret("ok"), secret(bad)], TOLERANCE).unwrap_err();
        assert!(
            matches!(error, VerifierError::SecretNotHeaderValue { position: 2 }),
            "{bad:?}"
        );
        assert!(!error.to_string().contains(bad.trim()));
    }

    let prefix = Verifier::new(
        hmac_scheme(Algorithm::Sha256, Encoding::Hex, "sha 256="),
        vec![secret(HMAC_SECRET)],
        TOLERANCE,
    )
    .unwrap_err();
    assert!(matches!(prefix, VerifierError::InvalidPrefix));
}

#[test]
fn debug_redacts_secrets() {
    let v = verifier(shared(), &["super-secret-value", "another-one"]);
    let debug = format!("{v:?}");
    assert!(debug.contains("[REDACTED]"), "{debug}");
    assert!(!debug.contains("super-secret-value"), "{debug}");
    assert!(!debug.contains("another-one"), "{debug}");
    assert!(debug.contains("x-webhook-secret"), "{debug}");

    let sw = verifier(Scheme::StandardWebhooks, &[SPEC_SECRET]);
    assert!(!format!("{sw:?}").contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
}

#[test]
fn sign_errors() {
    for (secret_text, id, invalid_id) in [
        (SPEC_SECRET, "", true),
        (SPEC_SECRET, "msg 1", true),
        ("not-whsec", "msg_1", false),
    ] {
        let error = sign(
            &Scheme::StandardWebhooks,
            &secret(secret_text),
            BODY,
            at(T),
            id,
        );
        if invalid_id {
            assert!(
                matches!(error, Err(VerifierError::InvalidMessageId)),
                "{id:?}"
            );
        } else {
            assert!(matches!(
                error,
                Err(VerifierError::NotStandardWebhooksSecret { position: 1 })
            ));
        }
    }
    let before_epoch = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
    assert!(matches!(
        sign(&stripe(), &secret(STRIPE_SECRET), BODY, before_epoch, ""),
        Err(VerifierError::ClockBeforeEpoch)
    ));
    assert!(matches!(
        sign(
            &hmac_scheme(Algorithm::Sha256, Encoding::Hex, "\u{e9}"),
            &secret("k"),
            BODY,
            at(0),
            ""
        ),
        Err(VerifierError::InvalidPrefix)
    ));
    assert_eq!(
        sign(&Scheme::None, &secret(""), BODY, at(0), "").unwrap(),
        Vec::new()
    );
}

#[test]
fn shared_secret_sign_sends_the_secret_marked_sensitive() {
    let out = sign(&shared(), &secret("s3cr3t"), BODY, at(0), "").unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "x-webhook-secret");
    assert_eq!(out[0].1, "s3cr3t");
    assert!(out[0].1.is_sensitive());
}

#[test]
fn rejection_labels_are_stable() {
    let labels: Vec<&str> = Rejection::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        labels,
        [
            "missing_signature",
            "malformed_signature",
            "bad_signature",
            "missing_timestamp",
            "stale_timestamp",
        ]
    );
    assert_eq!(
        Rejection::BadSignature.to_string(),
        "bad signature: no secret matches the signature over the body"
    );
}

// === properties ===

/// A scheme and a secret valid for it.
fn scheme_and_secret() -> impl Strategy<Value = (Scheme, String)> {
    let raw = "\\PC{1,40}";
    let whsec = proptest::collection::vec(any::<u8>(), 1..64)
        .prop_map(|key| format!("whsec_{}", mac::encode_base64(&key)));
    let algorithm = prop_oneof![Just(Algorithm::Sha256), Just(Algorithm::Sha512)];
    let encoding = prop_oneof![Just(Encoding::Hex), Just(Encoding::Base64)];
    prop_oneof![
        (algorithm, encoding, "[!-~]{0,8}", raw)
            .prop_map(|(a, e, prefix, s)| (hmac_scheme(a, e, &prefix), s)),
        whsec.prop_map(|s| (Scheme::StandardWebhooks, s)),
        raw.prop_map(|s| (stripe(), s)),
        "[!-~]{1,40}".prop_map(|s| (shared(), s)),
    ]
}

proptest! {
    #[test]
    fn sign_then_verify_round_trips(
        (scheme, secret_text) in scheme_and_secret(),
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        now in 0u64..4_000_000_000,
        skew in 0u64..=300,
        id in "[a-zA-Z0-9_]{1,32}",
    ) {
        let h = signed(&scheme, &secret_text, &body, now, &id);
        // Configured after an unrelated secret, as during a rotation.
        let other = if scheme == Scheme::StandardWebhooks { SW_SECRET } else { "unrelated" };
        let v = verifier(scheme, &[other, &secret_text]);
        prop_assert_eq!(v.verify(&h, &body, at(now + skew)), Ok(()));
        prop_assert_eq!(v.verify(&h, &body, at(now.saturating_sub(skew))), Ok(()));
    }

    #[test]
    fn any_single_byte_change_fails(
        (scheme, secret_text) in scheme_and_secret(),
        body in proptest::collection::vec(any::<u8>(), 1..2048),
        index in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        // A shared secret does not bind the body; nothing to test there.
        prop_assume!(!matches!(scheme, Scheme::SharedSecret { .. }));
        let h = signed(&scheme, &secret_text, &body, T, "msg_1");
        let v = verifier(scheme, &[&secret_text]);
        let mut changed = body.clone();
        changed[index.index(body.len())] ^= xor;
        prop_assert_eq!(v.verify(&h, &changed, at(T)), Err(Rejection::BadSignature));
    }

    #[test]
    fn arbitrary_headers_never_panic(value in "\\PC{0,200}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let Ok(value) = HeaderValue::from_str(&value) else { return Ok(()) };
        for scheme in [hmac_scheme(Algorithm::Sha256, Encoding::Base64, "v="), stripe(), shared()] {
            let v = verifier(scheme, &[STRIPE_SECRET]);
            let mut h = HeaderMap::new();
            h.insert("x-fincode-signature", value.clone());
            h.insert("stripe-signature", value.clone());
            h.insert("x-webhook-secret", value.clone());
            prop_assert!(v.verify(&h, &body, at(T)).is_err());
        }
        let v = verifier(Scheme::StandardWebhooks, &[SW_SECRET]);
        let mut h = HeaderMap::new();
        h.insert("webhook-id", value.clone());
        h.insert("webhook-timestamp", value.clone());
        h.insert("webhook-signature", value);
        prop_assert!(v.verify(&h, &body, at(T)).is_err());
    }
}
