//! Known-answer vectors were computed with Python's `hmac`/`hashlib`/`base64` when this
//! was written; the end-to-end tests send to a recording receiver on loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{
    SendWebhooks, SentWebhook, WebhookSigning,
    send::{send, tamper, unix_now},
    signing::sign_at,
    transaction_status_event,
};
use crate::{Sandbox, SandboxConfig};

/// The compact bytes of `event()`, which the HMAC and Stripe vectors below are over.
const EVENT_BYTES: &str = r#"{"Reference":"PCN1000000001","Status":"PAID"}"#;
const HMAC_SECRET: &str = "fincode-secret";
/// HMAC-SHA256(HMAC_SECRET, EVENT_BYTES), hex.
const HMAC_SHA256_HEX: &str = "ce81068a6a53d40d29a4f4ddb0ca42db4fd5aebc703c369c9b3129c9da15e54d";
/// HMAC-SHA512(HMAC_SECRET, EVENT_BYTES), base64.
const HMAC_SHA512_BASE64: &str =
    "9Pm3Kts6Ti7iPqnxT3X3M24HfsbUDDzb+22aIe7TnQnnVWnpHXIJOP3Jm9mYAgyFOnJFd5X5Mavrw1xN+1yvDw==";
const STRIPE_SECRET: &str = "whsec_stripe_test";
/// HMAC-SHA256(STRIPE_SECRET, "1700000000." + EVENT_BYTES), hex.
const STRIPE_V1_AT_1700000000: &str =
    "0746d69b1a4ce40b11083b43c836d9a2a861c4f0a7df4d3067bc904262a6bff6";
/// The Standard Webhooks specification's own example secret.
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn event() -> Value {
    json!({"Reference": "PCN1000000001", "Status": "PAID"})
}

fn hmac_sha256_hex() -> WebhookSigning {
    WebhookSigning::Hmac {
        secret: HMAC_SECRET.to_owned(),
        algorithm: "sha256".to_owned(),
        encoding: "hex".to_owned(),
        header: None,
        prefix: Some("sha256=".to_owned()),
    }
}

fn standard() -> WebhookSigning {
    WebhookSigning::StandardWebhooks {
        secret: WHSEC.to_owned(),
    }
}

fn stripe() -> WebhookSigning {
    WebhookSigning::Stripe {
        secret: STRIPE_SECRET.to_owned(),
        header: None,
    }
}

fn header_text(pairs: &[(http::HeaderName, http::HeaderValue)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| {
            let value = value.to_str().expect("ascii header").to_owned();
            (name.as_str().to_owned(), value)
        })
        .collect()
}

fn pair(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

// --- a recording receiver ---

#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("missing header {name}: {:?}", self.headers))
            .to_str()
            .expect("ascii header")
    }
}

#[derive(Default)]
struct Recorded {
    received: Mutex<Vec<Received>>,
    status: AtomicU16,
}

/// An HTTP/1.1 server on 127.0.0.1:0 that records every request and answers `status`.
struct Receiver {
    url: String,
    recorded: Arc<Recorded>,
    task: JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Self {
        let recorded = Arc::new(Recorded {
            status: AtomicU16::new(200),
            ..Recorded::default()
        });
        let router = Router::new().fallback(record).with_state(recorded.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url: format!("http://{addr}/webhooks/fincode"),
            recorded,
            task,
        }
    }

    fn answer(&self, status: u16) {
        self.recorded.status.store(status, Ordering::Relaxed);
    }

    fn received(&self) -> Vec<Received> {
        self.recorded.received.lock().expect("lock").clone()
    }

