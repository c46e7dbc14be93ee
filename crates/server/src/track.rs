//! Wraps a listener's service to count requests in flight per connection (a request is in
//! flight until its response body has been sent or dropped) and to hand it the peer.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::{
    connections::Activity,
    hook::{Finish, OnRequest},
};

/// The client's address, as a request extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// A request extension through which a service lets its request be evicted at the
/// connection cap while the sender is not yet trusted.
///
/// The webhook listener marks a request while it reads and verifies an unsigned body: at 1
/// byte a second such a body would hold its connection for the whole body-read timeout,
/// and enough of them would fill the cap and refuse FinCode's signed event as `full`.
/// Evicting one loses nothing that a verified sender is owed.
#[derive(Clone, Debug)]
pub struct Evictable(Arc<Activity>);

/// Keeps a request evictable until dropped.
#[derive(Debug)]
#[must_use = "the request is evictable only while the guard lives"]
pub struct EvictableGuard(Arc<Activity>);

/// Counts each request in flight on its connection and hands it the peer: the steps of
/// the [`Hooked`](crate::hook::Hooked) service every connection's service is wrapped in.
#[derive(Clone)]
pub(crate) struct Track {
    pub(crate) peer: SocketAddr,
    pub(crate) activity: Arc<Activity>,
}

/// Counts one request in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: Arc<Activity>) -> Self {
        activity.request_started();
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

// === impl Evictable ===

impl Evictable {
    /// Marks the request evictable at the cap until the guard is dropped (e.g. once the
    /// sender is verified). Every request in flight on a connection must be marked for the
    /// connection to be evicted.
    pub fn mark(&self) -> EvictableGuard {
        self.0.mark_evictable();
        EvictableGuard(self.0.clone())
    }
}

impl Drop for EvictableGuard {
    fn drop(&mut self) {
        self.0.unmark_evictable();
    }
}

// === impl Track ===

impl<B> OnRequest<B> for Track {
    type Body = B;
    type Finish = UntilBodyDone;

    fn on_request(&self, mut req: Request<B>) -> (Request<B>, UntilBodyDone) {
        let in_flight = InFlight::new(self.activity.clone());
        req.extensions_mut().insert(Peer(self.peer));
        req.extensions_mut()
            .insert(Evictable(self.activity.clone()));
        (req, UntilBodyDone(Some(in_flight)))
    }
}

/// Hands the request's count to its response body once the head is ready (which is
/// progress too).
pub(crate) struct UntilBodyDone(Option<InFlight>);

impl<B> Finish<Result<Response<B>, Infallible>> for UntilBodyDone {
    type Output = Result<Response<TrackedBody<B>>, Infallible>;

    fn finish(&mut self, output: Result<Response<B>, Infallible>) -> Self::Output {
        let Ok(response) = output;
        let in_flight = self.0.take();
        if let Some(in_flight) = &in_flight {
            in_flight.0.progress();
        }
        Ok(response.map(|inner| TrackedBody { inner, in_flight }))
    }
}

pin_project! {
    /// A response body that keeps its request counted as in flight until it is done.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        in_flight: Option<InFlight>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if let (Poll::Ready(Some(_)), Some(in_flight)) = (&frame, &this.in_flight) {
            in_flight.0.progress();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
