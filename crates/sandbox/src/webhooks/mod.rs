//! Sending webhooks as FinCode would: signed JSON POSTs to a URL under test.
//!
//! The sandbox signs with its own implementation of every scheme (the `hmac`, `sha2` and
//! `base64` crates directly) rather than borrowing the sidecar's signer: it is the independent
//! party the sidecar's verifier is tested against, so a bug shared by both sides cannot hide.
//!
//! - `batch`: what to send ([`SendWebhooks`]) and what became of it ([`SentWebhook`]);
//! - `signing`: the sandbox's own signer for every scheme ([`WebhookSigning`]);
//! - `send`: the batch scheduler: events in order, copies side by side, a concurrency cap;
//! - `client`: the pooled HTTP(S) client that delivers one request.
//!
//! The admin route that takes a batch as JSON is in `crate::admin`.

mod batch;
mod client;
mod send;
mod signing;

#[cfg(test)]
mod tests;

pub(crate) use self::send::send;
pub use self::{
    batch::{SendWebhooks, SentWebhook, transaction_status_event},
    signing::WebhookSigning,
};
