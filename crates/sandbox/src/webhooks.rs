//! Sending webhooks as FinCode would: signed JSON POSTs to a URL under test.
//!
//! The sandbox signs with its own implementation of every scheme (the `hmac`, `sha2` and
//! `base64` crates directly) rather than borrowing the sidecar's signer: it is the independent
//! party the sidecar's verifier is tested against, so a bug shared by both sides cannot hide.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Sha256, Sha512};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// One request, connection included, may take this long before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle pooled connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_HMAC_HEADER: &str = "x-fincode-signature";
const DEFAULT_STRIPE_HEADER: &str = "stripe-signature";
const DEFAULT_SHARED_SECRET_HEADER: &str = "x-webhook-secret";
const SANDBOX_USER_AGENT: &str = "fincode-sandbox-webhooks";

/// How a webhook is signed; every scheme signs the raw body bytes that are sent.
///
/// As JSON: `{"kind": "hmac", "secret": "..", "algorithm": "sha256", "encoding": "hex"}`,
/// `{"kind": "standard-webhooks", "secret": "whsec_.."}`, `{"kind": "stripe", "secret": ".."}`,
/// `{"kind": "shared-secret", "secret": ".."}` or `{"kind": "none"}`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum WebhookSigning {
    /// An HMAC of the body in one header, with no timestamp.
    Hmac {
        /// The key, as its UTF-8 bytes.
        secret: String,
        /// `sha256` or `sha512`.
        algorithm: String,
        /// `hex` (lowercase) or `base64` (standard, padded).
        encoding: String,
        /// The header carrying the signature; default `x-fincode-signature`.
        header: Option<String>,
        /// Written before the encoded signature, such as `sha256=`.
        prefix: Option<String>,
    },
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp` and `webhook-signature:
    /// v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    StandardWebhooks {
        /// `whsec_<base64 key>`; the key is the base64-decoded part after the prefix.
        secret: String,
    },
    /// Stripe-style `t=<timestamp>,v1=<hex HMAC-SHA256 of "{t}.{body}">`.
    Stripe {
        /// The key, as its UTF-8 bytes (a `whsec_` prefix is part of the key, as at Stripe).
        secret: String,
        /// The header; default `stripe-signature`.
        header: Option<String>,
    },
    /// A header whose value is the secret itself.
    SharedSecret {
        /// The value sent.
        secret: String,
        /// The header; default `x-webhook-secret`.
        header: Option<String>,
    },
    /// No signature at all (FinCode's documented behaviour).
    None,
}

/// One batch of webhooks to send; `POST /webhooks/send` takes the same JSON.
///
/// ```no_run
/// use fincode_sandbox::{SendWebhooks, WebhookSigning, transaction_status_event};
///
/// # async fn example(sandbox: &fincode_sandbox::Sandbox) {
/// let sent = sandbox
///     .send_webhooks(SendWebhooks {
///         url: "http://127.0.0.1:8080/webhooks/fincode".to_owned(),
///         signing: WebhookSigning::StandardWebhooks {
///             secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
///         },
///         events: vec![transaction_status_event("PCN1000000001", "PAID")],
///         copies: 2,
///         ..SendWebhooks::default()
///     })
///     .await;
/// assert!(sent.iter().all(|s| s.status == Some(200)));
/// # }
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendWebhooks {
    /// `http://` or `https://` (https trusts the webpki roots and the sandbox's own CA).
    pub url: String,
    /// How each event is signed.
    pub signing: WebhookSigning,
    /// The events; each is sent as its compact JSON bytes.
    pub events: Vec<Value>,
    /// How often each event is sent (duplicates, redeliveries); default 1. Copies of one event
    /// are byte-identical, headers included, and go out next to each other.
    #[serde(default = "default_copies")]
    pub copies: usize,
    /// Requests in flight at once; default 16, at least 1.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Change one byte of the body after signing, so the signature no longer matches.
    #[serde(default)]
    pub tamper: bool,
    /// Sign with the clock moved by this many seconds (e.g. -600 for a stale event). Only the
    /// timestamped schemes (`standard-webhooks`, `stripe`) carry a time.
    #[serde(default)]
    pub timestamp_offset_secs: i64,
    /// Headers appended to every request as given (a repeated name adds a second value).
    #[serde(default)]
    pub extra_headers: Vec<(String, String)>,
}

/// What happened to one request of a batch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SentWebhook {
    /// The event's position in [`SendWebhooks::events`].
    pub index: usize,
    /// Which copy of the event, from 0.
    pub copy: usize,
    /// The response status; `None` when no response arrived (refused, timed out, invalid batch).
    pub status: Option<u16>,
    /// Why the request failed, if it did.
    pub error: Option<String>,
}

