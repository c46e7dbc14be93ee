//! A layer whose whole work is a step on the request and a step once the inner future is
//! ready (count a request in flight, stamp a header, start a span and record it, wrap
//! the body): [`HookLayer`] / [`Hooked`] around an [`OnRequest`], with [`OnReady`] as the
//! response future around its [`Finish`].
//!
//! Such layers used to repeat the same service struct, `Layer` impl, `poll_ready` and
//! pinned future around their few lines of their own; here those are written once and a
//! layer keeps only its two steps. Everything is generic, nothing boxed: the hot path
//! pays nothing for the sharing. It sits in this crate because it is the lowest one that
//! both the listeners and the egress stack build their services on.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Request;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// The step on the request: what goes on to the inner service, and the [`Finish`] its
/// response future will run.
pub trait OnRequest<B> {
    /// The request body the inner service gets.
    type Body;
    /// The step once the inner future is ready.
    type Finish;

    /// Prepares `req` for the inner service.
    fn on_request(&self, req: Request<B>) -> (Request<Self::Body>, Self::Finish);
}

/// What a layer does with the inner future's output before handing it on.
///
/// It takes `&mut self` rather than `self` so that a future polled again after it
/// completed polls its inner future again (as a hand-written one would) instead of
/// panicking here: state used once is kept in an `Option` and taken.
pub trait Finish<T> {
    /// What the layer's future answers.
    type Output;

    /// Turns the inner future's `output` into the layer's.
    fn finish(&mut self, output: T) -> Self::Output;
}

/// Adds [`Hooked`] with the steps `P` to a stack.
#[derive(Clone, Copy, Debug)]
pub struct HookLayer<P> {
    steps: P,
}

/// Runs `P`'s step on each request and its [`Finish`] on each response.
#[derive(Clone, Copy, Debug)]
pub struct Hooked<S, P> {
    inner: S,
    steps: P,
}

pin_project! {
    /// The inner future, then [`Finish::finish`] on its output.
    #[derive(Debug)]
    pub struct OnReady<F, H> {
        #[pin]
        inner: F,
        hook: H,
    }
}

// === impl HookLayer ===

impl<P> HookLayer<P> {
    /// The layer that runs `steps` around each call.
    pub fn new(steps: P) -> Self {
        Self { steps }
    }
}

impl<S, P: Clone> Layer<S> for HookLayer<P> {
    type Service = Hooked<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Hooked::new(inner, self.steps.clone())
    }
}

// === impl Hooked ===

impl<S, P> Hooked<S, P> {
    /// `inner` with `steps` around each call.
    pub fn new(inner: S, steps: P) -> Self {
        Self { inner, steps }
    }

    /// The steps this service runs.
    pub fn steps(&self) -> &P {
        &self.steps
    }
}

impl<S, P, B, R> Service<Request<B>> for Hooked<S, P>
where
    P: OnRequest<B>,
    S: Service<Request<P::Body>>,
    P::Finish: Finish<Result<S::Response, S::Error>, Output = Result<R, S::Error>>,
{
    type Response = R;
    type Error = S::Error;
    type Future = OnReady<S::Future, P::Finish>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (req, hook) = self.steps.on_request(req);
        OnReady::new(self.inner.call(req), hook)
    }
}

// === impl OnReady ===

impl<F, H> OnReady<F, H> {
    /// `inner`, finished by `hook`.
    pub fn new(inner: F, hook: H) -> Self {
        Self { inner, hook }
    }
}

impl<F, H> Future for OnReady<F, H>
where
    F: Future,
    H: Finish<F::Output>,
{
    type Output = H::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        Poll::Ready(this.hook.finish(output))
    }
}
