//! A TLS connection past its handshake as a tokio stream, for the HTTP listener: API requests
//! and WebSocket upgrades over TLS use the same record layer ([`Records`]) as binary-protocol
//! connections, and an upgrade hands its parts to the session's [`Link`](super::Link).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use rustls::server::UnbufferedServerConnection;
use rustls::{HandshakeKind, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::records::{Records, WRITE_CHUNK};
use super::tls_handshake;

/// A TLS stream over TCP.
pub(crate) struct TlsStream {
    tcp: TcpStream,
    records: Records,
    /// Decrypted bytes not read yet.
    plain: BytesMut,
    kind: Option<HandshakeKind>,
    /// close_notify is sealed.
    closing: bool,
}

impl TlsStream {
    /// Runs the server's side of the handshake on `tcp`.
    pub(crate) async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
        let conn = UnbufferedServerConnection::new(config)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")))?;
        let done = tls_handshake::run(&tcp, conn).await?;
        Ok(TlsStream {
            tcp,
            records: done.records,
            plain: done.early,
            kind: done.kind,
            closing: false,
        })
    }

    /// Full or resumed.
    pub(crate) fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.kind
    }

    /// The socket, the record layer, decrypted bytes not read yet, and the handshake's kind.
    pub(crate) fn into_parts(self) -> (TcpStream, Records, BytesMut, Option<HandshakeKind>) {
        (self.tcp, self.records, self.plain, self.kind)
    }

    /// Writes sealed records until none are left, waiting for the socket.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.records.try_send(&self.tcp) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_write_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.remaining());
                buf.put_slice(&this.plain[..n]);
                this.plain.advance(n);
                if this.plain.is_empty() {
                    this.plain = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            match this.records.read_from(&this.tcp, &mut this.plain) {
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(this.tcp.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Earlier records first, so what is sealed and not sent stays bounded.
        ready!(this.poll_drain(cx))?;
        let n = this.records.seal_vectored(bufs, WRITE_CHUNK)?;
        this.records.send_some(&this.tcp)?;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.records.seal_close_notify();
            this.closing = true;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
