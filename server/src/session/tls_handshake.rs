//! The TLS handshake of a binary-protocol connection, driven through rustls' unbuffered API:
//! only an unbuffered connection can hand its traffic secrets and key schedule over to the
//! session's own record layer ([`Records`]) once the handshake is done.

use std::io;

use bytes::{Buf, BytesMut};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, InsufficientSizeError, UnbufferedStatus};
use rustls::HandshakeKind;
use tokio::net::TcpStream;

use super::records::Records;

/// Most handshake bytes buffered from the client (a ClientHello with every extension fits).
const MAX_HANDSHAKE_IN: usize = 64 * 1024;

fn tls_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

/// How long a failing handshake waits to hand its alert to the socket.
const ALERT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Sends the alert rustls queued when the handshake failed.
async fn send_alert(
    tcp: &TcpStream,
    conn: &mut UnbufferedServerConnection,
    incoming: &mut [u8],
) -> io::Result<()> {
    if let Ok(ConnectionState::EncodeTlsData(mut data)) = conn.process_tls_records(incoming).state {
        let mut out = Vec::new();
        encode(&mut data, &mut out)?;
        write_fully(tcp, &out).await?;
    }
    Ok(())
}

/// Appends the records rustls has ready to `out`, growing it to the size they need.
fn encode(
    data: &mut rustls::unbuffered::EncodeTlsData<'_, ServerConnectionData>,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let used = out.len();
    let n = match data.encode(&mut out[used..]) {
        Ok(n) => n,
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            out.resize(used + required_size, 0);
            data.encode(&mut out[used..]).map_err(tls_error)?
        }
        Err(e) => return Err(tls_error(e)),
    };
    out.truncate(used + n);
    Ok(())
}

/// A finished handshake.
pub(crate) struct Established {
    /// The record layer from here on.
    pub records: Records,
    /// Application data that arrived with the client's last handshake flight, decrypted.
    pub early: BytesMut,
    /// Full or resumed.
    pub kind: Option<HandshakeKind>,
}

/// Writes all of `buf`, waiting for the socket as needed.
async fn write_fully(tcp: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match tcp.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => tcp.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs the handshake on `tcp` to its end.
pub(crate) async fn run(
    tcp: &TcpStream,
    mut conn: UnbufferedServerConnection,
) -> io::Result<Established> {
    let mut incoming = BytesMut::with_capacity(4096);
    let mut outgoing: Vec<u8> = Vec::new();
    let mut early = BytesMut::new();
    let discard = loop {
        let UnbufferedStatus { mut discard, state } = conn.process_tls_records(&mut incoming);
        let state = match state {
            Ok(state) => state,
            Err(e) => {
                // rustls queued an alert saying why: send it, briefly, before closing.
                incoming.advance(discard);
                let alert = send_alert(tcp, &mut conn, &mut incoming);
                let _ = tokio::time::timeout(ALERT_WAIT, alert).await;
                return Err(tls_error(e));
            }
        };
        match state {
            ConnectionState::EncodeTlsData(mut data) => {
                encode(&mut data, &mut outgoing)?;
            }
            ConnectionState::TransmitTlsData(data) => {
                write_fully(tcp, &outgoing).await?;
                outgoing.clear();
                data.done();
            }
            ConnectionState::BlockedHandshake => {
                if incoming.len() >= MAX_HANDSHAKE_IN {
                    return Err(tls_error("handshake messages over 64 KiB"));
                }
                tcp.readable().await?;
                incoming.reserve(4096);
                match tcp.try_read_buf(&mut incoming) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            ConnectionState::ReadTraffic(mut data) => {
                while let Some(record) = data.next_record() {
                    let record = record.map_err(tls_error)?;
                    discard += record.discard;
                    early.extend_from_slice(record.payload);
                }
            }
            ConnectionState::WriteTraffic(_) if outgoing.is_empty() => break discard,
            ConnectionState::WriteTraffic(_) => {
                return Err(tls_error("handshake records left unsent"));
            }
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            _ => return Err(tls_error("unexpected state (early data is not accepted)")),
        }
        incoming.advance(discard);
    };
    incoming.advance(discard);
    let kind = conn.handshake_kind();
    let (secrets, kernel) = conn.dangerous_into_kernel_connection().map_err(tls_error)?;
    let rx_buf = if incoming.is_empty() {
        BytesMut::new()
    } else {
        incoming
    };
    Ok(Established {
        records: Records::new(secrets, kernel, rx_buf)?,
        early,
        kind,
    })
}
