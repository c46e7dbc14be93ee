//! Credential injection: the innermost layer before the upstream client, so that
//! whatever the app sent, the request that leaves for FinCode carries exactly the
//! sidecar's credentials and static headers (`platform`, `uuid`...).
//!
//! In login mode a 401 from FinCode means our token was rejected: the layer renews it
//! (single flight, see `fincode_auth`) and replays the request once with the new token.
//! Replay needs the body again, so small bodies of replayable requests are buffered up
//! front. Only requests that are safe to send twice are replayed: idempotent methods,
//! and POST/PATCH carrying an `X-Idempotency-Key`. Anything else gets FinCode's 401, and
//! the renewed token serves the app's next call: a payment is never sent twice.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use fincode_auth::Credentials;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full, LengthLimitError};
use tower::{Layer, Service, ServiceExt};

use crate::{ErrorKind, SidecarError, telemetry::Resend};

/// Largest body buffered so a request can be replayed after a 401.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// The header that makes a POST safe to send twice: FinCode deduplicates on it.
const IDEMPOTENCY_KEY: &str = "x-idempotency-key";

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

type BoxResponseFuture<RB> =
    Pin<Box<dyn Future<Output = Result<Response<RB>, SidecarError>> + Send>>;

impl<S, B, RB> Service<Request<B>> for Authorize<S>
where
    S: Service<Request<Either<Full<Bytes>, B>>, Response = Response<RB>, Error = SidecarError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = SidecarError;
    type Future = BoxResponseFuture<RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Take the service that was driven to readiness; leave a clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let credentials = self.credentials.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let grant = credentials
                .apply(&mut parts.headers)
                .await
                .map_err(|failure| SidecarError::new(ErrorKind::AuthFailed, failure.to_string()))?;

            let replay =
                if credentials.renews_tokens() && may_send_twice(&parts.method, &parts.headers) {
                    buffer_small(body).await?
                } else {
                    Buffered::Stream(body)
                };
            let (body, copy) = match replay {
                Buffered::Bytes(bytes) => (
                    Either::Left(Full::new(bytes.clone())),
                    Some(Replay {
                        method: parts.method.clone(),
                        uri: parts.uri.clone(),
                        version: parts.version,
                        headers: parts.headers.clone(),
                        extensions: parts.extensions.clone(),
                        body: bytes,
                    }),
                ),
                Buffered::Stream(body) => (Either::Right(body), None),
            };

            let response = inner.call(Request::from_parts(parts, body)).await?;
            if response.status() != StatusCode::UNAUTHORIZED || !credentials.renews_tokens() {
                return Ok(response);
            }
            tracing::info!("FinCode answered 401; renewing the token");
            credentials.rejected(grant).await;
            let Some(replay) = copy else {
                // Not safe (or not possible) to send again: the app sees the 401 and
                // its next call carries the renewed token.
                return Ok(response);
            };
            drop(response);
            let mut request = Request::new(Either::Left(Full::new(replay.body)));
            *request.method_mut() = replay.method;
            *request.uri_mut() = replay.uri;
            *request.version_mut() = replay.version;
            *request.headers_mut() = replay.headers;
            *request.extensions_mut() = replay.extensions;
            request.extensions_mut().insert(Resend(1));
            credentials
                .apply(request.headers_mut())
                .await
                .map_err(|failure| SidecarError::new(ErrorKind::AuthFailed, failure.to_string()))?;
            inner.ready().await?.call(request).await
        })
    }
}

/// What is needed to send a request a second time.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    /// The correlation id and trace context ride along, so the replay is one more try of
    /// the same request in logs and traces.
    extensions: http::Extensions,
    body: Bytes,
}

enum Buffered<B> {
    Bytes(Bytes),
    Stream(B),
}

/// Idempotent methods, or a request FinCode deduplicates by its idempotency key.
pub(crate) fn may_send_twice(method: &Method, headers: &HeaderMap) -> bool {
    method.is_idempotent() || headers.contains_key(IDEMPOTENCY_KEY)
}

/// Buffers a body whose declared size fits [`MAX_REPLAY_BODY`]; streams anything else.
async fn buffer_small<B>(body: B) -> Result<Buffered<B>, SidecarError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if body
        .size_hint()
        .upper()
        .is_none_or(|upper| upper > MAX_REPLAY_BODY)
    {
        return Ok(Buffered::Stream(body));
    }
    match body.collect().await {
        Ok(collected) => Ok(Buffered::Bytes(collected.to_bytes())),
        Err(error) => {
            let error = error.into();
            if error.downcast_ref::<LengthLimitError>().is_some() {
                return Err(SidecarError::new(
                    ErrorKind::BodyTooLarge,
                    "the request body is over the limit (limits.max_request_body_bytes)",
                ));
            }
            Err(SidecarError::new(
                ErrorKind::BadRequest,
                "the request body could not be read from the app's connection",
            ))
        }
    }
}
