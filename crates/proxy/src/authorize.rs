//! Credential injection: the innermost layer before the upstream client, so that
//! whatever the app sent, the request that leaves for FinCode carries exactly the
//! sidecar's credentials and static headers (`platform`...).

use std::task::{Context, Poll};

use fincode_auth::Credentials;
use http::Request;
use tower::{Layer, Service};

/// Adds [`Authorize`] to a stack.
#[derive(Clone, Debug)]
pub struct AuthorizeLayer {
    credentials: Credentials,
}

/// Puts the sidecar's credentials on each request.
#[derive(Clone, Debug)]
pub struct Authorize<S> {
    inner: S,
    credentials: Credentials,
}

// === impl AuthorizeLayer ===

impl AuthorizeLayer {
    /// Injects `credentials` into every request.
    pub fn new(credentials: Credentials) -> Self {
        Self { credentials }
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            credentials: self.credentials.clone(),
        }
    }
}

// === impl Authorize ===

impl<S, B> Service<Request<B>> for Authorize<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        self.credentials.apply(req.headers_mut());
        self.inner.call(req)
    }
}
