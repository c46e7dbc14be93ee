use std::borrow::Cow;

use serde_json::{Value, json};

use super::*;

const PAN: &str = "4539578763621486";

fn keyed() -> Redactor {
    Redactor::builder()
        .hash_key(b"0123456789abcdef0123456789abcdef".to_vec().into())
        .build()
}

fn json_of(redactor: &Redactor, value: &Value) -> Value {
    serde_json::from_str(&redactor.json(value.to_string().as_bytes())).unwrap()
}

#[test]
fn credential_headers_are_dropped_whatever_their_case() {
    let r = Redactor::default();
    for name in [
        "Authorization",
        "X-Auth-Token",
        "password",
        "PIN",
        "Cookie",
        "set-cookie",
        "X-Api-Key",
        "Proxy-Authorization",
        "X-Session-Token",
        "Webhook-Signature",
    ] {
        assert!(r.is_sensitive_header(name), "{name}");
        assert_eq!(r.header_value(name, b"s3cr3t"), REDACTED);
    }
    assert_eq!(
        r.header_value("accept", b"application/json"),
        "application/json"
    );
    assert_eq!(
        r.header_value("x-note", b"a\r\nforged: line"),
        "a\\r\\nforged: line"
    );
    let extra = Redactor::builder().header("X-Customer-Ref").build();
    assert!(extra.is_sensitive_header("x-customer-ref"));
}

/// Asserts what `Redactor::default().text` makes of each input: `(input, shown)`.
#[track_caller]
fn assert_shown(cases: &[(&str, &str)]) {
    let r = Redactor::default();
    for (text, shown) in cases {
        assert_eq!(r.text(text), *shown, "{text}");
    }
}

#[test]
fn card_numbers_keep_first_six_and_last_four() {
    assert_shown(&[
        (PAN, "453957******1486"),
        ("card 4539 5787 6362 1486 ok", "card 453957******1486 ok"),
        ("card 4539-5787-6362-1486.", "card 453957******1486."),
        // 13- and 19-digit cards.
        ("4222222222222", "422222***2222"),
        ("6011000990139424", "601100******9424"),
        // Not Luhn: still too long to be harmless; only the last 4 stay.
        ("4539578763621487", "************1487"),
    ]);
}

#[test]
fn long_digit_runs_and_phones_keep_the_last_four() {
    assert_shown(&[
        ("bvn 22381046571", "bvn *******6571"),
        ("acct 0123456789", "acct ******6789"),
        ("call +2348031234567", "call +*********4567"),
        ("call 0803 123 4567", "call *******4567"),
        // A + prefix is a phone even when the digits pass Luhn.
        (&format!("+{PAN}"), "+************1486"),
    ]);
}

#[test]
fn ordinary_numbers_dates_and_times_stay() {
    let r = Redactor::default();
    for text in [
        "amount 25000 NGN",
        "on 2024-01-15 10:30:00",
        "2024-01-15T10:30:00Z",
        "id 123456789",
        "v1.2.3",
        "a - 1",
        "ref PCN17325325551235 and TXN0123456789",
    ] {
        assert!(matches!(r.text(text), Cow::Borrowed(_)), "{text}");
    }
}

#[test]
fn emails_keep_the_first_letter_and_the_domain() {
    assert_shown(&[
        (
            "to adaeze.okonkwo@example.ng, cc b@x.co",
            "to a***@example.ng, cc b***@x.co",
        ),
        // No TLD, no email.
        ("user@localhost", "user@localhost"),
        ("@@@ a@@b.com", "@@@ a@@b.com"),
        // An email wins over the digits inside it.
        ("john12345678901@bank.com", "j***@bank.com"),
        // A digit run stops where an email starts.
        (
            "12 34@x.com then 5 6@y.org",
            "12 3***@x.com then 5 6***@y.org",
        ),
    ]);
}

#[test]
fn control_characters_become_visible_escapes() {
    let r = Redactor::default();
    let out = r.text("a\rb\nc\td\u{0}e\u{1b}[31mf\u{7f}g\u{85}h\u{2028}i\u{2029}j");
    assert_eq!(
        out,
        "a\\rb\\nc\\td\\u{0}e\\u{1b}[31mf\\u{7f}g\\u{85}h\\u{2028}i\\u{2029}j"
    );
    assert!(!out.chars().any(char::is_control));
    assert!(matches!(r.text("plain text é ü 日本"), Cow::Borrowed(_)));
}

#[test]
fn json_field_rules_apply_by_key_ignoring_case_and_separators() {
    let r = keyed();
    let out = json_of(
        &r,
        &json!({
            "currentPassword": "pw-1",
            "Refresh-Token": "rt-1",
            "refreshToken": "rt-2",
            "TRANSACTION_PIN": "1234",
            "cvv": 123,
            "dateOfBirth": "1990-04-17",
            "bvn": "22381046571",
            "phoneNumber": "+2348031234567",
            "accountNumber": 123,
            "email": "ada@example.ng",
            "beneficiaryFullName": "Adaeze Okonkwo",
            "webhookSecret": "whsec_abc",
            "amount": 25000,
            "status": "SUCCESS",
            "missing": null,
        }),
    );
    assert_eq!(out["currentPassword"], REDACTED);
    assert_eq!(out["Refresh-Token"], REDACTED);
    assert_eq!(out["refreshToken"], REDACTED);
    assert_eq!(out["TRANSACTION_PIN"], REDACTED);
    assert_eq!(out["cvv"], REDACTED);
    assert_eq!(out["dateOfBirth"], REDACTED);
    assert_eq!(out["bvn"], "*******6571");
    assert_eq!(out["phoneNumber"], "**********4567");
    assert_eq!(out["accountNumber"], "****");
    assert_eq!(
        out["webhookSecret"], REDACTED,
        "secret-looking keys are dropped"
    );
    assert_eq!(out["amount"], 25000);
    assert_eq!(out["status"], "SUCCESS");
    assert_eq!(out["missing"], Value::Null);
    let email = out["email"].as_str().unwrap();
    assert!(email.starts_with("hmac:") && email.len() == 21, "{email}");
    assert_ne!(out["beneficiaryFullName"], "Adaeze Okonkwo");
}