/// A FinCode-shaped `TRANSACTION_STATUS` event, the same bytes for the same arguments.
///
/// ```
/// let event = fincode_sandbox::transaction_status_event("PCN1000000001", "PAID");
/// assert_eq!(event["Reference"], "PCN1000000001");
/// assert_eq!(event["msgCode"], "00");
/// ```
pub fn transaction_status_event(reference: &str, status: &str) -> Value {
    json!({
        "eventType": "TRANSACTION_STATUS",
        "Reference": reference,
        "Status": status,
        "msgCode": "00",
        "transactionId": format!("TXN-{reference}"),
        "amountSent": 1500,
        "beneficiaryFullName": "Jane Beneficiary",
    })
}

fn default_copies() -> usize {
    1
}

fn default_concurrency() -> usize {
    16
}

// === impl WebhookSigning ===

impl fmt::Debug for WebhookSigning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const REDACTED: &str = "[REDACTED]";
        match self {
            Self::Hmac {
                algorithm,
                encoding,
                header,
                prefix,
                ..
            } => f
                .debug_struct("Hmac")
                .field("secret", &REDACTED)
                .field("algorithm", algorithm)
                .field("encoding", encoding)
                .field("header", header)
                .field("prefix", prefix)
                .finish(),
            Self::StandardWebhooks { .. } => f
                .debug_struct("StandardWebhooks")
                .field("secret", &REDACTED)
                .finish(),
            Self::Stripe { header, .. } => f
                .debug_struct("Stripe")
                .field("secret", &REDACTED)
                .field("header", header)
                .finish(),
            Self::SharedSecret { header, .. } => f
                .debug_struct("SharedSecret")
                .field("secret", &REDACTED)
                .field("header", header)
                .finish(),
            Self::None => f.write_str("None"),
        }
    }
}

// === impl SendWebhooks ===

impl Default for SendWebhooks {
    /// An empty, unsigned batch to `http://127.0.0.1/`: fill in at least `url` and `events`.
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1/".to_owned(),
            signing: WebhookSigning::None,
            events: Vec::new(),
            copies: default_copies(),
            concurrency: default_concurrency(),
            tamper: false,
            timestamp_offset_secs: 0,
            extra_headers: Vec::new(),
        }
    }
}

impl SendWebhooks {
    /// Everything about the batch that can be wrong before a request is made.
    pub(crate) fn validate(&self) -> Result<(), String> {
        self.prepare().map(|_| ())
    }

    fn prepare(&self) -> Result<Prepared, String> {
        let uri: Uri = self
            .url
            .parse()
            .map_err(|e| format!("invalid url {:?}: {e}", self.url))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(format!(
                "url must be http:// or https:// with a host, not {:?}",
                self.url
            ));
        }
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".to_owned());
        }
        // Signing a dummy body checks the algorithm, encoding, header names and secret once,
        // so a bad configuration fails the whole batch instead of every request.
        sign_at(&self.signing, b"{}", 0, "msg_check")?;
        let extra_headers = self
            .extra_headers
            .iter()
            .map(|(name, value)| header_pair(name, value.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Prepared { uri, extra_headers })
    }
}

/// The parts of a batch checked once up front.
struct Prepared {
    uri: Uri,
    extra_headers: Vec<(HeaderName, HeaderValue)>,
}

// === sending ===

type PooledClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Sends a batch, trusting the webpki roots and, when given, the CA certificates in `ca_file`
/// (PEM). Never fails as a whole: a problem with the batch is reported on every entry.
pub(crate) async fn send(ca_file: Option<&Path>, batch: SendWebhooks) -> Vec<SentWebhook> {
    let prepared = match batch.prepare() {
        Ok(prepared) => prepared,
        Err(reason) => return fail_all(&batch, &format!("invalid batch: {reason}")),
    };
    let client = match build_client(ca_file).await {
        Ok(client) => client,
        Err(reason) => return fail_all(&batch, &reason),
    };
    let now = unix_now().saturating_add(batch.timestamp_offset_secs);

    let permits = Arc::new(Semaphore::new(batch.concurrency));
    let mut in_flight = JoinSet::new();
    for (index, event) in batch.events.iter().enumerate() {
        let (body, headers) = match signed_body(&batch, event, now) {
            Ok(signed) => signed,
            Err(reason) => {
                for copy in 0..batch.copies {
                    in_flight.spawn(std::future::ready(failed(index, copy, reason.clone())));
                }
                continue;
            }
        };
        for copy in 0..batch.copies {
            // Taking the permit before spawning keeps the send order: event by event, copies
            // of one event side by side (so duplicates race each other at the receiver).
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let request = build_request(&prepared, &headers, body.clone());
            let client = client.clone();
            in_flight.spawn(async move {
                let (status, error) = match request {
                    Ok(request) => deliver(&client, request).await,
                    Err(reason) => (None, Some(reason)),
                };
                drop(permit);
                SentWebhook {
                    index,
                    copy,
                    status,
                    error,
                }
            });
        }
    }

    let mut sent = Vec::with_capacity(batch.events.len().saturating_mul(batch.copies));
    while let Some(joined) = in_flight.join_next().await {
        match joined {
            Ok(entry) => sent.push(entry),
            Err(error) => tracing::warn!(%error, "a webhook send task failed"),
        }
    }
    sent.sort_by_key(|entry| (entry.index, entry.copy));
    sent
}

