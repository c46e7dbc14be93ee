//! [`ResponseFuture`]: the refusal, or the admitted call holding its permit.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Response;
use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;

use crate::SidecarError;

pin_project! {
    /// Holds the permit until the response head is ready (or the app gives up).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        pub(super) state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    pub(super) enum State<F> {
        Admitted { #[pin] inner: F, permit: Option<OwnedSemaphorePermit> },
        Shed { error: Option<SidecarError> },
    }
}

// === impl ResponseFuture ===

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
