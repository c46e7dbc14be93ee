//! Ingress hygiene: the first thing that happens to the app's request, before any layer
//! reads it.
//!
//! - Hop-by-hop headers go: `Connection` and the headers it names (except the ones the
//!   sidecar manages, see [`HeaderPolicy`]), `Keep-Alive`, `TE`, `Trailer`,
//!   `Transfer-Encoding`, `Upgrade` and `Proxy-*`. Done here and not in the upstream
//!   client because the layers in between decide on the headers: the retry layer sends
//!   a POST again because it carries `X-Idempotency-Key`, and that key must still be
//!   there when the request leaves.
//! - Secret headers (`password`, `pin`, `cookie`, credentials) are marked sensitive so
//!   that HTTP/2 never indexes them, on the app's connection or FinCode's.
//! - The path is normalised ([`crate::path`]) so that the route template, the rate
//!   limit, the forbidden-route check and the upstream URI all see the same path. A path
//!   that is refused is marked ([`PathRefused`]) and answered by the guard layer, inside
//!   the error responder, so the refusal is a problem+json with the correlation id,
//!   logged and counted like every other error.

use std::{
    borrow::Cow,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Uri, uri::PathAndQuery};
use tower::{Layer, Service};

use crate::{
    headers::HeaderPolicy,
    path::{self, PathError, PathRefused},
};

/// Adds [`Ingress`] to a stack.
#[derive(Clone, Debug)]
pub struct IngressLayer {
    policy: Arc<HeaderPolicy>,
}

/// Cleans the app's request before anything else reads it.
#[derive(Clone, Debug)]
pub struct Ingress<S> {
    inner: S,
    policy: Arc<HeaderPolicy>,
}

// === impl IngressLayer ===

impl IngressLayer {
    /// Applies `policy` to every request's headers.
    pub fn new(policy: HeaderPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }
}

impl<S> Layer<S> for IngressLayer {
    type Service = Ingress<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Ingress {
            inner,
            policy: self.policy.clone(),
        }
    }
}

// === impl Ingress ===

impl<S, B> Service<Request<B>> for Ingress<S>
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
        self.policy.apply(req.headers_mut());
        let rewritten = match path::normalise(req.uri().path()) {
            Ok(Cow::Borrowed(_)) => None,
            Ok(Cow::Owned(path)) => Some(with_path(req.uri(), &path).ok_or(PathError::Invalid)),
            Err(error) => Some(Err(error)),
        };
        match rewritten {
            None => {}
            Some(Ok(uri)) => *req.uri_mut() = uri,
            Some(Err(error)) => {
                req.extensions_mut().insert(PathRefused(error));
            }
        }
        self.inner.call(req)
    }
}

/// `uri` with its path replaced by `path`; scheme, authority and query kept.
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let mut path_and_query =
        String::with_capacity(path.len() + uri.query().map_or(0, |q| q.len() + 1));
    path_and_query.push_str(path);
    if let Some(query) = uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::{HeaderMap, HeaderName, HeaderValue, header};
    use tower::{ServiceExt, service_fn};

    use super::*;

    /// What the inner service saw.
    #[derive(Debug)]
    struct Seen {
        uri: Uri,
        headers: HeaderMap,
        refused: Option<PathRefused>,
    }

    async fn through(req: Request<()>) -> Seen {
        let policy = HeaderPolicy::new(
            [HeaderName::from_static("platform")],
            &HeaderName::from_static("x-auth-token"),
        );
        IngressLayer::new(policy)
            .layer(service_fn(|req: Request<()>| async move {
                Ok::<_, Infallible>(Seen {
                    refused: req.extensions().get::<PathRefused>().copied(),
                    uri: req.uri().clone(),
                    headers: req.headers().clone(),
                })
            }))
            .oneshot(req)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn connection_cannot_remove_the_idempotency_key_before_inner_layers_read_it() {
        let req = Request::post("/transactionmanagement/create-transaction")
            .header(
                header::CONNECTION,
                "keep-alive, X-Idempotency-Key, x-private",
            )
            .header("x-idempotency-key", "k")
            .header("x-private", "1")
            .header("x-auth-token", "app-made-up")
            .body(())
            .unwrap();
        let seen = through(req).await;
        assert_eq!(seen.headers["x-idempotency-key"], "k");
        assert!(!seen.headers.contains_key("x-private"));
        assert!(!seen.headers.contains_key(header::CONNECTION));
        assert!(seen.headers["x-auth-token"].is_sensitive());
    }

    #[tokio::test]
    async fn paths_are_normalised_with_the_query_kept() {
        let req = Request::get("http://sidecar//transactionmanagement//transactions?page=2")
            .body(())
            .unwrap();
        let seen = through(req).await;
        assert_eq!(
            seen.uri,
            "http://sidecar/transactionmanagement/transactions?page=2"
        );
        assert_eq!(seen.refused, None);
        let req = Request::get("/%73ecuritymanagement/logout")
            .body(())
            .unwrap();
        assert_eq!(through(req).await.uri, "/securitymanagement/logout");
    }

    #[tokio::test]
    async fn refused_paths_are_marked_for_the_guard_and_left_as_they_were() {
        let req = Request::get("/a/..;/b?x=1").body(()).unwrap();
        let seen = through(req).await;
        assert_eq!(seen.refused, Some(PathRefused(PathError::PathParameter)));
        assert_eq!(seen.uri, "/a/..;/b?x=1");
        let req = Request::get("/a/b").body(()).unwrap();
        let mut req = req;
        req.headers_mut()
            .insert("cookie", HeaderValue::from_static("s=1"));
        let seen = through(req).await;
        assert_eq!(seen.refused, None);
        assert!(seen.headers["cookie"].is_sensitive());
    }
}