#[test]
fn hash_pseudonyms_are_stable_keyed_and_dropped_without_a_key() {
    let value = json!({ "email": "ada@example.ng" });
    let a = json_of(&keyed(), &value);
    assert_eq!(a, json_of(&keyed(), &value), "stable");
    let other = Redactor::builder()
        .hash_key(b"another key, another pseudonym!!".to_vec().into())
        .build();
    assert_ne!(a, json_of(&other, &value), "keyed");
    assert_eq!(json_of(&Redactor::default(), &value)["email"], REDACTED);
    assert!(!format!("{:?}", keyed()).contains("0123456789abcdef"));
}

#[test]
fn nested_values_arrays_and_numbers_are_covered() {
    let r = Redactor::default();
    let out = json_of(
        &r,
        &json!({
            "data": [
                { "card": { "pan": PAN, "expiry": "12/29" } },
                { "note": format!("paid with {PAN}") },
                { "number": 4_539_578_763_621_486_u64 },
                { "createdAt": 1_764_048_000_123_u64, "amount": 2_500_000_000_u64 },
                { "password": { "nested": "object" } },
            ],
        }),
    );
    assert_eq!(out["data"][0]["card"]["pan"], "************1486");
    assert_eq!(out["data"][0]["card"]["expiry"], "12/29");
    assert_eq!(out["data"][1]["note"], "paid with 453957******1486");
    assert_eq!(out["data"][2]["number"], "453957******1486");
    assert_eq!(
        out["data"][3]["createdAt"], 1_764_048_000_123_u64,
        "timestamps stay"
    );
    assert_eq!(out["data"][3]["amount"], 2_500_000_000_u64);
    assert_eq!(out["data"][4]["password"], REDACTED);
}

#[test]
fn operator_rules_override_and_extend_the_defaults() {
    let r = Redactor::builder()
        .field("secretAnswer", Action::Drop)
        .field("email", Action::MaskLast4)
        .build();
    let out = json_of(
        &r,
        &json!({ "SECRET_ANSWER": "blue", "email": "ada@example.ng" }),
    );
    assert_eq!(out["SECRET_ANSWER"], REDACTED);
    assert_eq!(out["email"], "**********e.ng");
}

#[test]
fn invalid_json_is_treated_as_text() {
    let r = Redactor::default();
    assert_eq!(
        r.json(format!("not json {PAN}\r\n").as_bytes()),
        "not json 453957******1486\\r\\n"
    );
    assert_eq!(r.json(b"\xff\xfe"), "\u{fffd}\u{fffd}");
    assert_eq!(r.json(b""), "");
}

#[test]
fn urls_lose_sensitive_parameters_and_personal_data() {
    let r = Redactor::builder().query_param("ref").build();
    assert_eq!(
        r.url(&format!(
            "https://a.fincode.tech/api/v6/services/tx/{PAN}?email=ada%40example.ng&card={PAN}&page=2&access_token=abc&ref=x#frag"
        )),
        "https://a.fincode.tech/api/v6/services/tx/453957******1486?email=[REDACTED]&card=453957******1486&page=2&access_token=[REDACTED]&ref=[REDACTED]"
    );
    assert_eq!(
        r.url("/p?note=a%40b.com%0d%0aX"),
        "/p?note=a***@b.com\\r\\nX"
    );
    assert_eq!(r.url("/plain?flag"), "/plain?flag");
}

#[test]
fn json_escapes_are_decoded_before_the_rules_and_invalid_json_is_text() {
    let r = Redactor::default();
    // An escaped card number and email are still found.
    let out =
        r.json(br#"{"note":"\u0034539578763621486 \u0061da@example.ng \ud83d\ude00\t\"q\""}"#);
    let parsed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        parsed["note"],
        "453957******1486 a***@example.ng \u{1f600}\\t\"q\""
    );
    for invalid in [
        &b"{\"a\":01}"[..],
        b"{\"a\":1,}",
        b"[1 2]",
        b"{\"a\" 1}",
        b"\"\\ud800\"",
        b"\"tab\there\"",
        b"nul",
        b"{} {}",
        b"-",
        b"1.",
        b"1e",
    ] {
        let out = r.json(invalid);
        assert!(
            serde_json::from_slice::<Value>(invalid).is_err(),
            "{:?} is invalid JSON",
            String::from_utf8_lossy(invalid)
        );
        assert!(!out.chars().any(char::is_control), "{out:?}");
    }
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    assert_eq!(r.json(deep.as_bytes()), deep, "too deep: treated as text");
}

#[test]
fn a_pseudonym_is_hmac_sha256_truncated_as_an_independent_implementation_computes_it() {
    // python3 -c "import hmac,hashlib; print('hmac:' + hmac.new(
    //   b'0123456789abcdef0123456789abcdef', b'PCN0000000042', hashlib.sha256).hexdigest()[:16])"
    assert_eq!(keyed().pseudonym("PCN0000000042"), "hmac:03fe2faa8bb6d6d3");
    // The keyed state is reused, never carried over from one value to the next.
    let redactor = keyed();
    let first = redactor.pseudonym("PCN0000000042");
    assert_ne!(redactor.pseudonym("PCN0000000043"), first);
    assert_eq!(redactor.pseudonym("PCN0000000042"), first);
    assert_eq!(Redactor::default().pseudonym("PCN0000000042"), REDACTED);
}
