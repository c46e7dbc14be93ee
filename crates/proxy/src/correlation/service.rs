use fincode_server::hook::{Finish, Hooked, OnReady, OnRequest};
use http::{HeaderValue, Request, Response};

use super::{Correlated, CorrelationLayer, RequestId, TRACESTATE, TraceContext, X_REQUEST_ID};

/// Stamps the correlation id on the request and echoes it on the response.
pub type Correlation<S> = Hooked<S, CorrelationLayer>;

/// Echoes the id on the response once it is ready.
pub type ResponseFuture<F> = OnReady<F, EchoId>;

/// The id to echo on the response.
#[derive(Debug)]
pub struct EchoId(Option<HeaderValue>);

impl<B> OnRequest<B> for CorrelationLayer {
    type Body = B;
    type Finish = EchoId;

    fn on_request(&self, mut req: Request<B>) -> (Request<B>, EchoId) {
        let id = RequestId::from_headers(req.headers());
        let value = id.header_value().clone();
        req.headers_mut().insert(&X_REQUEST_ID, value.clone());
        let trace = TraceContext::from_headers(req.headers(), self.sample_ratio);
        if trace.parent_span_id.is_none() {
            // tracestate only means something alongside the traceparent it came with.
            req.headers_mut().remove(&TRACESTATE);
        }
        // No `traceparent` here: the client layers write one per try, naming that try's
        // span, over whatever the app sent (a request refused before then never leaves).
        req.extensions_mut().insert(Correlated { id, trace });
        (req, EchoId(Some(value)))
    }
}

impl<RB, E> Finish<Result<Response<RB>, E>> for EchoId {
    type Output = Result<Response<RB>, E>;

    fn finish(&mut self, result: Self::Output) -> Self::Output {
        let mut response = result?;
        if let Some(id) = self.0.take() {
            response.headers_mut().insert(&X_REQUEST_ID, id);
        }
        Ok(response)
    }
}
