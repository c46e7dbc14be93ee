//! What the layers that await more than once per request share (authorize's replay,
//! retry's tries, audit's closed mode): their boxed response future, the stack below
//! them, and taking the service that was driven to readiness.

use std::{future::Future, pin::Pin};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use tower::Service;

use crate::SidecarError;

/// The stack below retry and authorize, as their boxed futures need it: it takes a
/// request whose body is the kept copy of a replay (`Left`) or the app's (`Right`), and
/// it and its future may move to another thread.
pub trait ReplayStack<B>:
    Service<Request<Either<Full<Bytes>, B>>, Error = SidecarError, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<S, B> ReplayStack<B> for S where
    S: Service<Request<Either<Full<Bytes>, B>>, Error = SidecarError, Future: Send>
        + Clone
        + Send
        + 'static
{
}

/// The response future of a layer written as an `async` block: boxed, since the block's
/// type cannot be named.
pub(crate) type BoxResponseFuture<RB> =
    Pin<Box<dyn Future<Output = Result<Response<RB>, SidecarError>> + Send>>;

/// The service in `slot`, which `poll_ready` drove to readiness, with a clone left in its
/// place: the clone has not been made ready, and must not be called before it is.
pub(crate) fn take_ready<S: Clone>(slot: &mut S) -> S {
    let clone = slot.clone();
    std::mem::replace(slot, clone)
}
