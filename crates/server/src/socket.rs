//! Accepted connections, registered with tokio's reactor only once they would block.
//!
//! Why: tokio registers every socket it accepts with its epoll (`epoll_ctl` ADD) and
//! deregisters it when it is dropped (DEL), and a read or peek through tokio first waits
//! for the reactor to report the socket readable: a turn of the event loop, even when
//! the request is already in the socket. A client that opens a connection per request
//! (`Connection: close`, or a pool that does not keep connections) usually has its
//! request there by the time the connection is accepted, and takes the answer at once:
//! that connection paid two `epoll_ctl` calls and an event-loop turn for nothing. A
//! profile of such a load found them among the larger costs per request, and haproxy,
//! which reads a new connection at once and registers it only when it has to wait,
//! without either (`benches/README.md`, issue 14, new connections).
//!
//! So a [`Socket`] is read, peeked at and written directly (non-blocking calls on the
//! socket) until one of those calls would block; only then is it registered
//! (`TcpStream::from_std`), and from then on tokio drives it as any other socket. A
//! connection answered without ever waiting costs no epoll call; one that waits costs
//! what it did before, once. Nothing can be missed in between: registering a socket in
//! epoll reports whatever readiness it already has, so bytes that arrive between the
//! failed call and the registration wake the connection.
//!
//! [`Listener`] accepts with `accept4(SOCK_NONBLOCK)`, so a socket starts non-blocking
//! without a further call, and an unregistered socket moves to another worker's runtime
//! for free (a registered one had to leave one reactor and join the other).

use std::{
    io::{self, IoSlice, Read as _, Write as _},
    net::{Shutdown, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
};

use rustix::net::SocketFlags;
use tokio::{
    io::{AsyncRead, AsyncWrite, Interest, ReadBuf, unix::AsyncFd},
    net::TcpStream,
};

/// The most a direct read asks for. A safe read needs initialised memory, and hyper
/// hands over its whole spare buffer (8 KiB) uninitialised: zeroing a page is enough for
/// the head of any call the sidecar serves, and a larger one is read on from there.
const DIRECT_READ: usize = 4096;

/// A listening socket whose connections come out unregistered (see the module docs).
pub(crate) struct Listener {
    fd: AsyncFd<std::net::TcpListener>,
}

impl Listener {
    /// Watches `listener` (made non-blocking) from the current runtime's reactor. Its
    /// connections have `TCP_NODELAY` set: a response is one write, and Nagle's algorithm
    /// would hold the next one on a kept-alive connection for the client's delayed ACK.
    pub(crate) fn new(listener: std::net::TcpListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        // Linux copies it from the listening socket to every socket accepted from it (a
        // test checks), which spares a `setsockopt` per connection; elsewhere `accept` sets
        // it on each.
        rustix::net::sockopt::set_tcp_nodelay(&listener, true)?;
        // tokio 1.54 deprecated the safe constructor for its successor, an `unsafe fn`
        // (this workspace forbids `unsafe`), because an `AsRawFd` may change or close its
        // descriptor while registered. The `AsyncFd` owns this `std` listener, which owns
        // its descriptor and neither changes nor closes it before it is dropped, so the
        // condition the new function asks the caller to uphold holds here.
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(listener, Interest::READABLE)?;
        Ok(Self { fd })
    }

    /// The next connection and its peer's address. An error is the listener's (out of
    /// file descriptors, say): one connection's own failure before it was accepted (its
    /// client reset it while it queued) is passed over, not returned, so the caller's
    /// back-off for listener errors cannot be triggered by any client at will.
    pub(crate) async fn accept(&self) -> io::Result<(Socket, SocketAddr)> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| accept(fd.get_ref())) {
                Ok(Err(error)) if lost_before_accept(&error) => {}
                Ok(accepted) => return accepted,
                Err(_would_block) => {}
            }
        }
    }
}