fn failed(index: usize, copy: usize, reason: String) -> SentWebhook {
    SentWebhook {
        index,
        copy,
        status: None,
        error: Some(reason),
    }
}

fn fail_all(batch: &SendWebhooks, reason: &str) -> Vec<SentWebhook> {
    (0..batch.events.len())
        .flat_map(|index| (0..batch.copies).map(move |copy| (index, copy)))
        .map(|(index, copy)| failed(index, copy, reason.to_owned()))
        .collect()
}

/// The bytes to send and the signature headers, signed before any tampering.
fn signed_body(
    batch: &SendWebhooks,
    event: &Value,
    timestamp: i64,
) -> Result<(Bytes, Vec<(HeaderName, HeaderValue)>), String> {
    let mut body = serde_json::to_vec(event).map_err(|e| format!("serialising the event: {e}"))?;
    // One id per event: copies are redeliveries of the same message, as a receiver sees them.
    let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
    let headers = sign_at(&batch.signing, &body, timestamp, &id)?;
    if batch.tamper {
        tamper(&mut body);
    }
    Ok((Bytes::from(body), headers))
}

/// Changes one byte and keeps the length: the last ASCII digit or letter is changed (a digit
/// goes up by one, a letter changes case), so JSON stays JSON and only the signature check can
/// notice; a body without one gets its first byte flipped.
fn tamper(body: &mut [u8]) {
    if let Some(byte) = body.iter_mut().rev().find(|b| b.is_ascii_alphanumeric()) {
        *byte = match *byte {
            b'9' => b'0',
            digit @ b'0'..=b'8' => digit + 1,
            letter => letter ^ 0x20,
        };
    } else if let Some(first) = body.first_mut() {
        *first ^= 0x01;
    }
}

fn build_request(
    prepared: &Prepared,
    signature: &[(HeaderName, HeaderValue)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(prepared.uri.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(USER_AGENT, HeaderValue::from_static(SANDBOX_USER_AGENT))
        .body(Full::new(body))
        .map_err(|e| format!("building the request: {e}"))?;
    let headers = request.headers_mut();
    for (name, value) in signature.iter().chain(&prepared.extra_headers) {
        headers.append(name.clone(), value.clone());
    }
    Ok(request)
}

/// Sends one request and reads the whole response, so the connection goes back to the pool.
async fn deliver(
    client: &PooledClient,
    request: Request<Full<Bytes>>,
) -> (Option<u16>, Option<String>) {
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| (None, error_chain(&e)))?;
        let status = response.status().as_u16();
        match response.into_body().collect().await {
            Ok(_) => Ok(status),
            Err(e) => Err((
                Some(status),
                format!("reading the response: {}", error_chain(&e)),
            )),
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(status)) => (Some(status), None),
        Ok(Err((status, error))) => (status, Some(error)),
        Err(_) => (
            None,
            Some(format!("timed out after {}s", REQUEST_TIMEOUT.as_secs())),
        ),
    }
}

/// hyper's client errors say little at the top ("client error (Connect)"): the cause, such as
/// "Connection refused", is further down the chain.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An HTTP/1.1 keep-alive pool; https trusts the webpki roots plus the CAs in `ca_file`.
async fn build_client(ca_file: Option<&Path>) -> Result<PooledClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let pem = tokio::fs::read(path)
            .await
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("parsing {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("trusting {}: {e}", path.display()))?;
        }
    }
    // ring only, as in tls.rs: no reliance on a process-wide default provider.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS client configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

// === signing ===

