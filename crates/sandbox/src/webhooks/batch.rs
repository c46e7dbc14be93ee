//! A batch of webhooks to send, checked once up front, and the report on each request.

use http::{HeaderName, HeaderValue, Uri};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    WebhookSigning,
    signing::{header_pair, sign_at},
};

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

    pub(super) fn prepare(&self) -> Result<Prepared, String> {
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
pub(super) struct Prepared {
    pub(super) uri: Uri,
    pub(super) extra_headers: Vec<(HeaderName, HeaderValue)>,
}
