//! A minimal WebSocket client for the `--ws` scenarios: upgrade with the token in the query
//! string (binary mode), then receive through the same loop as TCP receivers.

use std::io;
use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use push_client::protocol::{encode_to_bytes, Frame, FrameCodec, Join, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

/// An authenticated WebSocket connection.
pub struct WsConn {
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Masked client frame (the mask is fixed: the server must unmask whatever it is).
fn masked(op: u8, payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0xa1, 0xb2, 0xc3, 0xd4];
    let mut out = vec![0x80 | op];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

impl WsConn {
    /// Upgrades `GET /ws?token=` and waits for AUTH_OK.
    pub async fn connect(addr: SocketAddr, token: &str) -> io::Result<WsConn> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let req = format!(
            "GET /ws?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: push.v1\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut buf = BytesMut::with_capacity(512);
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if stream.read_buf(&mut buf).await? == 0 || buf.len() > 8192 {
                return Err(bad("no upgrade answer"));
            }
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            return Err(bad(&format!("upgrade refused: {head}")));
        }
        buf.advance(end);
        let mut c = WsConn {
            stream,
            buf,
            codec: FrameCodec::new(Default::default(), Default::default()),
        };
        match c.next_packet().await? {
            Some(p) if matches!(p.frame, Frame::AuthOk(_)) => Ok(c),
            Some(p) => Err(bad(&format!("handshake answered with {:?}", p.frame))),
            None => Err(bad("closed during the handshake")),
        }
    }

    /// The next protocol packet; `None` at a close or end of stream.
    async fn next_packet(&mut self) -> io::Result<Option<Packet>> {
        loop {
            if self.buf.len() >= 2 {
                let (len, at) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(b) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let op = self.buf[0] & 0x0f;
                    self.buf.advance(at);
                    let mut payload = self.buf.split_to(len);
                    match op {
                        0x8 => return Ok(None),
                        0x2 => {
                            let p = self
                                .codec
                                .decode(&mut payload)
                                .map_err(|e| bad(&e.to_string()))?;
                            if p.is_some() {
                                return Ok(p);
                            }
                        }
                        _ => {}
                    }
                    continue;
                }
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    async fn send_packet(&mut self, p: &Packet) -> io::Result<()> {
        let wire = encode_to_bytes(p, &Default::default()).map_err(|e| bad(&e.to_string()))?;
        self.stream.write_all(&masked(0x2, &wire)).await
    }
}

impl crate::worker::PushSource for WsConn {
    async fn join(&mut self, room: String) -> Result<(), String> {
        let join = Frame::Join(Join {
            room,
            resume_after: None,
        });
        self.send_packet(&Packet::new(7, join))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            match self.next_frame().await? {
                Frame::Ok(_) => return Ok(()),
                Frame::Error(e) => return Err(e.reason),
                _ => continue,
            }
        }
    }

    async fn next_frame(&mut self) -> Result<Frame, String> {
        loop {
            match self.next_packet().await {
                Ok(Some(p)) if p.frame == Frame::Ping => {
                    let pong = Packet::new(p.seq, Frame::Pong);
                    self.send_packet(&pong).await.map_err(|e| e.to_string())?;
                }
                Ok(Some(p)) => return Ok(p.frame),
                Ok(None) => return Err("closed by the server".into()),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    async fn send_frame(&mut self, frame: Frame) -> Result<(), String> {
        self.send_packet(&Packet::new(0, frame))
            .await
            .map_err(|e| e.to_string())
    }
}
