//! A minimal WebSocket client for the `--ws` scenarios: upgrade with the token in the query
//! string (binary mode, or with `--ws-json` the JSON text mode), then receive through the
//! same loop as TCP receivers.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use bytes::{Buf, BytesMut};
use push_client::protocol::ws::frame::{encode_masked, parse_from_server, WsFrame};
use push_client::protocol::ws::json::{parse_stream, stream_name};
use push_client::protocol::ws::SUBPROTOCOL_JSON;
use push_client::protocol::{
    encode_to_bytes, AuthOk, ErrorBody, ErrorCode, Frame, FrameCodec, Join, MessageId, Packet,
    PayloadFormat, Push,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

/// An authenticated WebSocket connection.
pub(crate) struct WsConn {
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
    /// JSON text mode (`push.v1.json`) instead of binary frames.
    json: bool,
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
    pub(crate) async fn connect(addr: SocketAddr, token: &str, json: bool) -> io::Result<WsConn> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let protocol = if json { SUBPROTOCOL_JSON } else { "push.v1" };
        let req = format!(
            "GET /ws?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
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
            json,
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
                Some(WsFrame::Data { payload, .. }) if self.json => {
                    return from_json(&payload).map(Some);
                }
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
        if self.json {
            let text = to_json(p)?;
            return self
                .stream
                .write_all(&encode_masked(0x81, text.as_bytes(), MASK))
                .await;
        }
        let wire = encode_to_bytes(p, &Default::default()).map_err(|e| bad(&e.to_string()))?;
        self.stream
            .write_all(&encode_masked(0x82, &wire, MASK))
            .await
    }
}

/// A server JSON text as the frame it stands for (the fields this harness reads).
fn from_json(text: &[u8]) -> io::Result<Packet> {
    let v: Value = serde_json::from_slice(text).map_err(|e| bad(&e.to_string()))?;
    let seq = v["seq"].as_u64().unwrap_or(0) as u32;
    let frame = match v["op"].as_str().unwrap_or_default() {
        "welcome" => Frame::AuthOk(AuthOk {
            version: v["version"].as_u64().unwrap_or(1) as u16,
            conn_id: v["conn_id"].as_u64().unwrap_or(0),
            user: v["user"].as_str().unwrap_or_default().into(),
            heartbeat_ms: v["heartbeat_ms"].as_u64().unwrap_or(0),
            max_frame_len: 0,
            max_message_len: 0,
            epoch: 0,
        }),
        "ping" => Frame::Ping,
        "ok" => Frame::Ok(v["tail"].as_u64()),
        "push" => Frame::Push(Push {
            id: MessageId::default(),
            stream: v["stream"]
                .as_str()
                .and_then(parse_stream)
                .ok_or_else(|| bad("push without a stream"))?,
            position: v["position"].as_u64().unwrap_or(0),
            timestamp_ms: v["timestamp"].as_u64().unwrap_or(0),
            kind: v["type"].as_str().unwrap_or_default().into(),
            format: PayloadFormat::OPAQUE,
            payload: Bytes::from(v["data"].as_str().unwrap_or_default().to_string()),
        }),
        "error" | "close" => Frame::Error(ErrorBody {
            code: ErrorCode(v["code"].as_u64().unwrap_or(0) as u16),
            reason: v["reason"].as_str().unwrap_or_default().into(),
        }),
        _ => Frame::Pong,
    };
    Ok(Packet::new(seq, frame))
}

/// The JSON text of the frames this harness sends (SPEC.md §12).
fn to_json(p: &Packet) -> io::Result<String> {
    let v = match &p.frame {
        Frame::Pong => json!({"op": "pong", "seq": p.seq}),
        Frame::Join(j) => json!({"op": "join", "seq": p.seq, "room": j.room}),
        Frame::Ack(list) => {
            let last = list.last().ok_or_else(|| bad("empty ack"))?;
            json!({"op": "ack", "seq": p.seq, "stream": stream_name(&last.stream), "position": last.position})
        }
        other => return Err(bad(&format!("no JSON form here for {other:?}"))),
    };
    Ok(v.to_string())
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