/// Whether `accept` failed for one queued connection rather than for the listener: Linux
/// passes a connection's pending network error on as `accept`'s own, and asks callers to
/// treat those (and a connection aborted in the queue) as "try again" (accept(2)).
fn lost_before_accept(error: &io::Error) -> bool {
    use rustix::io::Errno;
    Errno::from_io_error(error).is_some_and(|errno| {
        [
            Errno::CONNABORTED,
            Errno::INTR,
            Errno::PROTO,
            Errno::NOPROTOOPT,
            Errno::HOSTDOWN,
            Errno::NONET,
            Errno::HOSTUNREACH,
            Errno::OPNOTSUPP,
            Errno::NETDOWN,
            Errno::NETUNREACH,
            // A firewall rule refusing the connection.
            Errno::PERM,
        ]
        .contains(&errno)
    })
}

/// One `accept4`, the new socket non-blocking and close-on-exec from the start.
fn accept(listener: &std::net::TcpListener) -> io::Result<(Socket, SocketAddr)> {
    let (fd, addr) =
        rustix::net::acceptfrom_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)?;
    let stream = std::net::TcpStream::from(fd);
    #[cfg(not(target_os = "linux"))]
    stream.set_nodelay(true)?;
    let peer = match addr.and_then(|addr| SocketAddr::try_from(addr).ok()) {
        Some(peer) => peer,
        None => stream.peer_addr()?,
    };
    Ok((Socket::accepted(stream), peer))
}

/// An accepted connection's socket; see the module docs.
pub(crate) struct Socket {
    state: State,
    /// The bytes [`Socket::first_bytes`] read, handed out by the next reads before
    /// anything else is read from the socket.
    first: Option<First>,
}

/// Bytes read ahead, and how many of them were handed out.
struct First {
    bytes: Vec<u8>,
    taken: usize,
}

enum State {
    /// Not registered: every call goes straight to the socket.
    Direct(std::net::TcpStream),
    /// Registered with the reactor of the runtime it was registered on.
    Registered(TcpStream),
    /// The registration failed; the socket is closed.
    Lost,
}

impl Socket {
    /// `stream` must be non-blocking (as [`Listener`] accepts it).
    pub(crate) fn accepted(stream: std::net::TcpStream) -> Self {
        Self {
            state: State::Direct(stream),
            first: None,
        }
    }

