//! Load shedding: a cap on requests in flight. Above it the next request gets 503
//! `overloaded` at once, rather than queueing behind a slow FinCode until the app's own
//! timeouts fire and it retries on top of the queue.
//!
//! Hand-written rather than `tower::load_shed` + `tower::limit::ConcurrencyLimit`: those
//! reserve the permit in `poll_ready` and report overload as a boxed error, while this
//! stack answers every failure with a typed [`SidecarError`]; a semaphore's
//! `try_acquire` in `call` is the whole mechanism.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use arc_swap::ArcSwap;
use http::{Request, Response};
use pin_project_lite::pin_project;
use prometheus_client::{metrics::counter::Counter, registry::Registry};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use crate::{ErrorKind, SidecarError};

/// Adds [`LoadShed`] to a stack.
///
/// The cap sits behind an [`ArcSwap`] so a config reload can change it
/// ([`Self::set_max`]): requests admitted before hold permits of the old cap and release
/// them there, so for as long as they run the two caps add up.
#[derive(Clone, Debug)]
pub struct LoadShedLayer {
    cap: Arc<ArcSwap<Cap>>,
    shed: Counter,
}

/// Refuses requests beyond the in-flight cap.
#[derive(Clone, Debug)]
pub struct LoadShed<S> {
    inner: S,
    cap: Arc<ArcSwap<Cap>>,
    shed: Counter,
}

/// One in-flight cap: its permits and the number they started at (for the error).
#[derive(Debug)]
struct Cap {
    permits: Arc<Semaphore>,
    max: usize,
}

impl Cap {
    fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
        }
    }
}

// === impl LoadShedLayer ===

impl LoadShedLayer {
    /// At most `max` requests in flight (`limits.max_concurrent_requests`).
    pub fn new(max: usize, registry: &mut Registry) -> Self {
        let shed = Counter::default();
        registry.register(
            "fincode_shed",
            "Requests refused with 503 overloaded because too many were in flight",
            shed.clone(),
        );
        Self {
            cap: Arc::new(ArcSwap::from_pointee(Cap::new(max))),
            shed,
        }
    }

    /// Applies a reloaded `limits.max_concurrent_requests` to requests that arrive from
    /// now on; an unchanged value keeps the current permits.
    pub fn set_max(&self, max: usize) {
        if self.cap.load().max != max {
            self.cap.store(Arc::new(Cap::new(max)));
        }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            cap: self.cap.clone(),
            shed: self.shed.clone(),
        }
    }
}

// === impl LoadShed ===

impl<S, B, RB> Service<Request<B>> for LoadShed<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = SidecarError>,
{
    type Response = Response<RB>;
    type Error = SidecarError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let cap = self.cap.load();
        if let Ok(permit) = cap.permits.clone().try_acquire_owned() {
            return ResponseFuture {
                state: State::Admitted {
                    inner: self.inner.call(req),
                    permit: Some(permit),
                },
            };
        }
        self.shed.inc();
        let error = SidecarError::new(
            ErrorKind::Overloaded,
            format!(
                "{} requests are already in flight (limits.max_concurrent_requests); retry with backoff, or raise the limit if FinCode keeps up",
                cap.max
            ),
        );
        ResponseFuture {
            state: State::Shed { error: Some(error) },
        }
    }
}

pin_project! {
    /// Holds the permit until the response head is ready (or the app gives up).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Admitted { #[pin] inner: F, permit: Option<OwnedSemaphorePermit> },
        Shed { error: Option<SidecarError> },
    }
}

impl<F, RB> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, SidecarError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Admitted { inner, permit } => {
                let output = std::task::ready!(inner.poll(cx));
                drop(permit.take());
                Poll::Ready(output)
            }
            StateProj::Shed { error } => match error.take() {
                Some(error) => Poll::Ready(Err(error)),
                // Polled again after completion.
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::{ServiceExt, service_fn};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn refuses_beyond_the_cap_at_once_and_frees_permits_when_done() {
        let mut registry = Registry::default();
        let layer = LoadShedLayer::new(2, &mut registry);
        let svc = layer.layer(service_fn(|_req: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, SidecarError>(Response::new(()))
        }));
        let first = tokio::spawn(svc.clone().oneshot(Request::new(())));
        let second = tokio::spawn(svc.clone().oneshot(Request::new(())));
        tokio::task::yield_now().await;
        let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Overloaded);
        assert!(err.detail().contains("limits.max_concurrent_requests"));
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        // Both permits are back.
        svc.clone().oneshot(Request::new(())).await.unwrap();

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("fincode_shed_total 1"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_cap_applies_to_requests_that_arrive_after_it() {
        let layer = LoadShedLayer::new(1, &mut Registry::default());
        let svc = layer.layer(service_fn(|_req: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, SidecarError>(Response::new(()))
        }));
        let first = tokio::spawn(svc.clone().oneshot(Request::new(())));
        tokio::task::yield_now().await;
        svc.clone().oneshot(Request::new(())).await.unwrap_err();
        layer.set_max(2);
        // Two new permits; the first request still holds one of the old cap.
        let second = tokio::spawn(svc.clone().oneshot(Request::new(())));
        let third = tokio::spawn(svc.clone().oneshot(Request::new(())));
        tokio::task::yield_now().await;
        let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
        assert!(err.detail().starts_with("2 requests"), "{}", err.detail());
        for handle in [first, second, third] {
            handle.await.unwrap().unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_request_frees_its_permit() {
        let layer = LoadShedLayer::new(1, &mut Registry::default());
        let svc = layer.layer(service_fn(|_req: Request<()>| async {
            tokio::time::sleep(Duration::from_hours(1)).await;
            Ok::<_, SidecarError>(Response::new(()))
        }));
        let pending = svc.clone().oneshot(Request::new(()));
        let timed_out = tokio::time::timeout(Duration::from_millis(10), pending).await;
        assert!(timed_out.is_err());
        // The dropped future released the permit: a new request is admitted (and
        // times out waiting, rather than being shed).
        let again = tokio::time::timeout(
            Duration::from_millis(10),
            svc.clone().oneshot(Request::new(())),
        )
        .await;
        assert!(again.is_err(), "admitted, not shed");
    }
}
