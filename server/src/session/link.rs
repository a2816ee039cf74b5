//! The socket under a session: a bare `TcpStream`, or one with TLS on it. TLS is rustls used
//! sans-I/O: ciphertext moves with the same readiness calls (`try_read`, `try_write`) as plain
//! TCP, so the session's event loop stays one loop over socket readiness and its outbox, and a
//! plain connection pays for TLS with one null pointer.

use std::io::{self, IoSlice, Read, Write};
use std::task::{Context, Poll};

use bytes::BytesMut;
use rustls::ServerConnection;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Plaintext accepted into TLS per write call (rustls encrypts it into records at once).
const TLS_WRITE_CHUNK: usize = 64 * 1024;
/// Plaintext read per call.
const READ_CHUNK: usize = 4096;

/// `io::Read`/`io::Write` over the non-blocking socket, for rustls.
struct Try<'a>(&'a TcpStream);

impl Read for Try<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Try<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

/// A connection's socket. An enum rather than a socket plus an optional TLS pointer: the
/// boxed TLS variant fits beside the socket's niche, so a plain link is exactly a `TcpStream`
/// and the session stays in its allocation class.
pub(crate) enum Link {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS; boxed because a rustls connection is large.
    Tls(Box<TlsLink>),
}

/// A socket with rustls on it.
pub(crate) struct TlsLink {
    tcp: TcpStream,
    conn: ServerConnection,
    /// Decrypted bytes rustls holds that have not been read yet. The socket may have nothing
    /// more to say while these wait (a HELLO that arrived with the client's Finished), so
    /// they count as readable.
    plaintext: usize,
}

impl Link {
    /// A plain TCP link.
    pub(crate) fn plain(tcp: TcpStream) -> Link {
        Link::Plain(tcp)
    }

    /// A TLS link whose handshake may still be in progress ([`Link::tls_handshake`]).
    pub(crate) fn tls(tcp: TcpStream, conn: ServerConnection) -> Link {
        Link::Tls(Box::new(TlsLink {
            tcp,
            conn,
            plaintext: 0,
        }))
    }

    /// The TCP socket.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Link::Plain(t) => t,
            Link::Tls(b) => &b.tcp,
        }
    }

    /// The socket and, with TLS, its rustls connection.
    fn parts(&mut self) -> (&TcpStream, Option<&mut ServerConnection>) {
        match self {
            Link::Plain(t) => (t, None),
            Link::Tls(b) => (&b.tcp, Some(&mut b.conn)),
        }
    }

    /// True when rustls holds decrypted bytes not read yet.
    fn has_plaintext(&self) -> bool {
        matches!(self, Link::Tls(b) if b.plaintext > 0)
    }

    /// How the TLS handshake went (None on a plain link).
    pub(crate) fn tls_handshake_kind(&self) -> Option<Option<rustls::HandshakeKind>> {
        match self {
            Link::Plain(_) => None,
            Link::Tls(t) => Some(t.conn.handshake_kind()),
        }
    }

    /// Completes the TLS handshake (nothing to do on a plain link).
    pub(crate) async fn tls_handshake(&mut self) -> io::Result<()> {
        loop {
            let (_, Some(tls)) = self.parts() else {
                return Ok(());
            };
            if tls.wants_write() {
                self.flush_all().await?;
                continue;
            }
            if !tls.is_handshaking() {
                return Ok(());
            }
            self.tcp().readable().await?;
            let (tcp, Some(tls)) = self.parts() else {
                return Ok(());
            };
            match tls.read_tls(&mut Try(tcp)) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => match tls.process_new_packets() {
                    Ok(io) => {
                        let pending = io.plaintext_bytes_to_read();
                        if let Link::Tls(b) = self {
                            b.plaintext = pending;
                        }
                    }
                    Err(e) => {
                        // Tell the peer why (the alert is queued), then fail.
                        let _ = self.flush_all().await;
                        return Err(tls_error(e));
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
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
        let TlsLink {
            tcp,
            conn: tls,
            plaintext,
        } = &mut **b;
        loop {
            let mut chunk = [0u8; READ_CHUNK];
            match tls.reader().read(&mut chunk) {
                Ok(0) => {
                    *plaintext = 0;
                    return Ok(0);
                }
                Ok(n) => {
                    *plaintext = plaintext.saturating_sub(n);
                    dst.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => *plaintext = 0,
                Err(e) => return Err(e),
            }
            match tls.read_tls(&mut Try(tcp)) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    let io = tls.process_new_packets().map_err(tls_error)?;
                    *plaintext = io.plaintext_bytes_to_read();
                    if tls.wants_write() {
                        // Handshake messages or alerts; what does not fit now waits for the
                        // session's next write.
                        match tls.write_tls(&mut Try(tcp)) {
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// True while TLS records wait to be written.
    pub(crate) fn wants_flush(&self) -> bool {
        match self {
            Link::Plain(_) => false,
            Link::Tls(b) => b.conn.wants_write(),
        }
    }

    /// Writes pending TLS records without blocking; `WouldBlock` if some remain.
    pub(crate) fn try_flush(&mut self) -> io::Result<()> {
        let (tcp, Some(tls)) = self.parts() else {
            return Ok(());
        };
        while tls.wants_write() {
            if tls.write_tls(&mut Try(tcp))? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// Writes plaintext without blocking; returns how much was taken.
    pub(crate) fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if let Link::Plain(t) = self {
            return t.try_write_vectored(bufs);
        }
        // Earlier records first; new plaintext only when they are out.
        self.try_flush()?;
        let (_, Some(tls)) = self.parts() else {
            return Ok(0);
        };
        let mut taken = 0;
        for b in bufs {
            if taken >= TLS_WRITE_CHUNK {
                break;
            }
            let n = tls.writer().write(b)?;
            taken += n;
            if n < b.len() {
                break;
            }
        }
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
            Link::Plain(t) => t.write_all(buf).await,
            Link::Tls(b) => {
                b.conn.writer().write_all(buf)?;
                self.flush_all().await
            }
        }
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
        if let Link::Tls(b) = self {
            b.conn.send_close_notify();
            self.flush_all().await?;
        }
        match self {
            Link::Plain(t) => t.shutdown().await,
            Link::Tls(b) => b.tcp.shutdown().await,
        }
    }
}