    /// What has arrived (up to a page), waiting for the first bytes or the end if nothing
    /// has; empty at the end. The bytes stay the connection's: the next reads return them
    /// first, so whoever reads the connection finds them as if never read (the head whole,
    /// when it came in one piece). One read, where a peek and then a read took two calls.
    /// Called before anything else reads the socket.
    pub(crate) async fn first_bytes(&mut self) -> io::Result<&[u8]> {
        while self.first.is_none() {
            let mut bytes = vec![0_u8; DIRECT_READ];
            let read = match &self.state {
                State::Direct(stream) => (&*stream).read(&mut bytes),
                State::Registered(stream) => stream.try_read(&mut bytes),
                State::Lost => Err(lost()),
            };
            match read {
                Ok(read) => {
                    bytes.truncate(read);
                    self.first = Some(First { bytes, taken: 0 });
                }
                Err(error) if must_wait(&error) => {
                    // Nothing yet: wait without the buffer, so a client that connects and
                    // says nothing holds no page here until the first-request timeout.
                    drop(bytes);
                    self.registered()?.readable().await?;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(self
            .first
            .as_ref()
            .map_or(&[][..], |first| &first.bytes[first.taken..]))
    }

    /// Reads what has arrived into `buf` without taking it out of the socket, waiting for
    /// the first bytes (or the end) if nothing has.
    #[cfg(test)]
    pub(crate) async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let State::Direct(stream) = &self.state {
            match stream.peek(buf) {
                Err(error) if must_wait(&error) => {}
                done => return done,
            }
        }
        self.registered()?.peek(buf).await
    }

    /// The socket registered with the current runtime's reactor, registering it first if
    /// it is not yet.
    fn registered(&mut self) -> io::Result<&mut TcpStream> {
        if matches!(self.state, State::Direct(_))
            && let State::Direct(stream) = std::mem::replace(&mut self.state, State::Lost)
        {
            self.state = State::Registered(TcpStream::from_std(stream)?);
        }
        match &mut self.state {
            State::Registered(stream) => Ok(stream),
            State::Direct(_) | State::Lost => Err(lost()),
        }
    }

    /// Whether the socket was registered (for tests).
    #[cfg(test)]
    pub(crate) fn is_registered(&self) -> bool {
        matches!(self.state, State::Registered(_))
    }
}

impl Socket {
    /// A write: `direct` on the socket while it is unregistered, and through the reactor
    /// (`registered`) once it is or once the direct one would block.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        direct: impl FnOnce(&std::net::TcpStream) -> io::Result<usize>,
        registered: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if let State::Direct(stream) = &self.state {
            match direct(stream) {
                Err(error) if must_wait(&error) => {}
                done => return Poll::Ready(done),
            }
        }
        match self.registered() {
            Ok(stream) => registered(Pin::new(stream), cx),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

/// A call that would block (or was interrupted) waits for the reactor.
fn must_wait(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn lost() -> io::Error {
    io::Error::other("the connection's socket could not join the runtime's reactor")
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(first) = &mut this.first {
            let ahead = &first.bytes[first.taken..];
            let give = ahead.len().min(buf.remaining());
            buf.put_slice(&ahead[..give]);
            first.taken += give;
            if first.taken == first.bytes.len() {
                this.first = None;
            }
            // An empty read-ahead is the end, as a read of nothing would say.
            return Poll::Ready(Ok(()));
        }
        if let State::Direct(stream) = &this.state {
            let want = buf.remaining().min(DIRECT_READ);
            match (&*stream).read(buf.initialize_unfilled_to(want)) {
                Ok(read) => {
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if must_wait(&error) => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        match this.registered() {
            Ok(stream) => Pin::new(stream).poll_read(cx, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_send(
            cx,
            |stream| (&*stream).write(data),
            |stream, cx| stream.poll_write(cx, data),
        )
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_send(
            cx,
            |stream| (&*stream).write_vectored(data),
            |stream, cx| stream.poll_write_vectored(cx, data),
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            // Nothing is buffered here.
            State::Direct(_) => Poll::Ready(Ok(())),
            State::Registered(stream) => Pin::new(stream).poll_flush(cx),
            State::Lost => Poll::Ready(Err(lost())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Direct(stream) => Poll::Ready(stream.shutdown(Shutdown::Write)),
            State::Registered(stream) => Pin::new(stream).poll_shutdown(cx),
            State::Lost => Poll::Ready(Err(lost())),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A listener on loopback and a client connected to it: (client, server's side,
    /// accepted as the server accepts).
    pub(crate) async fn pair() -> (TcpStream, Socket) {
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std.local_addr().unwrap();
        let listener = Listener::new(std).unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        (client, server)
    }

    /// Waits until `socket` has `len` bytes to read, without taking them.
    async fn arrived(socket: &mut Socket, len: usize) {
        let mut seen = vec![0_u8; len];
        while socket.peek(&mut seen).await.unwrap() < len {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn a_connection_lost_in_the_queue_is_not_a_listener_error() {
        use rustix::io::Errno;
        for lost in [
            Errno::CONNABORTED,
            Errno::PROTO,
            Errno::NETUNREACH,
            Errno::PERM,
        ] {
            assert!(lost_before_accept(&io::Error::from(lost)), "{lost:?}");
        }
        // Out of descriptors or memory: the listener's, for the caller to back off on.
        for own in [
            Errno::MFILE,
            Errno::NFILE,
            Errno::NOBUFS,
            Errno::NOMEM,
            Errno::BADF,
        ] {
            assert!(!lost_before_accept(&io::Error::from(own)), "{own:?}");
        }
        assert!(!lost_before_accept(&io::Error::other("not an OS error")));
    }

    #[tokio::test]
    async fn an_accepted_socket_has_nodelay_from_the_listener() {
        let (_client, server) = pair().await;
        let State::Direct(stream) = &server.state else {
            panic!("not registered before any I/O");
        };
        assert!(stream.nodelay().unwrap());
    }

    #[tokio::test]
    async fn a_request_already_there_is_answered_without_registering() {
        let (mut client, mut server) = pair().await;
        client.write_all(b"ping").await.unwrap();
        arrived(&mut server, 4).await;
        let mut read = [0_u8; 16];
        let len = server.read(&mut read).await.unwrap();
        assert_eq!(&read[..len], b"ping");
        server.write_all(b"pong").await.unwrap();
        server.shutdown().await.unwrap();
        assert!(!server.is_registered(), "nothing had to wait");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"pong");
    }

    #[tokio::test]
    async fn a_read_that_must_wait_registers_and_is_woken_by_the_bytes() {
        let (mut client, mut server) = pair().await;
        let reader = tokio::spawn(async move {
            let mut read = [0_u8; 16];
            let len = server.read(&mut read).await.unwrap();
            (read[..len].to_vec(), server.is_registered())
        });
        // The reader finds nothing, registers and waits; then the bytes come.
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(b"late").await.unwrap();
        let (read, registered) = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the bytes woke the reader")
            .unwrap();
        assert_eq!(read, b"late");
        assert!(registered);
    }

    #[tokio::test]
    async fn a_peek_that_must_wait_is_woken_and_leaves_the_bytes() {
        let (mut client, mut server) = pair().await;
        let peeker = tokio::spawn(async move {
            let mut seen = [0_u8; 4];
            let len = server.peek(&mut seen).await.unwrap();
            let mut read = [0_u8; 4];
            server.read_exact(&mut read[..len]).await.unwrap();
            (seen[..len].to_vec(), read[..len].to_vec())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(b"abcd").await.unwrap();
        let (seen, read) = tokio::time::timeout(Duration::from_secs(5), peeker)
            .await
            .expect("the bytes woke the peek")
            .unwrap();
        assert!(!seen.is_empty());
        assert_eq!(seen, read);
    }

    #[tokio::test]
    async fn first_bytes_wait_for_the_client_and_are_read_again() {
        let (mut client, mut server) = pair().await;
        let reader = tokio::spawn(async move {
            let first = server.first_bytes().await.unwrap().to_vec();
            let mut again = Vec::new();
            server.read_to_end(&mut again).await.unwrap();
            (first, again)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(b"early").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(b" and late").await.unwrap();
        drop(client);
        let (first, again) = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the bytes woke the first read")
            .unwrap();
        assert_eq!(first, b"early");
        assert_eq!(again, b"early and late");
    }

    #[tokio::test]
    async fn a_client_gone_reads_as_the_end() {
        let (client, mut server) = pair().await;
        drop(client);
        let mut read = [0_u8; 8];
        let len = tokio::time::timeout(Duration::from_secs(5), server.read(&mut read))
            .await
            .expect("the end is reported")
            .unwrap();
        assert_eq!(len, 0);
    }

    #[tokio::test]
    async fn a_large_answer_is_written_whole_through_a_full_socket() {
        let (mut client, mut server) = pair().await;
        // More than the socket buffers hold: the direct write fills them, the rest waits
        // for the client to read, registered.
        let answer: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let expected = answer.clone();
        let writer = tokio::spawn(async move {
            server.write_all(&answer).await.unwrap();
            server.shutdown().await.unwrap();
            server.is_registered()
        });
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the bytes arrive in order, none lost");
        assert!(writer.await.unwrap(), "the writer had to wait");
    }

    #[tokio::test]
    async fn a_head_larger_than_one_direct_read_arrives_whole() {
        let (mut client, mut server) = pair().await;
        let head: Vec<u8> = (0..3 * DIRECT_READ + 17)
            .map(|i| (i % 26) as u8 + b'a')
            .collect();
        client.write_all(&head).await.unwrap();
        drop(client);
        let mut read = Vec::new();
        server.read_to_end(&mut read).await.unwrap();
        assert!(read == head);
    }
}
