//! Delivery over HTTP to the app, signed with the sidecar's own Standard Webhooks secret.
//!
//! What the app receives: the original body byte for byte, the provider's headers (its
//! own `webhook-*` signature headers replaced by the sidecar's), `X-Request-ID` (the
//! correlation id stamped at receipt), and `webhook-id` / `webhook-timestamp` /
//! `webhook-signature` so it can verify the sidecar with any Standard Webhooks library.
//! `webhook-id` is `evt_<uid>`, the event's UUIDv7, the same on every attempt and unique
//! across replicas and database files: the app deduplicates on it.
//!
//! With `webhooks.confirm_by_query`, an event is delivered only after FinCode, asked
//! through the sidecar's own egress port (credentials, retries and audit included),
//! reports the same status: an unsigned event cannot make the app act on a payment
//! FinCode does not know.

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use fincode_backoff::retry_after;
use fincode_config::KeyTemplate;
use fincode_store::StoredEvent;
use http::{HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use secrecy::SecretString;

use crate::{
    dispatcher::{Attempt, BoxFuture, Deliver},
    verify::{Scheme, sign},
};

/// The most of an app's answer that is read (and discarded) so the connection can be
/// reused.
const MAX_ANSWER: usize = 64 * 1024;

/// Headers of the provider that the sidecar's own signature replaces.
const REPLACED: [&str; 4] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
];

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Confirm-by-query settings.
#[derive(Debug)]
pub struct Confirm {
    /// The sidecar's egress base, e.g. `http://127.0.0.1:8080`.
    pub egress: String,
    /// The path template, e.g. `/transactionmanagement/transactions/{Reference}`.
    pub path: KeyTemplate,
    /// Where FinCode's answer holds the status.
    pub status_pointer: String,
}

/// Delivers to `deliver_to` over HTTP(S).
pub struct HttpDelivery {
    client: HttpClient,
    deliver_to: Uri,
    signing_secret: SecretString,
    timeout: Duration,
    confirm: Option<Arc<Confirm>>,
}

impl fmt::Debug for HttpDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpDelivery")
            .field("deliver_to", &self.deliver_to)
            .field("signing_secret", &"[REDACTED]")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

// === impl HttpDelivery ===

