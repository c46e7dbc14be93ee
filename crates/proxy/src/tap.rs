//! A body that streams through untouched while a [`Tap`] watches its bytes go by and is
//! told how it ended. The business-outcome counter and the body logger are both taps.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// Watches one body.
pub trait Tap {
    /// Bytes went by. Return `false` to stop watching (the tap is dropped unfinished).
    fn data(&mut self, data: &[u8]) -> bool;
    /// The body ended cleanly.
    fn end(self);
    /// The body was dropped before it ended (never polled, or the peer went away).
    fn abandoned(self);
    /// The body broke off with an error. Most taps have nothing complete to report.
    fn failed(self)
    where
        Self: Sized,
    {
    }
}

pin_project! {
    /// `inner` with `tap` watching it; without a tap each frame costs one branch.
    pub struct TapBody<B, T: Tap> {
        #[pin]
        inner: B,
        tap: Option<T>,
    }

    impl<B, T: Tap> PinnedDrop for TapBody<B, T> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(tap) = this.project().tap.take() {
                tap.abandoned();
            }
        }
    }
}

impl<B, T: Tap> TapBody<B, T> {
    /// `inner`, watched by `tap` when there is one.
    pub fn new(inner: B, tap: Option<T>) -> Self {
        Self { inner, tap }
    }
}

impl<B: std::fmt::Debug, T: Tap> std::fmt::Debug for TapBody<B, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapBody")
            .field("inner", &self.inner)
            .field("tapped", &self.tap.is_some())
            .finish()
    }
}

impl<B, T> Body for TapBody<B, T>
where
    B: Body<Data = Bytes>,
    T: Tap,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        if this.tap.is_none() {
            return Poll::Ready(frame);
        }
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(data), Some(tap)) = (frame.data_ref(), this.tap.as_mut())
                    && !tap.data(data)
                {
                    *this.tap = None;
                }
                // hyper stops polling once a sized body reports its end, so the last
                // data frame may be the last poll.
                if this.inner.is_end_stream()
                    && let Some(tap) = this.tap.take()
                {
                    tap.end();
                }
            }
            None => {
                if let Some(tap) = this.tap.take() {
                    tap.end();
                }
            }
            Some(Err(_)) => {
                if let Some(tap) = this.tap.take() {
                    tap.failed();
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
