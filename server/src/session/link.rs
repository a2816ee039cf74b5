//! The socket under a session: a bare `TcpStream`, or one with TLS on it. TLS moves ciphertext
//! with the same readiness calls (`try_read`, `try_write`) as plain TCP, so the session's event
//! loop stays one loop over socket readiness and its outbox, and a plain connection pays for
//! TLS with one null pointer. TLS handshakes go through rustls' unbuffered API, after which the
//! connection seals and opens its records itself ([`Records`]: about 6.7 KiB less per idle
//! connection than rustls to the end); a WebSocket upgrade over TLS arrives from the HTTP
//! listener already past its handshake.

use std::io::{self, IoSlice};
use std::task::{Context, Poll};

use bytes::BytesMut;
use rustls::server::UnbufferedServerConnection;
use rustls::HandshakeKind;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::records::{Records, WRITE_CHUNK};
use super::tls_handshake;

/// A connection's socket. An enum rather than a socket plus an optional TLS pointer: the
/// boxed TLS variant fits beside the socket's niche, so a plain link is exactly a `TcpStream`
/// and the session stays in its allocation class.
pub(crate) enum Link {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS; boxed because its state is large.
    Tls(Box<TlsLink>),
}

/// A socket with TLS on it.
pub(crate) struct TlsLink {
    tcp: TcpStream,
    state: TlsState,
}

/// Where a TLS link is in its life. The record layer is inline because it is the state a
/// link spends its life in; the handshake is boxed so it does not widen it.
#[allow(clippy::large_enum_variant)]
enum TlsState {
    /// Handshaking.
    Handshake(Box<UnbufferedServerConnection>),
    /// Past the handshake, with this server's record layer.
    Records {
        records: Records,
        /// Application data decrypted during the handshake and not read yet.
        early: BytesMut,
        kind: Option<HandshakeKind>,
    },
    /// A handshake failed or was abandoned: nothing more is read or written.
    Broken,
}

fn broken() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "TLS: the handshake did not finish",
    )
}

impl Link {
    /// A plain TCP link.
    pub(crate) fn plain(tcp: TcpStream) -> Link {
        Link::Plain(tcp)
    }

    /// A TLS link about to handshake ([`Link::tls_handshake`]).
    pub(crate) fn tls_accept(tcp: TcpStream, conn: UnbufferedServerConnection) -> Link {
        Link::Tls(Box::new(TlsLink {
            tcp,
            state: TlsState::Handshake(Box::new(conn)),
        }))
    }

    /// A TLS link past its handshake (a WebSocket upgrade from the HTTP listener).
    pub(crate) fn tls_records(
        tcp: TcpStream,
        records: Records,
        kind: Option<HandshakeKind>,
    ) -> Link {
        Link::Tls(Box::new(TlsLink {
            tcp,
            state: TlsState::Records {
                records,
                early: BytesMut::new(),
                kind,
            },
        }))
    }

