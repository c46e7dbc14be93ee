//! [`ResponseFuture`]: the refusal, or the admitted call holding its permit.

use fincode_server::hook::Finish;
use tokio::sync::OwnedSemaphorePermit;

use super::layer::Shedder;
use crate::admit::AdmitFuture;

/// Holds the permit until the response head is ready (or the app gives up).
pub type ResponseFuture<F> = AdmitFuture<F, Shedder>;

/// An admitted request's place under the cap, given back when its response head is
/// ready (or its future is dropped).
#[derive(Debug)]
pub struct Permit(pub(super) Option<OwnedSemaphorePermit>);

// === impl Permit ===

impl<T> Finish<T> for Permit {
    type Output = T;

    fn finish(&mut self, output: T) -> T {
        drop(self.0.take());
        output
    }
}
