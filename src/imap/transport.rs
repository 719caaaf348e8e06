//! The byte stream under a client: TCP (TCP_NODELAY and quick ACKs, see the Nagle trap in the
//! reference) or TLS over TCP, and how to reach a server (host, port, security, certificate
//! checks, timeout).

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// How the connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// No TLS at all.
    Plain,
    /// Plain connection upgraded with STARTTLS before login.
    StartTls,
    /// TLS from the first byte (usually port 993).
    Tls,
}

/// Certificate checking. Verification is on unless switched off explicitly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    pub verify: bool,
    /// Trust this CA file instead of the system's bundle.
    pub ca_file: Option<PathBuf>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            verify: true,
            ca_file: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub tls: TlsOptions,
    /// Longest wait for any single read, write or connect.
    pub timeout: Duration,
}

/// A plain or TLS stream.
pub(crate) enum Stream {
    Plain(QuickAck),
    Tls(Box<TlsStream<QuickAck>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A TCP stream (TCP_NODELAY set) that acknowledges what it reads at once, instead of after
/// Linux's delayed-ACK timer (40 ms). A peer that writes a response in several pieces without
/// TCP_NODELAY (Courier-IMAP does; so may a mail client sending an APPEND) holds each later piece
/// until the earlier one is acknowledged: every pipelined command to Courier waited one timer
/// (5 pipelined commands took 44 ms, 2 ms with this). Every socket the crate reads IMAP from is
/// one of these, under TLS where there is TLS.
///
/// Linux delays ACKs like this ("pingpong" mode) once a connection sends soon after it received,
/// and leaves that mode when asked (TCP_QUICKACK). So the first read after each write asks; reads
/// of a long response in between need not.
pub(crate) struct QuickAck {
    tcp: TcpStream,
    wrote: bool,
}

impl QuickAck {
    pub(crate) fn new(tcp: TcpStream) -> io::Result<QuickAck> {
        tcp.set_nodelay(true)?;
        Ok(QuickAck { tcp, wrote: false })
    }

    fn written(&mut self, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote = true;
        }
        polled
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if self.wrote && matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.wrote = false;
            // Failing only costs latency.
            #[cfg(target_os = "linux")]
            if let Err(e) = socket2::SockRef::from(&self.tcp).set_tcp_quickack(true) {
                tracing::trace!(error = %e, "TCP_QUICKACK not set");
            }
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.tcp).poll_write(cx, buf);
        self.written(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        self.written(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Reads from `stream` until `want` bytes have come.
    async fn read_exactly(stream: &mut QuickAck, want: usize) -> Vec<u8> {
        let mut got = vec![0; want];
        stream.read_exact(&mut got).await.expect("read");
        got
    }

    /// After an exchange (greeting, command, reply) Linux would delay the next ACK ("pingpong"
    /// mode); a read through `QuickAck` asks for the ACK at once instead.
    #[tokio::test]
    async fn a_read_leaves_the_socket_acknowledging_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            s.write_all(b"* OK hi\r\n").await.expect("greet");
            let mut cmd = [0u8; 8];
            s.read_exact(&mut cmd).await.expect("command");
            s.write_all(b"a OK\r\n").await.expect("reply");
            // The connection stays open until the client has looked.
            done_rx.await.expect("the client says when it has looked");
        });
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut stream = QuickAck::new(tcp).expect("nodelay");
        assert_eq!(read_exactly(&mut stream, 9).await, b"* OK hi\r\n");
        stream.write_all(b"a NOOP\r\n").await.expect("send");
        assert_eq!(read_exactly(&mut stream, 6).await, b"a OK\r\n");
        let quick = socket2::SockRef::from(&stream.tcp)
            .tcp_quickack()
            .expect("getsockopt");
        assert!(quick, "the socket is back in delayed-ACK mode after a read");
        done_tx.send(()).expect("the server waits for this");
        server.await.expect("server");
    }
}
