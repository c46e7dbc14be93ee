//! Which protocol a plain-TCP connection speaks (HTTP/1 or HTTP/2 with prior knowledge,
//! "h2c"), read off its first bytes while they stay in the socket.
//!
//! Why not hyper-util's auto builder, which finds out by itself: it *reads* up to the
//! 24 bytes of the HTTP/2 preface and hands them back to hyper as a prefix. hyper's first
//! read of an HTTP/1 head then returns those 24 bytes alone; the head is incomplete, so
//! hyper grows its 8 KiB read buffer to 16 KiB (a reallocation that copies all 8 KiB)
//! before it reads the rest. On every new connection that is an extra allocation, an
//! 8 KiB copy into cold memory and twice the read buffer for the connection's life
//! (`benches/README.md`, issue 14, new connections). A peek (`MSG_PEEK`, one call in
//! place of that read) leaves the bytes where hyper's first read finds the whole head;
//! the builder is then told the protocol and reads nothing itself.
//!
//! When the bytes that have arrived do not decide it (nothing yet, or a split start of
//! the preface such as `PRI * HT`), the auto builder decides as before: peeking again
//! would only find the same bytes until more arrive.

use crate::socket::Socket;

/// The HTTP/2 connection preface (RFC 9113, 3.4): what a prior-knowledge client sends
/// first, and what no HTTP/1 request starts with.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A protocol the first bytes decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    Http2,
}

/// The protocol of `stream` from what it has received, without taking it out of the
/// socket; waits for the first bytes. `None` when they do not decide it (see the module
/// docs), when the client closed without sending, or when the peek failed: the caller
/// leaves those to the auto builder, which reads and reports them itself.
pub(crate) async fn sniff(stream: &mut Socket) -> Option<Protocol> {
    let mut seen = [0_u8; H2_PREFACE.len()];
    let len = stream.peek(&mut seen).await.ok()?;
    decide(&seen[..len])
}

/// The protocol `seen` (a connection's first bytes, possibly not all of them) decides:
/// HTTP/2 for the whole preface, HTTP/1 as soon as the bytes part from it, `None` while
/// they are a proper start of it (nothing included).
pub(crate) fn decide(seen: &[u8]) -> Option<Protocol> {
    if seen.is_empty() {
        None
    } else if !H2_PREFACE.starts_with(seen) {
        Some(Protocol::Http1)
    } else if seen.len() == H2_PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::{H2_PREFACE, Protocol, decide, sniff};
    use crate::socket::tests::pair;

    #[test]
    fn the_first_bytes_decide_as_far_as_they_go() {
        let cases: [(&[u8], Option<Protocol>); 9] = [
            (b"", None),
            (b"G", Some(Protocol::Http1)),
            (b"GET / HTTP/1.1\r\n", Some(Protocol::Http1)),
            // POST and PUT share their first byte with the preface: one more decides.
            (b"P", None),
            (b"PO", Some(Protocol::Http1)),
            (b"PUT /x HTTP/1.1\r\n", Some(Protocol::Http1)),
            (b"PRI * HT", None),
            // A preface that goes wrong late is no preface.
            (b"PRI * HTTP/2.0\r\n\r\nSX\r\n\r\n", Some(Protocol::Http1)),
            (H2_PREFACE, Some(Protocol::Http2)),
        ];
        for (seen, expected) in cases {
            assert_eq!(
                decide(seen),
                expected,
                "{:?}",
                String::from_utf8_lossy(seen)
            );
        }
    }

    proptest::proptest! {
        /// Against the definition: bytes that start the preface (or are all of it) decide
        /// nothing or HTTP/2; any other bytes are HTTP/1.
        #[test]
        fn bytes_decide_http2_only_as_the_preface(
            seen in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            cut in 0_usize..=24,
        ) {
            let expected_any = if seen.is_empty() {
                None
            } else if seen.len() <= H2_PREFACE.len() && H2_PREFACE[..seen.len()] == seen[..] {
                (seen.len() == H2_PREFACE.len()).then_some(Protocol::Http2)
            } else {
                Some(Protocol::Http1)
            };
            proptest::prop_assert_eq!(decide(&seen), expected_any);
            // Every start of the preface waits for more; the whole of it is HTTP/2.
            let expected_start = (cut == H2_PREFACE.len()).then_some(Protocol::Http2);
            proptest::prop_assert_eq!(decide(&H2_PREFACE[..cut]), expected_start);
        }
    }

    #[tokio::test]
    async fn a_sniffed_request_is_still_in_the_socket_for_the_first_read() {
        let (mut client, mut server) = pair().await;
        let request = b"GET /sandbox/ping HTTP/1.1\r\nhost: x\r\n\r\n";
        client.write_all(request).await.unwrap();
        assert_eq!(sniff(&mut server).await, Some(Protocol::Http1));
        // One read finds the whole head: the peek took nothing out.
        let mut read = vec![0_u8; 8192];
        let mut len = 0;
        while len < request.len() {
            len += server.read(&mut read[len..]).await.unwrap();
        }
        assert_eq!(&read[..len], request);
    }

    #[tokio::test]
    async fn a_preface_is_http2_and_a_split_one_is_left_undecided() {
        let (mut client, mut server) = pair().await;
        client.write_all(&H2_PREFACE[..8]).await.unwrap();
        // Wait until the first part is there: the peek returns what has arrived.
        let mut first = [0_u8; 8];
        while server.peek(&mut first).await.unwrap() < 8 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(sniff(&mut server).await, None);
        client.write_all(&H2_PREFACE[8..]).await.unwrap();
        let mut whole = [0_u8; 24];
        while server.peek(&mut whole).await.unwrap() < 24 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(sniff(&mut server).await, Some(Protocol::Http2));
    }

    #[tokio::test]
    async fn a_client_that_closes_without_sending_is_left_undecided() {
        let (client, mut server) = pair().await;
        drop(client);
        assert_eq!(sniff(&mut server).await, None);
    }
}
