//! A minimal WebSocket client for the tests: upgrade, masked frames out, frames in.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use push_client::protocol::ws::frame::{encode_masked, opcode, parse_from_server, WsFrame};
use push_protocol::{encode_to_bytes, FrameCodec, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use super::WAIT;

/// A connected WebSocket.
pub(crate) struct WsClient {
    pub stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
    /// The subprotocol the server chose.
    pub subprotocol: Option<String>,
}

/// The server's refusal of an upgrade: status, head and body.
#[derive(Debug)]
pub(crate) struct Refused {
    pub status: u16,
    pub head: String,
    pub body: String,
}

const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

impl WsClient {
    /// Upgrades `GET path` with the given subprotocols and extra headers.
    pub(crate) async fn connect(
        addr: SocketAddr,
        path: &str,
        protocols: &[&str],
        headers: &[(&str, &str)],
    ) -> Result<WsClient, Refused> {
        let mut s = TcpStream::connect(addr).await.expect("tcp connect");
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        if !protocols.is_empty() {
            req.push_str(&format!(
                "Sec-WebSocket-Protocol: {}\r\n",
                protocols.join(", ")
            ));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = BytesMut::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tokio::time::timeout(WAIT, s.read_buf(&mut buf))
                .await
                .expect("upgrade answer in time")
                .unwrap();
            assert!(n > 0, "server closed during the upgrade");
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.advance(head_end);
        let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        if status != 101 {
            // Read the body by its length: the connection may be kept alive.
            let length = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())
                    .flatten()
            });
            match length {
                Some(n) => {
                    while buf.len() < n {
                        match tokio::time::timeout(WAIT, s.read_buf(&mut buf)).await {
                            Ok(Ok(read)) if read > 0 => {}
                            _ => break,
                        }
                    }
                }
                None => {
                    let mut rest = Vec::new();
                    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut rest)).await;
                    buf.extend_from_slice(&rest);
                }
            }
            let body = String::from_utf8_lossy(&buf).to_string();
            return Err(Refused { status, head, body });
        }
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "accept key missing: {head}"
        );
        let subprotocol = head
            .lines()
            .find_map(|l| l.strip_prefix("sec-websocket-protocol: "))
            .map(str::to_string);
        Ok(WsClient {
            stream: s,
            buf,
            codec: FrameCodec::new(Default::default(), Default::default()),
            subprotocol,
        })
    }

    /// Sends raw bytes.
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Sends one final masked frame.
    pub(crate) async fn send(&mut self, op: u8, payload: &[u8]) {
        self.send_raw(&encode_masked(0x80 | op, payload, MASK))
            .await;
    }

    /// Sends a protocol packet as one binary message.
    pub(crate) async fn send_packet(&mut self, p: &Packet) {
        let wire = encode_to_bytes(p, &Default::default()).unwrap();
        self.send(opcode::BINARY, &wire).await;
    }

    /// Sends a JSON text message.
    pub(crate) async fn send_json(&mut self, v: serde_json::Value) {
        self.send(opcode::TEXT, v.to_string().as_bytes()).await;
    }

    /// The next frame from the server: (opcode, payload); `None` at end of stream.
    pub(crate) async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            let frame = parse_from_server(&mut self.buf, 1 << 30).expect("a valid server frame");
            match frame {
                Some(WsFrame::Data {
                    opcode,
                    fin,
                    payload,
                }) => {
                    assert!(fin, "server sends unfragmented messages");
                    return Some((opcode, payload.to_vec()));
                }
                Some(WsFrame::Ping(p)) => return Some((opcode::PING, p.to_vec())),
                Some(WsFrame::Pong(p)) => return Some((opcode::PONG, p.to_vec())),
                Some(WsFrame::Close(code, reason)) => {
                    let mut p = code.unwrap_or(0).to_be_bytes().to_vec();
                    p.extend_from_slice(reason.as_bytes());
                    return Some((opcode::CLOSE, p));
                }
                None => {}
            }
            let n = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("server frame in time")
                .ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    /// The next data message, skipping pings.
    pub(crate) async fn recv_data(&mut self) -> (u8, Vec<u8>) {
        loop {
            let (op, p) = self.recv().await.expect("a message before end of stream");
            if op != opcode::PING && op != opcode::PONG {
                return (op, p);
            }
        }
    }

    /// The next JSON message, skipping pings (WebSocket and JSON ones).
    pub(crate) async fn recv_json(&mut self) -> serde_json::Value {
        loop {
            let (op, p) = self.recv_data().await;
            assert_eq!(op, opcode::TEXT, "expected text, got opcode {op}: {p:?}");
            let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
            if v["op"] != "ping" {
                return v;
            }
        }
    }

    /// The next protocol packet from a binary message, skipping protocol PINGs.
    pub(crate) async fn recv_packet(&mut self) -> Packet {
        loop {
            let (op, p) = self.recv_data().await;
            assert_eq!(
                op,
                opcode::BINARY,
                "expected binary, got opcode {op}: {p:?}"
            );
            let mut b = BytesMut::from(&p[..]);
            let packet = self.codec.decode(&mut b).unwrap().expect("a whole frame");
            assert!(b.is_empty(), "one frame per message");
            if packet.frame != push_protocol::Frame::Ping {
                return packet;
            }
        }
    }

    /// Reads until the server's close frame: (code, reason); data frames before it are
    /// returned too.
    pub(crate) async fn recv_close(&mut self) -> (u16, String, Vec<(u8, Vec<u8>)>) {
        let mut before = Vec::new();
        loop {
            let (op, p) = self
                .recv()
                .await
                .expect("a close frame before end of stream");
            if op == opcode::CLOSE {
                let code = u16::from_be_bytes([p[0], p[1]]);
                return (code, String::from_utf8_lossy(&p[2..]).to_string(), before);
            }
            before.push((op, p));
        }
    }
}
