//! One connection to the server: handshake, then send and receive frames. No reconnects; the
//! higher-level client builds those on top.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use push_protocol::{
    encode_packet, AuthOk, EncodeOptions, Frame, FrameCodec, Hello, HelloOptions, Limits, Packet,
    StreamPos, MAX_VERSION, MIN_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use crate::error::ClientError;
use crate::tls::{Stream, TlsOptions};

/// What the handshake sends.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Access token (JWT).
    pub token: String,
    /// Device label (used when the token names none).
    pub device: String,
    /// Last processed position per stream.
    pub resume: Vec<StreamPos>,
    /// Time allowed for connect + handshake.
    pub timeout: Option<Duration>,
    /// TLS with certificate verification; `None` = plain TCP.
    pub tls: Option<TlsOptions>,
    /// Local address to connect from (a multi-homed host, or a load generator spreading its
    /// ephemeral ports over several addresses); `None` = the system's choice.
    pub local_ip: Option<std::net::IpAddr>,
    /// Send every frame with a crc32 trailer (SPEC.md §8.1), HELLO included: required by a
    /// server with `require_checksum`.
    pub checksum: bool,
    /// What to ask of the server's frames (protocol version 2, SPEC.md §5.1.2): the largest
    /// frame this client accepts, no zstd, checksums on every server frame, no echo of its own
    /// room PUBLISHes. The default asks nothing and keeps HELLO as in version 1.
    pub hello_options: HelloOptions,
}

/// An authenticated connection.
pub struct Connection {
    stream: Stream,
    rbuf: BytesMut,
    codec: FrameCodec,
    next_seq: u32,
    /// What the server said in AUTH_OK.
    pub auth: AuthOk,
}

impl Connection {
    /// Connects and authenticates.
    pub async fn connect(
        addr: SocketAddr,
        opts: &ConnectOptions,
    ) -> Result<Connection, ClientError> {
        let timeout = opts.timeout.unwrap_or(Duration::from_secs(10));
        tokio::time::timeout(timeout, Self::connect_inner(addr, opts))
            .await
            .map_err(|_| ClientError::Timeout("connect and handshake"))?
    }

    async fn connect_inner(
        addr: SocketAddr,
        opts: &ConnectOptions,
    ) -> Result<Connection, ClientError> {
        let stream = match opts.local_ip {
            None => TcpStream::connect(addr).await?,
            Some(ip) => {
                let socket = match ip {
                    std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                    std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(addr).await?
            }
        };
        Self::handshake(stream, opts).await
    }

    /// Authenticates over an already-connected socket, first starting TLS if `opts` asks.
    async fn start(stream: TcpStream, opts: &ConnectOptions) -> Result<Connection, ClientError> {
        stream.set_nodelay(true)?;
        let stream = match &opts.tls {
            Some(tls) => tls.connect(stream).await?,
            None => Stream::Plain(stream),
        };
        Self::hello(Connection::from_any(stream), opts).await
    }

    /// Authenticates over an already-connected socket (e.g. one with custom socket options).
    pub async fn handshake(
        stream: TcpStream,
        opts: &ConnectOptions,
    ) -> Result<Connection, ClientError> {
        Self::start(stream, opts).await
    }

    async fn hello(mut c: Connection, opts: &ConnectOptions) -> Result<Connection, ClientError> {
        c.codec.options.checksum = opts.checksum;
        let seq = c
            .send(Frame::Hello(Hello {
                min_version: MIN_VERSION,
                max_version: MAX_VERSION,
                token: opts.token.clone(),
                device: opts.device.clone(),
                resume: opts.resume.clone(),
                options: opts.hello_options,
            }))
            .await?;
        let ask = opts.hello_options;
        if ask.max_frame_len != 0 {
            // Hold the server to what was asked: a larger frame is a protocol error here.
            c.codec.limits.max_frame_len = ask.max_frame_len;
        }
        let reply = c.recv().await?;
        match reply.frame {
            Frame::AuthOk(ok) if reply.seq == seq => {
                // AUTH_OK is the first frame the options apply to (AUTH_ERROR precedes them).
                c.codec.limits.require_checksum = ask.checksum && ok.version >= 2;
                c.codec.options.max_frame_len = ok.max_frame_len.min(u32::MAX as u64) as u32;
                c.auth = ok;
                Ok(c)
            }
            Frame::AuthError(e) => Err(ClientError::Rejected {
                code: e.code,
                reason: e.reason,
            }),
            _ => Err(ClientError::Unexpected("expected AUTH_OK or AUTH_ERROR")),
        }
    }

    /// Wraps an already-connected socket without a handshake (for tests of raw protocol).
    pub fn from_stream(stream: TcpStream) -> Connection {
        Connection::from_any(Stream::Plain(stream))
    }

    fn from_any(stream: Stream) -> Connection {
        Connection {
            stream,
            rbuf: BytesMut::new(),
            codec: FrameCodec::new(Limits::default(), EncodeOptions::default()),
            next_seq: 1,
            auth: AuthOk {
                version: 0,
                conn_id: 0,
                user: String::new(),
                heartbeat_ms: 0,
                max_frame_len: 0,
                max_message_len: 0,
                epoch: 0,
            },
        }
    }

    /// Sends a frame with the next sequence number; returns that number.
    pub async fn send(&mut self, frame: Frame) -> Result<u32, ClientError> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.checked_add(1).unwrap_or(1);
        self.send_packet(&Packet::new(seq, frame)).await?;
        Ok(seq)
    }

