//! Credential injection: the innermost layer before the upstream client, so that
//! whatever the app sent, the request that leaves for FinCode carries exactly the
//! sidecar's credentials and static headers (`platform`, `uuid`...).
//!
//! In login mode a 401 from FinCode means our token was rejected: the layer renews it
//! (single flight, see `fincode_auth`) and, when the request is safe to send twice
//! (idempotent methods, and POST/PATCH carrying one usable `X-Idempotency-Key`; a blank
//! key is no key), marks FinCode's 401 `Renewed`. The retry layer above, the one place
//! that sends a request again, then sends that try once more: with the new token (this
//! layer applies the current one to every request), from the head and body it already
//! keeps, so nothing here copies the request. A token issued moments ago is not renewed
//! (`auth.renew_on_401_min_age`), and then nothing is marked: the 401 has another cause.
//! Anything not marked gets FinCode's 401, and the renewed token serves the app's next
//! call: a payment is never sent twice.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use fincode_auth::{AuthFailure, Credentials, Grant};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::{
    ErrorKind, SidecarError,
    svc::{BoxResponseFuture, ReplayStack, take_ready},
};

/// The header that makes a POST safe to send twice: FinCode deduplicates on it.
pub(crate) const IDEMPOTENCY_KEY: &str = "x-idempotency-key";

/// On FinCode's 401, in the response's extensions: the token it rejected was renewed and
/// the request is safe to send twice, so the retry layer sends the try once more (see
/// the module docs). Never set outside login mode.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Renewed;

/// Adds [`Authorize`] to a stack.
#[derive(Clone, Debug)]
pub struct AuthorizeLayer {
    credentials: Credentials,
}

/// Puts the sidecar's credentials on each request; renews and replays on 401.
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

impl<S, B, RB> Service<Request<Either<Full<Bytes>, B>>> for Authorize<S>
where
    S: ReplayStack<B, Response = Response<RB>>,
    B: Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = SidecarError;
    type Future = ResponseFuture<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Either<Full<Bytes>, B>>) -> Self::Future {
        // The common case: the credential is at hand (static and none modes always, login
        // mode while its token is unexpired), so the call goes straight to the inner
        // service and its future is this one's, with nothing allocated.
        match self.credentials.apply_now(req.headers_mut()) {
            Some(Ok(grant)) => ResponseFuture::Sending {
                watch: Watch::new(&self.credentials, grant, &req),
                inner: self.inner.call(req),
            },
            Some(Err(failure)) => ResponseFuture::Failed {
                error: Some(auth_failed(&failure)),
            },
            None => {
                // The token expired: wait for its renewal, on the ready service (a fresh
                // clone stays behind for the next call).
                let mut inner = take_ready(&mut self.inner);
                let credentials = self.credentials.clone();
                ResponseFuture::Boxed {
                    inner: Box::pin(async move {
                        let grant = credentials
                            .apply(req.headers_mut())
                            .await
                            .map_err(|failure| auth_failed(&failure))?;
                        let watch = Watch::new(&credentials, grant, &req);
                        let response = inner.call(req).await?;
                        match watch {
                            Some(watch) if response.status() == StatusCode::UNAUTHORIZED => {
                                Ok(watch.rejected(response).await)
                            }
                            _ => Ok(response),
                        }
                    }),
                }
            }
        }
    }
}

fn auth_failed(failure: &AuthFailure) -> SidecarError {
    SidecarError::new(ErrorKind::AuthFailed, failure.to_string())
}

/// What a call in login mode needs should FinCode answer 401: the token it carried, and
/// whether it may be sent twice.
pub struct Watch {
    credentials: Credentials,
    grant: Grant,
    replayable: bool,
}

impl Watch {
    /// A watch for a request carrying `grant`; `None` outside login mode (a 401 is only
    /// passed on there: no token to renew).
    fn new<B>(credentials: &Credentials, grant: Grant, req: &Request<B>) -> Option<Self> {
        credentials.renews_tokens().then(|| Self {
            credentials: credentials.clone(),
            grant,
            replayable: may_send_twice(req.method(), req.headers()),
        })
    }

