//! Which protocol a plain-TCP connection speaks (HTTP/1 or HTTP/2 with prior knowledge,
//! "h2c"), read off its first bytes, which stay the connection's.
//!
//! Why not hyper-util's auto builder, which finds out by itself: it *reads* up to the
//! 24 bytes of the HTTP/2 preface and hands them back to hyper as a prefix. hyper's first
//! read of an HTTP/1 head then returns those 24 bytes alone; the head is incomplete, so
//! hyper grows its 8 KiB read buffer to 16 KiB (a reallocation that copies all 8 KiB)
//! before it reads the rest. On every new connection that is an extra allocation, an
//! 8 KiB copy into cold memory and twice the read buffer for the connection's life
//! (`benches/README.md`, issue 14, new connections). Here the connection's first read
//! takes whatever has arrived, up to a page ([`Socket::first_bytes`]), and hyper's first
//! read is handed all of it: the whole head when it came in one piece; the builder is
//! told the protocol and reads nothing itself.
//!
//! When the bytes that have arrived do not decide it (nothing yet, or a split start of
//! the preface such as `PRI * HT`), the auto builder decides as before, reading those
//! bytes and then the rest from the connection.

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

/// The protocol of `stream` from what it has received (which its next reads return
/// again); waits for the first bytes. `None` when they do not decide it (see the module
/// docs), when the client closed without sending, or when the read failed: the caller
/// leaves those to the auto builder, which reads and reports them itself.
pub(crate) async fn sniff(stream: &mut Socket) -> Option<Protocol> {
    let seen = stream.first_bytes().await.ok()?;
    // A preface may arrive with the client's first frames behind it.
    decide(&seen[..seen.len().min(H2_PREFACE.len())])
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

    /// Waits until `len` bytes have arrived at `server`, without reading them.
    async fn arrived(server: &mut crate::socket::Socket, len: usize) {
        let mut seen = vec![0_u8; len];
        while server.peek(&mut seen).await.unwrap() < len {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Reads `server` to its end.
    async fn rest(server: &mut crate::socket::Socket) -> Vec<u8> {
        let mut read = Vec::new();
        server.read_to_end(&mut read).await.unwrap();
        read
    }

    #[tokio::test]
    async fn a_sniffed_head_is_returned_whole_by_the_first_read() {
        let (mut client, mut server) = pair().await;
        let request = b"GET /sandbox/ping HTTP/1.1\r\nhost: x\r\n\r\n";
        client.write_all(request).await.unwrap();
        arrived(&mut server, request.len()).await;
        assert_eq!(sniff(&mut server).await, Some(Protocol::Http1));
        // hyper's first read: the whole head at once, as if the sniff had read nothing.
        let mut read = vec![0_u8; 8192];
        let len = server.read(&mut read).await.unwrap();
        assert_eq!(&read[..len], request);
    }

    #[tokio::test]
    async fn a_split_preface_is_left_undecided_and_read_on_whole() {
        let (mut client, mut server) = pair().await;
        client.write_all(&H2_PREFACE[..8]).await.unwrap();
        arrived(&mut server, 8).await;
        assert_eq!(sniff(&mut server).await, None);
        client.write_all(&H2_PREFACE[8..]).await.unwrap();
        drop(client);
        assert_eq!(rest(&mut server).await, H2_PREFACE);
    }

    #[tokio::test]
    async fn a_preface_with_frames_behind_it_is_http2_and_nothing_is_lost() {
        let (mut client, mut server) = pair().await;
        // The preface and an empty SETTINGS frame in one write.
        let mut sent = H2_PREFACE.to_vec();
        sent.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        client.write_all(&sent).await.unwrap();
        arrived(&mut server, sent.len()).await;
        assert_eq!(sniff(&mut server).await, Some(Protocol::Http2));
        drop(client);
        assert_eq!(rest(&mut server).await, sent);
    }

    #[tokio::test]
    async fn a_client_that_closes_without_sending_is_left_undecided() {
        let (client, mut server) = pair().await;
        drop(client);
        assert_eq!(sniff(&mut server).await, None);
        assert!(rest(&mut server).await.is_empty());
    }
}
