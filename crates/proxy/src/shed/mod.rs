//! Load shedding: a cap on requests in flight. Above it the next request gets 503
//! `overloaded` at once, rather than queueing behind a slow FinCode until the app's own
//! timeouts fire and it retries on top of the queue.
//!
//! Hand-written rather than `tower::load_shed` + `tower::limit::ConcurrencyLimit`: those
//! reserve the permit in `poll_ready` and report overload as a boxed error, while this
//! stack answers every failure with a typed [`SidecarError`](crate::SidecarError); a semaphore's
//! `try_acquire` in `call` is the whole mechanism.

mod future;
mod layer;
mod service;

#[cfg(test)]
mod tests;

pub use self::{future::ResponseFuture, layer::LoadShedLayer, service::LoadShed};
