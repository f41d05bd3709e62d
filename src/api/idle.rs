//! Connections that go silent are closed. `axum::serve` runs hyper without a timer, so hyper's
//! own header-read timeout never fires: a client that sends half a request line and stops would
//! hold its connection (and task) forever. The request timeout only starts once the headers are
//! in. Here every connection is closed after `idle` without a byte read or written, which covers
//! stalled headers, idle keep-alive connections and clients that stop reading their answer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// A TCP listener whose connections time out when idle.
pub struct IdleListener {
    inner: TcpListener,
    idle: Duration,
}

impl IdleListener {
    pub fn new(inner: TcpListener, idle: Duration) -> Self {
        IdleListener { inner, idle }
    }
}

impl axum::serve::Listener for IdleListener {
    type Io = IdleStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (IdleStream::new(io, self.idle), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A stream whose pending reads and writes fail with `TimedOut` once nothing has moved either
/// way for `idle`.
pub struct IdleStream<T> {
    io: T,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<T> IdleStream<T> {
    pub fn new(io: T, idle: Duration) -> Self {
        IdleStream {
            io,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn touch(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    /// For an operation that is pending: an error once the deadline has passed.
    fn expired<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    this.touch();
                }
                Poll::Ready(r)
            }
            // A client that stops reading its answer is as silent as one that stops sending.
            Poll::Pending => this.expired(cx),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.expired(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    this.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.expired(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const IDLE: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_silent_peer_times_out_and_an_active_one_does_not() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = IdleStream::new(server, IDLE);
        let mut buf = [0u8; 8];

        // A byte every 150 ms keeps it open well past the idle time.
        for _ in 0..4 {
            tokio::time::sleep(IDLE / 2).await;
            client.write_all(b"x").await.expect("write");
            assert_eq!(server.read(&mut buf).await.expect("read"), 1);
        }
        // Then silence: the read fails after the idle time, not before (bounded wait).
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(5), server.read(&mut buf))
            .await
            .expect("bounded")
            .expect_err("idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= IDLE - Duration::from_millis(20));
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_times_out_the_write() {
        let (_client, server) = tokio::io::duplex(64);
        let mut server = IdleStream::new(server, IDLE);
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(5), server.write_all(&[b'x'; 4096]))
            .await
            .expect("bounded")
            .expect_err("the peer never reads");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= IDLE - Duration::from_millis(20));
    }

    #[tokio::test]
    async fn writing_counts_as_activity() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut server = IdleStream::new(server, IDLE);
        tokio::time::sleep(IDLE * 2 / 3).await;
        server.write_all(b"response").await.expect("write");
        let mut buf = [0u8; 8];
        client.read_exact(&mut buf).await.expect("read");
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(5), server.read(&mut buf))
            .await
            .expect("bounded")
            .expect_err("idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= IDLE - Duration::from_millis(20));
    }
}
