//! A minimal NATS core client for the peer rows (nats-server): CONNECT, SUB, PUB, MSG and
//! PING/PONG of the NATS client protocol (docs.nats.io, "Client Protocol"). Hand-written for
//! the same reason as the MQTT one: 18,000 of them on shared cores, a handful of verbs.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::peer::bad;

/// Largest message accepted (nats-server's default max_payload is 1 MiB).
const MAX_MESSAGE: usize = 1 << 20;

/// A connected NATS client.
pub(crate) struct NatsConn {
    stream: TcpStream,
    buf: BytesMut,
}

/// What the server sent.
#[derive(Debug, PartialEq)]
enum Op {
    Msg(Bytes),
    Ping,
    Pong,
    Err(String),
    Other,
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Splits one whole operation off `buf`, if it holds one.
fn parse(buf: &mut BytesMut) -> io::Result<Option<Op>> {
    let Some(end) = find_crlf(buf) else {
        if buf.len() > 4096 {
            return Err(bad("NATS control line over 4 KiB"));
        }
        return Ok(None);
    };
    let line = &buf[..end];
    if line.starts_with(b"MSG ") {
        // MSG <subject> <sid> [reply-to] <#bytes>
        let size = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| bad("NATS MSG without a size"))?;
        if size > MAX_MESSAGE {
            return Err(bad("NATS MSG over 1 MiB"));
        }
        let whole = end + 2 + size + 2;
        if buf.len() < whole {
            buf.reserve(whole - buf.len());
            return Ok(None);
        }
        buf.advance(end + 2);
        let payload = buf.split_to(size).freeze();
        buf.advance(2);
        return Ok(Some(Op::Msg(payload)));
    }
    let op = match line {
        b"PING" => Op::Ping,
        b"PONG" => Op::Pong,
        l if l.starts_with(b"-ERR") => Op::Err(String::from_utf8_lossy(l).into_owned()),
        _ => Op::Other,
    };
    buf.advance(end + 2);
    Ok(Some(op))
}

/// A PUB of `payload` to `subject`.
pub(crate) fn publish_op(subject: &str, payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(subject.len() + payload.len() + 24);
    out.extend_from_slice(format!("PUB {subject} {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    out
}

impl NatsConn {
    /// Reads INFO, sends CONNECT (no echo, no +OK) and waits for the PONG of a PING.
    pub(crate) async fn connect(stream: TcpStream, name: &str) -> io::Result<NatsConn> {
        let mut c = NatsConn {
            stream,
            buf: BytesMut::with_capacity(1024),
        };
        let connect = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"echo\":false,\"protocol\":1,\
             \"lang\":\"rust\",\"version\":\"push-bench\",\"name\":\"{name}\"}}\r\n"
        );
        c.stream.write_all(connect.as_bytes()).await?;
        c.barrier().await?;
        Ok(c)
    }

    async fn next_op(&mut self) -> io::Result<Op> {
        loop {
            match parse(&mut self.buf)? {
                Some(Op::Ping) => self.stream.write_all(b"PONG\r\n").await?,
                Some(Op::Err(e)) => return Err(bad(&e)),
                Some(op) => return Ok(op),
                None => {
                    if self.stream.read_buf(&mut self.buf).await? == 0 {
                        return Err(bad("closed by the server"));
                    }
                }
            }
        }
    }

    /// Subscribes to `subject` and waits until the server has taken it (PING/PONG).
    pub(crate) async fn subscribe(&mut self, subject: &str) -> io::Result<()> {
        self.stream
            .write_all(format!("SUB {subject} 1\r\n").as_bytes())
            .await?;
        self.barrier().await
    }

    /// The next MSG's payload (PINGs are answered on the way).
    pub(crate) async fn next_message(&mut self) -> io::Result<Bytes> {
        loop {
            if let Op::Msg(p) = self.next_op().await? {
                return Ok(p);
            }
        }
    }

    /// Sends bytes already encoded (PUB operations).
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// PING and wait for PONG: the server has processed everything sent before.
    pub(crate) async fn barrier(&mut self) -> io::Result<()> {
        self.stream.write_all(b"PING\r\n").await?;
        loop {
            if self.next_op().await? == Op::Pong {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_pings_and_errors_parse() {
        let mut buf = BytesMut::from(
            &b"INFO {\"x\":1}\r\nMSG bench-room 1 5\r\nhello\r\nPING\r\nMSG a 1 r 0\r\n\r\n-ERR 'x'\r\n"[..],
        );
        assert_eq!(parse(&mut buf).unwrap(), Some(Op::Other));
        assert_eq!(
            parse(&mut buf).unwrap(),
            Some(Op::Msg(Bytes::from_static(b"hello")))
        );
        assert_eq!(parse(&mut buf).unwrap(), Some(Op::Ping));
        assert_eq!(parse(&mut buf).unwrap(), Some(Op::Msg(Bytes::new())));
        assert!(matches!(parse(&mut buf).unwrap(), Some(Op::Err(_))));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_message_split_across_reads_waits_for_its_payload() {
        let whole = publish_op("s", &[b'y'; 40]);
        // The server's MSG has the same shape after its control line.
        let msg = [&b"MSG s 1 40\r\n"[..], &whole[whole.len() - 42..]].concat();
        let mut buf = BytesMut::from(&msg[..20]);
        assert_eq!(parse(&mut buf).unwrap(), None);
        buf.extend_from_slice(&msg[20..]);
        assert!(matches!(parse(&mut buf).unwrap(), Some(Op::Msg(p)) if p.len() == 40));
    }
}
