//! A minimal WebSocket client for the `--ws` scenarios: upgrade with the token in the query
//! string (binary mode), then receive through the same loop as TCP receivers.

use std::io;
use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use push_client::protocol::ws::frame::{encode_masked, parse_from_server, WsFrame};
use push_client::protocol::{encode_to_bytes, Frame, FrameCodec, Join, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

/// An authenticated WebSocket connection.
pub(crate) struct WsConn {
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Largest message accepted from the server.
const MAX_MESSAGE: usize = 4 << 20;

/// The mask of every frame this client sends (the server must unmask whatever it is).
const MASK: [u8; 4] = [0xa1, 0xb2, 0xc3, 0xd4];

impl WsConn {
    /// Upgrades `GET /ws?token=` and waits for AUTH_OK.
    pub(crate) async fn connect(addr: SocketAddr, token: &str) -> io::Result<WsConn> {
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
            let frame =
                parse_from_server(&mut self.buf, MAX_MESSAGE).map_err(|e| bad(&e.reason))?;
            match frame {
                Some(WsFrame::Close(..)) => return Ok(None),
                Some(WsFrame::Data { payload, .. }) => {
                    let mut payload = BytesMut::from(&payload[..]);
                    let p = self
                        .codec
                        .decode(&mut payload)
                        .map_err(|e| bad(&e.to_string()))?;
                    if p.is_some() {
                        return Ok(p);
                    }
                }
                Some(_) => {}
                None => {
                    if self.stream.read_buf(&mut self.buf).await? == 0 {
                        return Ok(None);
                    }
                }
            }
        }
    }

    async fn send_packet(&mut self, p: &Packet) -> io::Result<()> {
        let wire = encode_to_bytes(p, &Default::default()).map_err(|e| bad(&e.to_string()))?;
        self.stream
            .write_all(&encode_masked(0x82, &wire, MASK))
            .await
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