    /// The TCP socket.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Link::Plain(t) => t,
            Link::Tls(b) => &b.tcp,
        }
    }

    /// True when decrypted bytes wait to be read.
    fn has_plaintext(&self) -> bool {
        match self {
            Link::Plain(_) => false,
            Link::Tls(b) => match &b.state {
                TlsState::Records { early, .. } => !early.is_empty(),
                TlsState::Handshake(_) | TlsState::Broken => false,
            },
        }
    }

    /// How the TLS handshake went (None on a plain link).
    pub(crate) fn tls_handshake_kind(&self) -> Option<Option<HandshakeKind>> {
        match self {
            Link::Plain(_) => None,
            Link::Tls(b) => Some(match &b.state {
                TlsState::Handshake(c) => c.handshake_kind(),
                TlsState::Records { kind, .. } => *kind,
                TlsState::Broken => None,
            }),
        }
    }

    /// True past a handshake whose records this server seals itself.
    #[cfg(test)]
    pub(crate) fn has_own_records(&self) -> bool {
        matches!(self, Link::Tls(b) if matches!(b.state, TlsState::Records { .. }))
    }

    /// The own record layer, past the handshake.
    #[cfg(test)]
    pub(crate) fn records_mut(&mut self) -> Option<&mut Records> {
        match self {
            Link::Tls(b) => match &mut b.state {
                TlsState::Records { records, .. } => Some(records),
                _ => None,
            },
            Link::Plain(_) => None,
        }
    }

    /// Completes the TLS handshake (nothing to do on a plain link or one already past it).
    pub(crate) async fn tls_handshake(&mut self) -> io::Result<()> {
        let Link::Tls(b) = self else {
            return Ok(());
        };
        if !matches!(b.state, TlsState::Handshake(_)) {
            return Ok(());
        }
        let TlsState::Handshake(conn) = std::mem::replace(&mut b.state, TlsState::Broken) else {
            unreachable!("checked above");
        };
        let done = tls_handshake::run(&b.tcp, *conn).await?;
        b.state = TlsState::Records {
            records: done.records,
            early: done.early,
            kind: done.kind,
        };
        Ok(())
    }

    /// Socket readability (ciphertext, for TLS: plaintext is always drained on read).
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.has_plaintext() {
            return Poll::Ready(Ok(()));
        }
        self.tcp().poll_read_ready(cx)
    }

    /// Socket writability.
    pub(crate) fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_write_ready(cx)
    }

    /// Appends readable plaintext to `dst` without blocking: `Ok(0)` is the end of the stream,
    /// `WouldBlock` means nothing more now.
    pub(crate) fn try_read_buf(&mut self, dst: &mut BytesMut) -> io::Result<usize> {
        let b = match self {
            Link::Plain(t) => return t.try_read_buf(dst),
            Link::Tls(b) => b,
        };
        let TlsLink { tcp, state } = &mut **b;
        match state {
            TlsState::Records { records, early, .. } => {
                if !early.is_empty() {
                    let n = early.len();
                    dst.extend_from_slice(early);
                    *early = BytesMut::new();
                    return Ok(n);
                }
                records.read_from(tcp, dst)
            }
            TlsState::Handshake(_) | TlsState::Broken => Err(broken()),
        }
    }

    /// True while TLS records wait to be written.
    pub(crate) fn wants_flush(&self) -> bool {
        match self {
            Link::Plain(_) => false,
            Link::Tls(b) => match &b.state {
                TlsState::Records { records, .. } => !records.pending().is_empty(),
                TlsState::Handshake(_) | TlsState::Broken => false,
            },
        }
    }

    /// Writes pending TLS records without blocking; `WouldBlock` if some remain.
    pub(crate) fn try_flush(&mut self) -> io::Result<()> {
        let Link::Tls(b) = self else {
            return Ok(());
        };
        let TlsLink { tcp, state } = &mut **b;
        match state {
            TlsState::Records { records, .. } => records.try_send(tcp),
            TlsState::Handshake(_) | TlsState::Broken => Ok(()),
        }
    }

    /// Writes plaintext without blocking; returns how much was taken.
    pub(crate) fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if let Link::Plain(t) = self {
            return t.try_write_vectored(bufs);
        }
        // Earlier records first; new plaintext only when they are out.
        self.try_flush()?;
        let Link::Tls(b) = self else {
            return Ok(0);
        };
        let taken = match &mut b.state {
            TlsState::Records { records, .. } => records.seal_vectored(bufs, WRITE_CHUNK)?,
            TlsState::Handshake(_) | TlsState::Broken => return Err(broken()),
        };
        match self.try_flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        Ok(taken)
    }

    /// Writes every pending TLS record, waiting for the socket as needed.
    async fn flush_all(&mut self) -> io::Result<()> {
        loop {
            match self.try_flush() {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp().writable().await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes all of `buf`, waiting for the socket as needed.
    pub(crate) async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Link::Plain(t) => return t.write_all(buf).await,
            Link::Tls(b) => match &mut b.state {
                TlsState::Records { records, .. } => records.seal(buf)?,
                TlsState::Handshake(_) | TlsState::Broken => return Err(broken()),
            },
        }
        self.flush_all().await
    }

    /// Waits until there is something to read (socket bytes, or decrypted bytes rustls holds).
    pub(crate) async fn readable(&self) -> io::Result<()> {
        if self.has_plaintext() {
            return Ok(());
        }
        self.tcp().readable().await
    }

    /// Ends the stream: TLS close_notify, then the TCP write side.
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Link::Plain(t) => return t.shutdown().await,
            Link::Tls(b) => match &mut b.state {
                TlsState::Records { records, .. } => records.seal_close_notify(),
                TlsState::Handshake(_) | TlsState::Broken => {}
            },
        }
        self.flush_all().await?;
        let Link::Tls(b) = self else {
            return Ok(());
        };
        b.tcp.shutdown().await
    }
}
