//! The one copy of a request's head: a try that is sent again (the retry layer's next
//! try, the auth layer's replay after a renewed token) is the same request in every
//! respect but its body.

use http::{Request, request::Parts};

/// A request with `head`'s method, URI, version, headers and extensions (the
/// correlation id, trace context, route and try counter ride along, so the copy is one
/// more try of the same request in logs and traces) and `body`.
pub(crate) fn request_from_head<B>(head: &Parts, body: B) -> Request<B> {
    let mut request = Request::new(body);
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = head.uri.clone();
    *request.version_mut() = head.version;
    *request.headers_mut() = head.headers.clone();
    *request.extensions_mut() = head.extensions.clone();
    request
}
