//! Connections that send what the HTTP/2 stack writes in as few system calls as it allows: a
//! member's client connections and its streams to peers, and `strata bench`'s connections.
//!
//! On this machine a send on a loopback socket costs about as much as the rest of serving a
//! small request (the kernel runs the receiver's TCP path inside the sender's call). The HTTP/2
//! stack (h2) writes a response's frames from one buffer, except a data frame larger than
//! 256 bytes on a socket that takes vectored writes: that payload is queued by reference and
//! the buffer must be written out before the next frame can join it. A get answering one
//! 256-byte value is just over that size, so every such answer cost two sends. Declaring the
//! connection unvectored raises h2's limit to 1 KiB (smaller payloads are copied into its
//! buffer), and [`Coalesced`] gathers whatever h2 writes until it flushes, then yields once
//! before it sends, so that the answers other streams finish meanwhile leave in the same send.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Writes gathered before a send; a write this large or larger goes straight to the socket.
const GATHER_BYTES: usize = 64 * 1024;

/// A connection whose writes wait for a flush, then leave together.
pub struct Coalesced<S> {
    inner: S,
    gathered: BytesMut,
    /// Whether the pending flush has yielded once already.
    yielded: bool,
}

impl<S> Coalesced<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, gathered: BytesMut::new(), yielded: false }
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Sends everything gathered.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.gathered.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.gathered))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.gathered.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.gathered.len() + buf.len() > GATHER_BYTES {
            ready!(this.poll_send(cx))?;
            if buf.len() >= GATHER_BYTES {
                return Pin::new(&mut this.inner).poll_write(cx, buf);
            }
        }
        this.gathered.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    /// Unvectored, so that h2 copies payloads up to 1 KiB into its own buffer (above).
    fn is_write_vectored(&self) -> bool {
        false
    }

    /// Sends what was gathered, after yielding once: the tasks that run in between (other
    /// streams of the connection finishing their answers) add their frames to the same send.
    /// Under load one send carries several answers; on an idle machine the flush waits for one
    /// pass of the scheduler, a microsecond or two.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.gathered.is_empty() && !this.yielded {
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_send(cx))?;
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Dials the host and port of `uri` with Nagle's algorithm off, for a tonic channel whose
/// writes are [`Coalesced`] (the transport's peer streams, `strata bench`'s connections).
pub async fn connect(uri: http::Uri) -> io::Result<TokioIo<Coalesced<TcpStream>>> {
    if uri.scheme_str() == Some("https") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("TLS is not supported ({uri}); use http://"),
        ));
    }
    let host = uri.host().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("no host in the URL {uri}"))
    })?;
    // An IPv6 address comes bracketed in a URL, not in a socket address.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    Ok(TokioIo::new(Coalesced::new(stream)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use tokio::io::AsyncWriteExt as _;

    use super::*;

    /// A socket stand-in that records each write it is handed, after refusing the first
    /// `full` of them as a full socket buffer would.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        full: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.full > 0 {
                this.full -= 1;
                return Poll::Pending;
            }
            this.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn writes_leave_together_at_a_flush() {
        let mut conn = Coalesced::new(Recorder::default());
        for frame in [&b"headers"[..], b"data", b"trailers"] {
            conn.write_all(frame).await.unwrap();
        }
        assert!(conn.inner.writes.is_empty(), "nothing is sent before a flush");
        conn.flush().await.unwrap();
        assert_eq!(conn.inner.writes, vec![b"headersdatatrailers".to_vec()]);
    }

    #[test]
    fn a_flush_yields_once_before_it_sends() {
        let waker = Arc::new(CountingWaker::default());
        let std_waker = waker.clone().into();
        let mut cx = Context::from_waker(&std_waker);
        let mut conn = Coalesced::new(Recorder::default());
        assert!(Pin::new(&mut conn).poll_write(&mut cx, b"answer").is_ready());

        assert!(Pin::new(&mut conn).poll_flush(&mut cx).is_pending());
        assert_eq!(waker.0.load(Ordering::SeqCst), 1, "it asks to be polled again");
        assert!(conn.inner.writes.is_empty());
        assert!(Pin::new(&mut conn).poll_write(&mut cx, b" and another").is_ready());

        assert!(matches!(Pin::new(&mut conn).poll_flush(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(conn.inner.writes, vec![b"answer and another".to_vec()]);
        // With nothing gathered a flush does not yield.
        assert!(matches!(Pin::new(&mut conn).poll_flush(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(waker.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_flush_that_waited_for_the_socket_does_not_yield_again() {
        let waker = Arc::new(CountingWaker::default());
        let std_waker = waker.clone().into();
        let mut cx = Context::from_waker(&std_waker);
        let mut conn = Coalesced::new(Recorder { full: 1, ..Recorder::default() });
        assert!(Pin::new(&mut conn).poll_write(&mut cx, b"answer").is_ready());
        assert!(Pin::new(&mut conn).poll_flush(&mut cx).is_pending(), "the yield");
        assert!(Pin::new(&mut conn).poll_flush(&mut cx).is_pending(), "the socket is full");
        assert!(matches!(Pin::new(&mut conn).poll_flush(&mut cx), Poll::Ready(Ok(()))));
        assert_eq!(conn.inner.writes, vec![b"answer".to_vec()]);
        assert_eq!(waker.0.load(Ordering::SeqCst), 1, "one yield only");
    }

    #[tokio::test]
    async fn a_large_write_goes_straight_through_after_what_was_gathered() {
        let mut conn = Coalesced::new(Recorder::default());
        conn.write_all(b"small").await.unwrap();
        let large = vec![7u8; GATHER_BYTES];
        conn.write_all(&large).await.unwrap();
        assert_eq!(conn.inner.writes, vec![b"small".to_vec(), large]);
    }

    #[tokio::test]
    async fn an_https_url_is_refused_rather_than_dialled_in_plain_text() {
        let refused = connect("https://127.0.0.1:1".parse().unwrap()).await;
        assert!(matches!(refused, Err(e) if e.kind() == io::ErrorKind::Unsupported));
    }

    #[test]
    fn the_http2_stack_is_told_the_connection_is_unvectored() {
        // h2 copies payloads into its buffer up to 1 KiB only on unvectored connections.
        assert!(!Coalesced::new(Recorder::default()).is_write_vectored());
    }
}
