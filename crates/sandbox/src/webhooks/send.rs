//! The batch scheduler: signs each event once, sends its copies side by side, and keeps at
//! most `concurrency` requests in flight.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::Full;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{
    SendWebhooks, SentWebhook,
    batch::Prepared,
    client::{build_client, deliver},
    signing::sign_at,
};

const SANDBOX_USER_AGENT: &str = "fincode-sandbox-webhooks";

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
pub(super) fn tamper(body: &mut [u8]) {
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

pub(super) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}
