//! One connection's requests served by one instance of the stack, called in place.
//!
//! hyper calls a service through `&self`; tower's services take `&mut self` and must be
//! ready first. hyper-util's `TowerToHyperService` bridges the two by cloning the whole
//! tower stack for every request and driving the clone through `poll_ready` and `call`
//! (`Oneshot`). The egress stack is some twenty layers, each holding its shared state
//! behind `Arc`s: every request counted all of them up and down again and moved the
//! clone around (callgrind: about 2 600 instructions a request for the clone, its moves
//! and its drop).
//!
//! [`InPlace`] keeps the connection's one instance behind a `RefCell` (a connection's
//! requests are all called from its own task, never at once) and calls it directly when
//! it is ready, which every layer of this workspace always is. A service that is not
//! ready (or reports an error from `poll_ready`) is cloned and driven as before, so a
//! service with real back-pressure still works.

use std::{
    cell::RefCell,
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use pin_project_lite::pin_project;
use tower::{Service, ServiceExt as _, util::Oneshot};

/// See the module docs.
#[derive(Debug)]
pub(crate) struct InPlace<S> {
    service: RefCell<S>,
}

impl<S> InPlace<S> {
    /// Serves with `service`.
    pub(crate) fn new(service: S) -> Self {
        Self {
            service: RefCell::new(service),
        }
    }
}

impl<S, R> hyper::service::Service<R> for InPlace<S>
where
    S: Service<R> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = InPlaceFuture<S, R>;

    fn call(&self, req: R) -> Self::Future {
        // hyper never calls a service from inside its own `call`, so the borrow is free;
        // it ends before this returns (tower futures do not borrow the service).
        let mut service = self.service.borrow_mut();
        let mut cx = Context::from_waker(Waker::noop());
        match service.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => InPlaceFuture::Called {
                future: service.call(req),
            },
            // Not ready now, or an error that `poll_ready` reports: a clone waits for
            // readiness with a real waker, or returns that error, as hyper-util's adapter
            // does for every request.
            Poll::Pending | Poll::Ready(Err(_)) => InPlaceFuture::Waiting {
                oneshot: service.clone().oneshot(req),
            },
        }
    }
}

pin_project! {
    /// The response of an [`InPlace`] call.
    #[project = Projected]
    pub(crate) enum InPlaceFuture<S, R>
    where
        S: Service<R>,
    {
        /// Called on the connection's instance.
        Called { #[pin] future: S::Future },
        /// Driven on a clone that was not ready.
        Waiting { #[pin] oneshot: Oneshot<S, R> },
    }
}

impl<S, R> Future for InPlaceFuture<S, R>
where
    S: Service<R>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projected::Called { future } => future.poll(cx),
            Projected::Waiting { oneshot } => oneshot.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::Poll,
    };

    use hyper::service::Service as _;

    use super::InPlace;

    /// Counts its calls (and its instances, by `clones`' references); not ready at its
    /// first look when `ready` is false.
    #[derive(Clone)]
    struct Counting {
        /// Held for its reference count.
        _clones: Arc<AtomicUsize>,
        calls: Arc<AtomicUsize>,
        ready: bool,
    }

    impl tower::Service<u32> for Counting {
        type Response = u32;
        type Error = Infallible;
        type Future = std::future::Ready<Result<u32, Infallible>>;

        fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
            if self.ready {
                Poll::Ready(Ok(()))
            } else {
                // Ready on the next look, as a service whose capacity frees up.
                self.ready = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }

        fn call(&mut self, req: u32) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(req + 1))
        }
    }

    fn counting(ready: bool) -> (Counting, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (clones, calls) = (Arc::default(), Arc::default());
        let service = Counting {
            _clones: Arc::clone(&clones),
            calls: Arc::clone(&calls),
            ready,
        };
        (service, clones, calls)
    }

    /// How many instances of the service exist (each holds a reference to `clones`).
    fn instances(clones: &Arc<AtomicUsize>) -> usize {
        Arc::strong_count(clones) - 1
    }

    #[tokio::test]
    async fn a_ready_service_is_called_in_place_without_a_clone() {
        let (service, clones, calls) = counting(true);
        let in_place = InPlace::new(service);
        for n in 0..3 {
            assert_eq!(in_place.call(n).await, Ok(n + 1));
            // Only the connection's own instance exists: no clone was made for the call.
            assert_eq!(instances(&clones), 1);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_service_that_is_not_ready_is_driven_on_a_clone_until_it_is() {
        let (service, clones, calls) = counting(false);
        let in_place = InPlace::new(service);
        let future = in_place.call(41);
        // The clone lives in the future while it waits.
        assert_eq!(instances(&clones), 2);
        assert_eq!(future.await, Ok(42));
        assert_eq!(instances(&clones), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