impl HttpDelivery {
    /// A client for `deliver_to` (http or https with the webpki roots).
    pub fn new(
        deliver_to: Uri,
        signing_secret: SecretString,
        timeout: Duration,
        confirm: Option<Confirm>,
    ) -> Self {
        // rustls's safe default versions; hyper-rustls sets ALPN (HTTP/1.1 only).
        let tls = fincode_server::tls::client_config(
            fincode_server::tls::webpki_roots(),
            rustls::DEFAULT_VERSIONS,
            &[],
        );
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let connector = match tls {
            Ok(tls) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http),
            // ring's default versions always build; fall back to plain roots if not.
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_webpki_roots()
                .https_or_http()
                .enable_http1()
                .wrap_connector(http),
        };
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            deliver_to,
            signing_secret,
            timeout,
            confirm: confirm.map(Arc::new),
        }
    }

    /// One attempt under one deadline, `timeout` from now: the confirm query, its answer,
    /// the delivery and the app's status all share it, so an attempt cannot outlive its
    /// lease however the time is spent (a confirm answer that never ends included).
    async fn send(&self, event: &StoredEvent) -> Attempt {
        let deadline = tokio::time::Instant::now() + self.timeout;
        if let Some(confirm) = &self.confirm
            && let Err(unconfirmed) = self.confirmed(confirm, event, deadline).await
        {
            return match unconfirmed {
                Unconfirmed::TimedOut => timed_out(),
                Unconfirmed::Superseded => Attempt::Superseded,
                Unconfirmed::Failed(why) => Attempt::Failed {
                    reason: "unconfirmed",
                    status: None,
                    why: why.to_owned(),
                    retry_after: None,
                },
            };
        }
        let message_id = format!("evt_{}", event.uid);
        let Ok(signature) = sign(
            &Scheme::StandardWebhooks,
            &self.signing_secret,
            &event.body,
            std::time::SystemTime::now(),
            &message_id,
        ) else {
            return Attempt::Failed {
                reason: "signing_failed",
                status: None,
                why: "signing failed (webhooks.signing_secret_env)".to_owned(),
                retry_after: None,
            };
        };
        let mut request = Request::new(Full::new(event.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.deliver_to.clone();
        let headers = request.headers_mut();
        for (name, value) in &event.headers {
            if REPLACED.contains(&name.as_str()) {
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                headers.append(name, value);
            }
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(id) = HeaderValue::try_from(event.correlation_id.as_str()) {
            headers.insert("x-request-id", id);
        }
        for (name, value) in signature {
            headers.insert(name, value);
        }
        match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Err(_) => timed_out(),
            Ok(Err(error)) => {
                let (reason, why) = if error.is_connect() {
                    ("connect_error", "connect error")
                } else {
                    ("connection_error", "connection error")
                };
                Attempt::Failed {
                    reason,
                    status: None,
                    why: why.to_owned(),
                    retry_after: None,
                }
            }
            Ok(Ok(response)) => {
                let status = response.status();
                let retry_after =
                    retry_after::parse(response.headers(), std::time::SystemTime::now());
                // Read the answer so the connection is reused; its content is not used, and
                // running out of time here does not change the verdict (the status is in).
                let _ = tokio::time::timeout_at(
                    deadline,
                    Limited::new(response.into_body(), MAX_ANSWER).collect(),
                )
                .await;
                if status.is_success() {
                    Attempt::Delivered {
                        status: status.as_u16(),
                    }
                } else {
                    Attempt::Failed {
                        reason: "app_status",
                        status: Some(status.as_u16()),
                        why: format!("status {}", status.as_u16()),
                        retry_after,
                    }
                }
            }
        }
    }

    /// Asks FinCode (through the egress port) whether the event's status is real.
    async fn confirmed(
        &self,
        confirm: &Confirm,
        event: &StoredEvent,
        deadline: tokio::time::Instant,
    ) -> Result<(), Unconfirmed> {
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&event.body) else {
            return Err(Unconfirmed::Failed("unconfirmed: the event is not JSON"));
        };
        let Some(path) = confirm.path.render(&body, &http::HeaderMap::new()) else {
            return Err(Unconfirmed::Failed(
                "unconfirmed: the event lacks a field of webhooks.confirm_path",
            ));
        };
        let claimed = body.get("Status").and_then(|s| s.as_str()).unwrap_or("");
        let uri: Uri = format!("{}{}", confirm.egress, path).parse().map_err(|_| {
            Unconfirmed::Failed("unconfirmed: webhooks.confirm_path is not a valid path")
        })?;
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = uri;
        if let Ok(id) = HeaderValue::try_from(event.correlation_id.as_str()) {
            request.headers_mut().insert("x-request-id", id);
        }
        let response = tokio::time::timeout_at(deadline, self.client.request(request))
            .await
            .map_err(|_| Unconfirmed::TimedOut)?
            .map_err(|_| Unconfirmed::Failed("unconfirmed: the egress port is unreachable"))?;
        if !response.status().is_success() {
            return Err(Unconfirmed::Failed(
                "unconfirmed: FinCode did not answer the query with 2xx",
            ));
        }
        let answer = Limited::new(response.into_body(), MAX_ANSWER).collect();
        let answer = tokio::time::timeout_at(deadline, answer)
            .await
            .map_err(|_| Unconfirmed::TimedOut)?
            .map_err(|_| Unconfirmed::Failed("unconfirmed: FinCode's answer could not be read"))?
            .to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&answer)
            .map_err(|_| Unconfirmed::Failed("unconfirmed: FinCode's answer is not JSON"))?;
        let actual = answer
            .pointer(&confirm.status_pointer)
            .and_then(|s| s.as_str())
            .unwrap_or("");
        if claimed.is_empty() || actual.is_empty() {
            return Err(Unconfirmed::Failed(
                "unconfirmed: no status to compare in the event or FinCode's answer",
            ));
        }
        if actual.eq_ignore_ascii_case(claimed) {
            Ok(())
        } else {
            // FinCode knows the transaction, at another status: it has moved past the
            // event's (or never was at it). Either way the event must not be delivered
            // now, nor hold back the transaction's later events. The sidecar has no order
            // of FinCode's statuses, so any other status counts as later.
            Err(Unconfirmed::Superseded)
        }
    }
}

/// Why confirm-by-query did not confirm an event.
#[derive(Debug, PartialEq, Eq)]
enum Unconfirmed {
    /// The attempt's deadline passed.
    TimedOut,
    /// FinCode reports another status now.
    Superseded,
    /// Anything else, said in a few words (never content).
    Failed(&'static str),
}

/// The attempt's deadline passed.
fn timed_out() -> Attempt {
    Attempt::Failed {
        reason: "timeout",
        status: None,
        why: "timeout".to_owned(),
        retry_after: None,
    }
}

impl Deliver for HttpDelivery {
    fn deliver<'a>(&'a self, event: &'a StoredEvent) -> BoxFuture<'a, Attempt> {
        Box::pin(self.send(event))
    }
}