/// The headers `signing` adds for `body` at Unix time `timestamp` with message id `id` (only
/// Standard Webhooks uses the id; only Standard Webhooks and Stripe use the time).
pub(crate) fn sign_at(
    signing: &WebhookSigning,
    body: &[u8],
    timestamp: i64,
    id: &str,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    match signing {
        WebhookSigning::Hmac {
            secret,
            algorithm,
            encoding,
            header,
            prefix,
        } => {
            let tag = match algorithm.to_ascii_lowercase().as_str() {
                "sha256" => hmac_sha256(secret.as_bytes(), &[body])?,
                "sha512" => hmac_sha512(secret.as_bytes(), &[body])?,
                other => {
                    return Err(format!(
                        "hmac algorithm must be sha256 or sha512, not {other:?}"
                    ));
                }
            };
            let encoded = match encoding.to_ascii_lowercase().as_str() {
                "hex" => to_hex(&tag),
                "base64" => STANDARD.encode(&tag),
                other => {
                    return Err(format!(
                        "hmac encoding must be hex or base64, not {other:?}"
                    ));
                }
            };
            let prefix = prefix.as_deref().unwrap_or_default();
            Ok(vec![secret_header(
                header.as_deref().unwrap_or(DEFAULT_HMAC_HEADER),
                format!("{prefix}{encoded}"),
            )?])
        }
        WebhookSigning::StandardWebhooks { secret } => {
            let encoded_key = secret.strip_prefix("whsec_").unwrap_or(secret);
            let key = STANDARD
                .decode(encoded_key)
                .map_err(|e| format!("a standard-webhooks secret is whsec_<base64>: {e}"))?;
            let timestamp = timestamp.to_string();
            let tag = hmac_sha256(
                &key,
                &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
            )?;
            Ok(vec![
                header_pair("webhook-id", id.to_owned())?,
                header_pair("webhook-timestamp", timestamp)?,
                secret_header("webhook-signature", format!("v1,{}", STANDARD.encode(tag)))?,
            ])
        }
        WebhookSigning::Stripe { secret, header } => {
            let timestamp = timestamp.to_string();
            let tag = hmac_sha256(secret.as_bytes(), &[timestamp.as_bytes(), b".", body])?;
            Ok(vec![secret_header(
                header.as_deref().unwrap_or(DEFAULT_STRIPE_HEADER),
                format!("t={timestamp},v1={}", to_hex(&tag)),
            )?])
        }
        WebhookSigning::SharedSecret { secret, header } => Ok(vec![secret_header(
            header.as_deref().unwrap_or(DEFAULT_SHARED_SECRET_HEADER),
            secret.clone(),
        )?]),
        WebhookSigning::None => Ok(Vec::new()),
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
    for part in parts {
        mac.update(part);
    }
    Ok(mac.finalize().into_bytes().to_vec())
}

fn hmac_sha512(key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, String> {
    let mut mac = Hmac::<Sha512>::new_from_slice(key).map_err(|e| e.to_string())?;
    for part in parts {
        mac.update(part);
    }
    Ok(mac.finalize().into_bytes().to_vec())
}

fn to_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn header_pair(name: &str, value: String) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("invalid header name {name:?}"))?;
    let value =
        HeaderValue::try_from(value).map_err(|_| format!("invalid value for header {name}"))?;
    Ok((name, value))
}

/// A header that carries a secret or a signature: marked sensitive so nothing logs it.
fn secret_header(name: &str, value: String) -> Result<(HeaderName, HeaderValue), String> {
    let (name, mut value) = header_pair(name, value)?;
    value.set_sensitive(true);
    Ok((name, value))
}

#[cfg(test)]
mod tests {
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
        SendWebhooks, SentWebhook, WebhookSigning, send, sign_at, tamper, transaction_status_event,
        unix_now,
    };
    use crate::{Sandbox, SandboxConfig};

    /// The compact bytes of `event()`, which the HMAC and Stripe vectors below are over.
    const EVENT_BYTES: &str = r#"{"Reference":"PCN1000000001","Status":"PAID"}"#;
    const HMAC_SECRET: &str = "fincode-secret";
    /// HMAC-SHA256(HMAC_SECRET, EVENT_BYTES), hex.
    const HMAC_SHA256_HEX: &str =
        "ce81068a6a53d40d29a4f4ddb0ca42db4fd5aebc703c369c9b3129c9da15e54d";
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

    #[test]
    fn hmac_known_answers() {
        let sha256 = sign_at(&hmac_sha256_hex(), EVENT_BYTES.as_bytes(), 0, "ignored");
        assert_eq!(
            header_text(&sha256.expect("sign")),
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
        let sha512 = sign_at(&sha512, EVENT_BYTES.as_bytes(), 0, "ignored");
        assert_eq!(
            header_text(&sha512.expect("sign")),
            vec![pair("x-signature", HMAC_SHA512_BASE64)]
        );
    }

    #[test]
    fn stripe_known_answer() {
        let headers = sign_at(&stripe(), EVENT_BYTES.as_bytes(), 1_700_000_000, "ignored");
        assert_eq!(
            header_text(&headers.expect("sign")),
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
        assert!(
            !batch.tamper && batch.timestamp_offset_secs == 0 && batch.extra_headers.is_empty()
        );
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
}