    /// FinCode answered `response` (a 401): renew the token it rejected, and mark the
    /// answer [`Renewed`] when a newer token is held and the request may be sent again.
    async fn rejected<RB>(self, mut response: Response<RB>) -> Response<RB> {
        // No newer token (this one is too young to be stale, or renewal failed): a
        // replay would carry the same token and meet the same 401.
        let renewed = self.credentials.rejected(self.grant).await;
        tracing::info!(renewed, "FinCode answered 401 to the sidecar's token");
        // Not safe (or not worth it) to send again: the app sees the 401 and its next
        // call carries the renewed token.
        if renewed && self.replayable {
            response.extensions_mut().insert(Renewed);
        }
        response
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("grant", &self.grant)
            .field("replayable", &self.replayable)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The call: the inner future itself while the credential was at hand; boxed only
    /// to wait for a token, or to renew one FinCode answered 401 to.
    // pin-project-lite takes no doc comments on variant fields.
    #[allow(missing_docs)]
    #[project = Projected]
    pub enum ResponseFuture<F, RB> {
        Sending {
            #[pin]
            inner: F,
            watch: Option<Watch>,
        },
        Boxed {
            inner: BoxResponseFuture<RB>,
        },
        Failed {
            error: Option<SidecarError>,
        },
    }
}

impl<F, RB> Future for ResponseFuture<F, RB>
where
    F: Future<Output = Result<Response<RB>, SidecarError>>,
    RB: Send + 'static,
{
    type Output = Result<Response<RB>, SidecarError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                Projected::Sending { inner, watch } => {
                    let response = match std::task::ready!(inner.poll(cx)) {
                        Ok(response) => response,
                        Err(error) => return Poll::Ready(Err(error)),
                    };
                    match watch.take() {
                        Some(watch) if response.status() == StatusCode::UNAUTHORIZED => {
                            let renewing =
                                Box::pin(async move { Ok(watch.rejected(response).await) });
                            self.set(Self::Boxed { inner: renewing });
                        }
                        _ => return Poll::Ready(Ok(response)),
                    }
                }
                Projected::Boxed { inner } => return inner.as_mut().poll(cx),
                Projected::Failed { error } => {
                    return Poll::Ready(Err(error.take().unwrap_or_else(|| {
                        SidecarError::new(ErrorKind::Internal, "polled after completion")
                    })));
                }
            }
        }
    }
}

/// Idempotent methods, or a request FinCode deduplicates by its idempotency key.
pub(crate) fn may_send_twice(method: &Method, headers: &HeaderMap) -> bool {
    method.is_idempotent() || IdempotencyKey::of(headers) == IdempotencyKey::Usable
}

/// What a request's `X-Idempotency-Key` amounts to. Only [`Usable`](Self::Usable) makes
/// a POST safe to send twice: a blank value (an unset template variable in the app) is
/// what FinCode would take for no key, and with two different keys nobody can say which
/// one FinCode deduplicates on. Each of those would make every retry a new payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdempotencyKey {
    /// No `X-Idempotency-Key` header.
    Absent,
    /// Only empty or whitespace values: the app meant a key and has none.
    Blank,
    /// One key of visible ASCII (repeated identically, if at all).
    Usable,
    /// Different keys, or a key that is not visible ASCII (which FinCode may read
    /// differently). The app chose these: the sidecar neither retries nor replaces them.
    Unusable,
}

// === impl IdempotencyKey ===

impl IdempotencyKey {
    /// Classifies the request's key values; allocation-free.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
        let Some(first) = values.next() else {
            return Self::Absent;
        };
        let key = first.as_bytes().trim_ascii();
        if values.any(|other| other.as_bytes().trim_ascii() != key) {
            return Self::Unusable;
        }
        if key.is_empty() {
            Self::Blank
        } else if key.iter().all(u8::is_ascii_graphic) {
            Self::Usable
        } else {
            Self::Unusable
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn with_keys(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(IDEMPOTENCY_KEY, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn a_post_is_keyed_only_by_one_non_blank_key() {
        assert!(may_send_twice(&Method::POST, &with_keys(&["order-1"])));
        assert!(
            may_send_twice(&Method::POST, &with_keys(&["order-1", "order-1"])),
            "the same key twice is still one key"
        );
        for keys in [
            &[][..],
            &[""][..],
            &["   "][..],
            &["\t"][..],
            &["order-1", "order-2"][..],
            &["order-1", ""][..],
            &["", "order-1"][..],
        ] {
            assert!(
                !may_send_twice(&Method::POST, &with_keys(keys)),
                "{keys:?} is not one usable key"
            );
            assert!(
                !may_send_twice(&Method::PATCH, &with_keys(keys)),
                "{keys:?}"
            );
        }
        // Not visible ASCII: FinCode may read it differently from the sidecar.
        for bytes in [&b"caf\xc3\xa9"[..], &b"\xff"[..]] {
            let mut headers = HeaderMap::new();
            headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_bytes(bytes).unwrap());
            assert!(!may_send_twice(&Method::POST, &headers), "{bytes:?}");
        }
    }

    #[test]
    fn idempotent_methods_need_no_key() {
        for method in [Method::GET, Method::PUT, Method::DELETE, Method::HEAD] {
            assert!(may_send_twice(&method, &with_keys(&[""])), "{method}");
            assert!(may_send_twice(&method, &HeaderMap::new()), "{method}");
        }
    }
}