    /// Sends a packet as given.
    pub async fn send_packet(&mut self, packet: &Packet) -> Result<(), ClientError> {
        let mut buf = BytesMut::new();
        encode_packet(packet, &self.codec.options, &mut buf)?;
        self.stream.write_all(&buf).await?;
        Ok(())
    }

    /// Writes raw bytes (for protocol tests).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Receives the next packet, whatever it is.
    pub async fn recv(&mut self) -> Result<Packet, ClientError> {
        loop {
            if let Some(p) = self.codec.decode(&mut self.rbuf)? {
                return Ok(p);
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(ClientError::ConnectionLost);
            }
        }
    }

    /// Receives the next frame that is not a PING, answering PINGs on the way; a CLOSE becomes
    /// `ClientError::Closed`.
    pub async fn next(&mut self) -> Result<Packet, ClientError> {
        loop {
            let p = self.recv().await?;
            match p.frame {
                Frame::Ping => self.send_packet(&Packet::new(p.seq, Frame::Pong)).await?,
                Frame::Close(c) => {
                    return Err(ClientError::Closed {
                        code: c.code,
                        reason: c.reason,
                        reconnect_ms: c.reconnect_ms,
                    })
                }
                _ => return Ok(p),
            }
        }
    }

    /// Like `next`, bounded in time.
    pub async fn next_timeout(&mut self, t: Duration) -> Result<Packet, ClientError> {
        tokio::time::timeout(t, self.next())
            .await
            .map_err(|_| ClientError::Timeout("waiting for a frame"))?
    }

    /// Sends a request and waits for the reply with the same sequence number, skipping and
    /// returning any other frames that arrive first.
    pub async fn request(&mut self, frame: Frame) -> Result<(Packet, Vec<Packet>), ClientError> {
        let seq = self.send(frame).await?;
        let mut others = Vec::new();
        loop {
            let p = self.next().await?;
            if p.seq == seq
                && matches!(
                    p.frame,
                    Frame::Ok(_) | Frame::PublishAck(_) | Frame::Error(_)
                )
            {
                if let Frame::Error(e) = p.frame {
                    return Err(ClientError::Request {
                        code: e.code,
                        reason: e.reason,
                    });
                }
                return Ok((p, others));
            }
            others.push(p);
        }
    }

    /// Version 2: sends PING and waits for its PONG. Returns the round trip and the frames
    /// that arrived first: the PONG follows every frame the server had queued for this
    /// connection when it read the PING, so they are all in hand.
    pub async fn ping(&mut self) -> Result<(Duration, Vec<Packet>), ClientError> {
        if self.auth.version < 2 {
            return Err(ClientError::Unsupported(
                "PING from a client needs protocol version 2",
            ));
        }
        let t0 = std::time::Instant::now();
        let seq = self.send(Frame::Ping).await?;
        let mut others = Vec::new();
        loop {
            let p = self.next().await?;
            if p.seq == seq && p.frame == Frame::Pong {
                return Ok((t0.elapsed(), others));
            }
            others.push(p);
        }
    }

    /// Sends CLOSE and shuts the socket.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.send(Frame::Close(push_protocol::Close {
            code: push_protocol::ErrorCode(0),
            reconnect_ms: None,
            reason: "client closing".into(),
        }))
        .await?;
        self.stream.shutdown().await?;
        Ok(())
    }
}
