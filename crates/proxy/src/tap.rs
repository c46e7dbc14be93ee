//! A body that streams through untouched while a [`Tap`] watches its bytes go by and is
//! told how it ended. The business-outcome counter, the body logger and the audit layer's
//! id scans are taps; [`BodyCopy`] is the bounded copy they read at the end.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// Watches one body.
pub trait Tap {
    /// Bytes went by (a frame's own `Bytes`: keeping it is a reference count, not a
    /// copy). Return `false` to stop watching (the tap is dropped unfinished).
    fn data(&mut self, data: &Bytes) -> bool;
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
    ///
    /// The tap is boxed: a body is moved with its request or response through every
    /// layer, and a tap's state (a body copy, a record being built) is a few hundred
    /// bytes that would be copied along each time; a box is one pointer, allocated only
    /// for a body that is watched.
    pub struct TapBody<B, T: Tap> {
        #[pin]
        inner: B,
        tap: Option<Box<T>>,
    }

    impl<B, T: Tap> PinnedDrop for TapBody<B, T> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(tap) = this.project().tap.take() {
                (*tap).abandoned();
            }
        }
    }
}

impl<B, T: Tap> TapBody<B, T> {
    /// `inner`, watched by `tap` when there is one.
    pub fn new(inner: B, tap: Option<T>) -> Self {
        Self {
            inner,
            tap: tap.map(Box::new),
        }
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
                    (*tap).end();
                }
            }
            None => {
                if let Some(tap) = this.tap.take() {
                    (*tap).end();
                }
            }
            Some(Err(_)) => {
                if let Some(tap) = this.tap.take() {
                    (*tap).failed();
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

/// A bounded copy of a body, for a tap to read when the body ends. A body that comes in
/// one chunk (FinCode's answers, most apps' requests) is kept by reference to that chunk
/// and never copied; a second chunk makes it join them into a buffer of its own.
#[derive(Debug, Default)]
pub struct BodyCopy {
    /// The only chunk so far.
    first: Bytes,
    /// Every chunk, once there was more than one.
    joined: BytesMut,
    too_large: bool,
}

impl BodyCopy {
    /// Adds `data`; once the body is over `limit` bytes, forgets it all and keeps nothing
    /// more. Returns whether the body is still within `limit`.
    pub fn push(&mut self, data: &Bytes, limit: usize) -> bool {
        if self.too_large {
            return false;
        }
        if self.len() + data.len() > limit {
            *self = Self {
                too_large: true,
                ..Self::default()
            };
            return false;
        }
        if data.is_empty() {
            return true;
        }
        if self.is_empty() {
            self.first = data.clone();
        } else {
            if self.joined.is_empty() {
                self.joined.reserve(self.first.len() + data.len());
                self.joined
                    .extend_from_slice(&std::mem::take(&mut self.first));
            }
            self.joined.extend_from_slice(data);
        }
        true
    }

    /// The body so far (empty once it was too large).
    pub fn bytes(&self) -> &[u8] {
        if self.joined.is_empty() {
            &self.first
        } else {
            &self.joined
        }
    }

    /// Bytes kept.
    pub fn len(&self) -> usize {
        self.first.len() + self.joined.len()
    }

    /// Nothing kept (an empty body so far, or one too large).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body went over its limit.
    pub fn too_large(&self) -> bool {
        self.too_large
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_chunk_is_kept_by_reference_and_more_are_joined_in_order() {
        let chunk = Bytes::from_static(b"{\"a\":1}");
        let mut kept = BodyCopy::default();
        assert!(kept.push(&Bytes::new(), 64));
        assert!(kept.push(&chunk, 64));
        assert_eq!(
            kept.bytes().as_ptr(),
            chunk.as_ptr(),
            "one chunk is not copied"
        );
        assert!(kept.push(&Bytes::new(), 64));
        assert!(kept.push(&Bytes::from_static(b"xy"), 64));
        assert!(kept.push(&Bytes::from_static(b"z"), 64));
        assert_eq!(kept.bytes(), b"{\"a\":1}xyz");
        assert_eq!(kept.len(), 10);
        assert!(!kept.too_large());
    }

    #[test]
    fn a_body_over_the_limit_is_forgotten_whole_and_nothing_more_is_kept() {
        let mut kept = BodyCopy::default();
        assert!(kept.push(&Bytes::from_static(b"12345"), 8));
        assert!(
            kept.push(&Bytes::from_static(b"678"), 8),
            "exactly the limit fits"
        );
        assert!(!kept.push(&Bytes::from_static(b"9"), 8));
        assert!(kept.too_large() && kept.is_empty() && kept.bytes().is_empty());
        assert!(!kept.push(&Bytes::from_static(b"0"), 8));
        assert!(kept.is_empty());
        let mut single = BodyCopy::default();
        assert!(!single.push(&Bytes::from_static(b"123456789"), 8));
        assert!(single.too_large() && single.is_empty());
    }
}