    fn batch(&self, signing: WebhookSigning, events: Vec<Value>) -> SendWebhooks {
        SendWebhooks {
            url: self.url.clone(),
            signing,
            events,
            ..SendWebhooks::default()
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(State(recorded): State<Arc<Recorded>>, request: Request) -> StatusCode {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.expect("body");
    recorded.received.lock().expect("lock").push(Received {
        headers: parts.headers,
        body,
    });
    StatusCode::from_u16(recorded.status.load(Ordering::Relaxed)).expect("status")
}

fn all_ok(sent: &[SentWebhook], expected: usize) {
    assert_eq!(sent.len(), expected, "{sent:?}");
    assert!(
        sent.iter()
            .all(|entry| entry.status == Some(200) && entry.error.is_none()),
        "{sent:?}"
    );
}

// --- signing, known answers ---

#[test]
fn standard_webhooks_spec_vector() {
    let headers = sign_at(
        &standard(),
        br#"{"test": 2432232314}"#,
        1_614_265_330,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
    )
    .expect("sign");
    assert_eq!(
        header_text(&headers),
        vec![
            pair("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            pair("webhook-timestamp", "1614265330"),
            pair(
                "webhook-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
            ),
        ]
    );
    assert!(headers[2].1.is_sensitive());
}

/// The headers `signing` puts on `EVENT_BYTES` at `at` (Unix seconds), as text.
fn event_signed(signing: &WebhookSigning, at: i64) -> Vec<(String, String)> {
    header_text(&sign_at(signing, EVENT_BYTES.as_bytes(), at, "ignored").expect("sign"))
}

#[test]
fn hmac_known_answers() {
    assert_eq!(
        event_signed(&hmac_sha256_hex(), 0),
        vec![pair(
            "x-fincode-signature",
            &format!("sha256={HMAC_SHA256_HEX}")
        )]
    );
    let sha512 = WebhookSigning::Hmac {
        secret: HMAC_SECRET.to_owned(),
        algorithm: "SHA512".to_owned(),
        encoding: "base64".to_owned(),
        header: Some("X-Signature".to_owned()),
        prefix: None,
    };
    assert_eq!(
        event_signed(&sha512, 0),
        vec![pair("x-signature", HMAC_SHA512_BASE64)]
    );
}

#[test]
fn stripe_known_answer() {
    assert_eq!(
        event_signed(&stripe(), 1_700_000_000),
        vec![pair(
            "stripe-signature",
            &format!("t=1700000000,v1={STRIPE_V1_AT_1700000000}")
        )]
    );
}

#[test]
fn shared_secret_and_none() {
    let shared = WebhookSigning::SharedSecret {
        secret: "s3cret".to_owned(),
        header: None,
    };
    let headers = sign_at(&shared, b"{}", 0, "ignored").expect("sign");
    assert_eq!(
        header_text(&headers),
        vec![pair("x-webhook-secret", "s3cret")]
    );
    let custom = WebhookSigning::SharedSecret {
        secret: "s3cret".to_owned(),
        header: Some("x-fincode-token".to_owned()),
    };
    let headers = sign_at(&custom, b"{}", 0, "ignored").expect("sign");
    assert_eq!(
        header_text(&headers),
        vec![pair("x-fincode-token", "s3cret")]
    );
    let none = sign_at(&WebhookSigning::None, b"{}", 0, "ignored").expect("sign");
    assert!(none.is_empty());
}

#[test]
fn invalid_configurations_are_refused() {
    let bad_hmac = |algorithm: &str, encoding: &str| WebhookSigning::Hmac {
        secret: "k".to_owned(),
        algorithm: algorithm.to_owned(),
        encoding: encoding.to_owned(),
        header: None,
        prefix: None,
    };
    let bad = [
        bad_hmac("md5", "hex"),
        bad_hmac("sha256", "base32"),
        WebhookSigning::StandardWebhooks {
            secret: "whsec_not*base64".to_owned(),
        },
        WebhookSigning::SharedSecret {
            secret: "line\nbreak".to_owned(),
            header: None,
        },
        WebhookSigning::Stripe {
            secret: "k".to_owned(),
            header: Some("bad header".to_owned()),
        },
    ];
    for signing in bad {
        let batch = SendWebhooks {
            signing: signing.clone(),
            ..SendWebhooks::default()
        };
        assert!(batch.validate().is_err(), "{signing:?} was accepted");
    }
    let refused = [
        SendWebhooks {
            url: "ftp://127.0.0.1/".to_owned(),
            ..SendWebhooks::default()
        },
        SendWebhooks {
            url: "/relative".to_owned(),
            ..SendWebhooks::default()
        },
        SendWebhooks {
            concurrency: 0,
            ..SendWebhooks::default()
        },
        SendWebhooks {
            extra_headers: vec![pair("x-ok", "bad\u{7f}value")],
            ..SendWebhooks::default()
        },
    ];
    for batch in refused {
        assert!(batch.validate().is_err(), "{batch:?} was accepted");
    }
}

#[test]
fn debug_redacts_secrets() {
    let text = format!("{:?}", hmac_sha256_hex());
    assert!(
        !text.contains(HMAC_SECRET) && text.contains("[REDACTED]"),
        "{text}"
    );
    let text = format!(
        "{:?}",
        SendWebhooks {
            signing: standard(),
            ..SendWebhooks::default()
        }
    );
    assert!(!text.contains(WHSEC), "{text}");
}

#[test]
fn signing_round_trips_as_json() {
    let json = json!({"kind": "hmac", "secret": "k", "algorithm": "sha256", "encoding": "hex",
                      "header": null, "prefix": "sha256="});
    let signing: WebhookSigning = serde_json::from_value(json).expect("hmac");
    assert!(matches!(signing, WebhookSigning::Hmac { prefix: Some(p), .. } if p == "sha256="));
    let batch: SendWebhooks = serde_json::from_value(json!({
        "url": "http://127.0.0.1:1/",
        "signing": {"kind": "standard-webhooks", "secret": WHSEC},
        "events": [{}],
    }))
    .expect("batch");
    assert_eq!((batch.copies, batch.concurrency), (1, 16));
    assert!(!batch.tamper && batch.timestamp_offset_secs == 0 && batch.extra_headers.is_empty());
    let none: WebhookSigning = serde_json::from_value(json!({"kind": "none"})).expect("none");
    assert!(matches!(none, WebhookSigning::None));
}

#[test]
fn tamper_changes_one_byte_and_keeps_json() {
    let original = EVENT_BYTES.as_bytes().to_vec();
    let mut body = original.clone();
    tamper(&mut body);
    assert_eq!(body.len(), original.len());
    assert_eq!(
        original.iter().zip(&body).filter(|(a, b)| a != b).count(),
        1
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("still JSON"),
        json!({"Reference": "PCN1000000001", "Status": "PAId"})
    );
    let mut digits = br#"{"amountSent":1509}"#.to_vec();
    tamper(&mut digits);
    assert_eq!(digits, br#"{"amountSent":1500}"#);
    let mut empty_object = b"{}".to_vec();
    tamper(&mut empty_object);
    assert_eq!(empty_object, b"z}");
}

#[test]
fn transaction_status_event_is_fincode_shaped() {
    let event = transaction_status_event("PCN1234567890", "PAID");
    assert_eq!(event["eventType"], "TRANSACTION_STATUS");
    assert_eq!(event["Reference"], "PCN1234567890");
    assert_eq!(event["Status"], "PAID");
    assert_eq!(event["msgCode"], "00");
    for field in ["transactionId", "amountSent", "beneficiaryFullName"] {
        assert!(!event[field].is_null(), "{field} missing");
    }
    assert_eq!(event, transaction_status_event("PCN1234567890", "PAID"));
    assert_ne!(event, transaction_status_event("PCN1234567890", "FAILED"));
}

// --- over real sockets ---

#[tokio::test]
async fn every_scheme_arrives_signed() {
    let receiver = Receiver::start().await;
    let schemes = [
        hmac_sha256_hex(),
        standard(),
        stripe(),
        WebhookSigning::SharedSecret {
            secret: "s3cret".to_owned(),
            header: None,
        },
        WebhookSigning::None,
    ];
    for signing in &schemes {
        let mut batch = receiver.batch(signing.clone(), vec![event()]);
        batch.extra_headers = vec![pair("x-test-run", "42")];
        all_ok(&send(None, batch).await, 1);
    }
    let received = receiver.received();
    assert_eq!(received.len(), schemes.len());
    let before = unix_now();
    for one in &received {
        assert_eq!(one.body, EVENT_BYTES.as_bytes());
        assert_eq!(one.header("content-type"), "application/json");
        assert_eq!(one.header("x-test-run"), "42");
    }

    assert_eq!(
        received[0].header("x-fincode-signature"),
        format!("sha256={HMAC_SHA256_HEX}")
    );

    let sw = &received[1];
    let id = sw.header("webhook-id");
    assert!(id.starts_with("msg_"), "{id}");
    let ts: i64 = sw.header("webhook-timestamp").parse().expect("seconds");
    assert!((before - ts).abs() <= 5, "{ts} vs {before}");
    let expected = sign_at(&standard(), EVENT_BYTES.as_bytes(), ts, id).expect("sign");
    assert_eq!(
        sw.header("webhook-signature"),
        expected[2].1.to_str().expect("ascii")
    );

    let stripe_header = received[2].header("stripe-signature");
    let (t, v1) = stripe_header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .expect("t=..,v1=..");
    let t: i64 = t.parse().expect("seconds");
    assert!((before - t).abs() <= 5);
    let expected = sign_at(&stripe(), EVENT_BYTES.as_bytes(), t, "").expect("sign");
    assert_eq!(
        format!("t={t},v1={v1}"),
        expected[0].1.to_str().expect("ascii")
    );

    assert_eq!(received[3].header("x-webhook-secret"), "s3cret");
    let unsigned = &received[4].headers;
    for name in [
        "x-fincode-signature",
        "webhook-signature",
        "stripe-signature",
    ] {
        assert!(!unsigned.contains_key(name));
    }
}

#[tokio::test]
async fn copies_are_byte_identical_redeliveries() {
    let receiver = Receiver::start().await;
    let events = vec![
        transaction_status_event("PCN1000000001", "PAID"),
        transaction_status_event("PCN1000000002", "FAILED"),
    ];
    let mut batch = receiver.batch(standard(), events.clone());
    batch.copies = 3;
    batch.concurrency = 1;
    let sent = send(None, batch).await;
    all_ok(&sent, 6);
    let order: Vec<_> = sent.iter().map(|s| (s.index, s.copy)).collect();
    assert_eq!(order, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]);

    // Concurrency 1 keeps the order: three copies of event 0, then of event 1.
    let received = receiver.received();
    assert_eq!(received.len(), 6);
    let signed = |r: &Received| {
        ["webhook-id", "webhook-timestamp", "webhook-signature"].map(|h| r.header(h).to_owned())
    };
    for (event, copies) in events.iter().zip(received.chunks(3)) {
        let first = &copies[0];
        assert_eq!(first.body, serde_json::to_vec(event).expect("json"));
        for copy in &copies[1..] {
            assert_eq!(copy.body, first.body);
            assert_eq!(signed(copy), signed(first));
        }
    }
    assert_ne!(
        received[0].header("webhook-id"),
        received[3].header("webhook-id")
    );
}

#[tokio::test]
async fn concurrent_batches_all_arrive() {
    let receiver = Receiver::start().await;
    let events: Vec<_> = (0..40)
        .map(|n| transaction_status_event(&format!("PCN{n:010}"), "PAID"))
        .collect();
    let mut batch = receiver.batch(hmac_sha256_hex(), events);
    batch.copies = 2;
    batch.concurrency = 8;
    let sent = send(None, batch).await;
    all_ok(&sent, 80);
    assert_eq!(receiver.received().len(), 80);
}

#[tokio::test]
async fn tamper_changes_the_body_but_not_the_signature() {
    let receiver = Receiver::start().await;
    let mut batch = receiver.batch(hmac_sha256_hex(), vec![event()]);
    batch.tamper = true;
    all_ok(&send(None, batch).await, 1);
    let received = receiver.received();
    let tampered = &received[0];
    assert_ne!(tampered.body, EVENT_BYTES.as_bytes());
    assert_eq!(tampered.body.len(), EVENT_BYTES.len());
    // Still the signature of the original bytes, which the receiver no longer has.
    assert_eq!(
        tampered.header("x-fincode-signature"),
        format!("sha256={HMAC_SHA256_HEX}")
    );
    let over_received = sign_at(&hmac_sha256_hex(), &tampered.body, 0, "").expect("sign");
    assert_ne!(
        tampered.header("x-fincode-signature"),
        over_received[0].1.to_str().expect("ascii")
    );
}

#[tokio::test]
async fn timestamp_offset_shows_in_the_headers() {
    let receiver = Receiver::start().await;
    for signing in [standard(), stripe()] {
        let mut batch = receiver.batch(signing, vec![event()]);
        batch.timestamp_offset_secs = -600;
        all_ok(&send(None, batch).await, 1);
    }
    let now = unix_now();
    let received = receiver.received();
    let sw: i64 = received[0]
        .header("webhook-timestamp")
        .parse()
        .expect("seconds");
    assert!((now - 600 - sw).abs() <= 5, "{sw} vs {now}");
    let stripe_t: i64 = received[1]
        .header("stripe-signature")
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(','))
        .map(|(t, _)| t)
        .expect("t=")
        .parse()
        .expect("seconds");
    assert!((now - 600 - stripe_t).abs() <= 5, "{stripe_t} vs {now}");
}

#[tokio::test]
async fn receiver_status_is_reported() {
    let receiver = Receiver::start().await;
    receiver.answer(503);
    let sent = send(None, receiver.batch(WebhookSigning::None, vec![event()])).await;
    assert_eq!(
        sent,
        vec![SentWebhook {
            index: 0,
            copy: 0,
            status: Some(503),
            error: None
        }]
    );
}

#[tokio::test]
async fn refused_connection_has_no_status_and_an_error() {
    // Bind then drop: nothing listens on that port any more.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    drop(listener);
    let batch = SendWebhooks {
        url: format!("http://{addr}/webhooks"),
        events: vec![event()],
        copies: 2,
        ..SendWebhooks::default()
    };
    let sent = send(None, batch).await;
    assert_eq!(sent.len(), 2);
    for entry in &sent {
        assert_eq!(entry.status, None);
        let error = entry.error.as_deref().expect("an error");
        assert!(error.to_ascii_lowercase().contains("refused"), "{error}");
    }
}

#[tokio::test]
async fn an_invalid_batch_fails_every_entry() {
    let batch = SendWebhooks {
        url: "http://127.0.0.1:1/".to_owned(),
        signing: WebhookSigning::StandardWebhooks {
            secret: "whsec_***".to_owned(),
        },
        events: vec![event(), event()],
        ..SendWebhooks::default()
    };
    let sent = send(None, batch).await;
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|s| {
        s.status.is_none()
            && s.error
                .as_deref()
                .is_some_and(|e| e.starts_with("invalid batch"))
    }));
}

// --- through the sandbox ---

async fn sandbox() -> (Sandbox, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::start(SandboxConfig {
        state_dir: dir.path().to_owned(),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    (sandbox, dir)
}

#[tokio::test]
async fn sandbox_sends_over_https_trusting_its_own_ca() {
    let (sandbox, _dir) = sandbox().await;
    let batch = SendWebhooks {
        url: format!("{}/sandbox/echo/webhooks", sandbox.base_url()),
        signing: standard(),
        events: vec![event()],
        copies: 2,
        ..SendWebhooks::default()
    };
    all_ok(&sandbox.send_webhooks(batch.clone()).await, 2);
    // Without the sandbox CA (the admin route's client) the handshake fails.
    let untrusted = send(None, batch).await;
    assert!(
        untrusted
            .iter()
            .all(|s| s.status.is_none() && s.error.is_some())
    );
    let echoed: Vec<_> = sandbox
        .requests()
        .into_iter()
        .filter(|r| r.uri.ends_with("/sandbox/echo/webhooks"))
        .collect();
    assert_eq!(echoed.len(), 2);
    for request in &echoed {
        assert_eq!(request.method, "POST");
        assert_eq!(request.version, "HTTP/1.1");
        assert!(
            request
                .headers
                .iter()
                .any(|(name, _)| name == "webhook-signature")
        );
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn admin_route_sends_webhooks() {
    let (sandbox, _dir) = sandbox().await;
    let receiver = Receiver::start().await;
    let admin: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let post = |body: Value| {
        let request = http::Request::post(format!("{}/webhooks/send", sandbox.admin_url()))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let admin = admin.clone();
        async move {
            let response = admin.request(request).await.expect("admin");
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&body).expect("json"),
            )
        }
    };

    let (status, body) = post(json!({
        "url": receiver.url,
        "signing": {"kind": "hmac", "secret": HMAC_SECRET, "algorithm": "sha256",
                    "encoding": "hex", "prefix": "sha256="},
        "events": [event()],
        "copies": 2,
    }))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"sent": [
            {"index": 0, "copy": 0, "status": 200, "error": null},
            {"index": 0, "copy": 1, "status": 200, "error": null},
        ]})
    );
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].body, EVENT_BYTES.as_bytes());
    assert_eq!(
        received[1].header("x-fincode-signature"),
        format!("sha256={HMAC_SHA256_HEX}")
    );

    let (status, body) = post(json!({
        "url": receiver.url,
        "signing": {"kind": "hmac", "secret": "k", "algorithm": "md5", "encoding": "hex"},
        "events": [event()],
    }))
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "VALIDATION_ERROR");
    let (status, _) = post(json!({"url": receiver.url})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(receiver.received().len(), 2);
    sandbox.shutdown().await;
}
