//! Version-2 HELLO options (SPEC.md §5.1.2). A client's largest frame, "no zstd" and
//! checksums on server frames are honoured for the client that asks, over TCP and WebSocket
//! binary (options in the query string), while a client that asks nothing gets the frames
//! encoded once for everyone; "no echo" keeps a publisher's own room messages from it on one
//! node and across nodes, over TCP and JSON mode alike.

mod common;

use bytes::BytesMut;
use common::cluster::node_with;
use common::ws::WsClient;
use common::*;
use push_client::protocol::header::flags;
use push_client::protocol::{
    encode_to_bytes, EncodeOptions, Frame, FrameCodec, Header, Hello, HelloOptions, Limits, Packet,
    PayloadFormat, Publish, Push, HEADER_LEN,
};
use push_client::{ConnectOptions, Connection};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

/// A client that keeps the header of every wire frame it reads.
struct Raw {
    s: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
    headers: Vec<Header>,
}

impl Raw {
    async fn connect(addr: std::net::SocketAddr, user: &str, options: HelloOptions) -> Raw {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let hello = Frame::Hello(Hello {
            min_version: 1,
            max_version: 2,
            token: token(user),
            device: String::new(),
            resume: vec![],
            options,
        });
        let bytes = encode_to_bytes(&Packet::new(1, hello), &EncodeOptions::default()).unwrap();
        s.write_all(&bytes).await.unwrap();
        // Frames must honour what was asked: the codec refuses anything larger, or without a
        // trailer when checksums were asked for.
        let limits = Limits {
            max_frame_len: match options.max_frame_len {
                0 => Limits::default().max_frame_len,
                n => n,
            },
            require_checksum: options.checksum,
            ..Limits::default()
        };
        let mut raw = Raw {
            s,
            buf: BytesMut::new(),
            codec: FrameCodec::new(limits, EncodeOptions::default()),
            headers: Vec::new(),
        };
        let p = raw.next().await;
        assert!(
            matches!(p.frame, Frame::AuthOk(ref a) if a.version == 2),
            "{p:?}"
        );
        raw
    }

    async fn next(&mut self) -> Packet {
        tokio::time::timeout(WAIT, async {
            loop {
                let mut head = [0u8; HEADER_LEN];
                self.s.read_exact(&mut head).await.unwrap();
                let h = Header::parse(&head).unwrap();
                let mut rest = vec![0u8; h.length as usize];
                self.s.read_exact(&mut rest).await.unwrap();
                self.headers.push(h);
                self.buf.extend_from_slice(&head);
                self.buf.extend_from_slice(&rest);
                if let Some(p) = self.codec.decode(&mut self.buf).unwrap() {
                    return p;
                }
            }
        })
        .await
        .expect("a frame in time")
    }
}

fn large_payload() -> String {
    // Compressible, and far above one 512-byte frame.
    "all work and no play makes a dull frame. ".repeat(100)
}

async fn push_large(server: &TestServer, user: &str) -> String {
    let text = large_payload();
    let body = json!({"to": {"users": [user]}, "kind": "big", "payload": text});
    assert_eq!(push(server, &body.to_string()).await.0, 200);
    text
}

fn expect_text(p: Packet) -> String {
    String::from_utf8(expect_push(p).payload.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_follow_the_options_of_the_client_that_asked() {
    let server = start(config()).await;
    let small = HelloOptions {
        max_frame_len: 512,
        no_zstd: true,
        checksum: true,
        no_echo: false,
        epoch: 0,
    };
    let mut asking = Raw::connect(server.tcp_addr, "ria", small).await;
    let mut plain = Raw::connect(server.tcp_addr, "ria", HelloOptions::default()).await;
    let auth = asking.headers[0];
    assert_ne!(auth.flags & flags::CHECKSUM, 0, "AUTH_OK carries a trailer");
    let text = push_large(&server, "ria").await;

    asking.headers.clear();
    assert_eq!(expect_text(asking.next().await), text);
    assert!(asking.headers.len() > 1, "fragmented to 512 bytes");
    for h in &asking.headers {
        assert!(h.length <= 512, "{h:?}");
        assert_eq!(h.flags & flags::COMPRESSED, 0, "{h:?}");
        assert_ne!(h.flags & flags::CHECKSUM, 0, "{h:?}");
    }
    plain.headers.clear();
    assert_eq!(expect_text(plain.next().await), text);
    assert_eq!(plain.headers.len(), 1);
    assert_ne!(
        plain.headers[0].flags & flags::COMPRESSED,
        0,
        "a client that asked nothing gets the shared, compressed frame"
    );
    assert_eq!(plain.headers[0].flags & flags::CHECKSUM, 0);

    // The SDK asks through ConnectOptions and holds the server to it.
    let mut sdk = Connection::connect(
        server.tcp_addr,
        &ConnectOptions {
            token: token("sam"),
            hello_options: small,
            ..ConnectOptions::default()
        },
    )
    .await
    .unwrap();
    let text = push_large(&server, "sam").await;
    assert_eq!(expect_text(sdk.next_timeout(WAIT).await.unwrap()), text);

    // WebSocket binary mode takes the options from the query string.
    let path = format!(
        "/ws?token={}&max_frame_len=512&no_zstd=true&checksum=true",
        token("wes")
    );
    let mut ws = WsClient::connect(server.http_addr, &path, &[], &[])
        .await
        .unwrap_or_else(|_| panic!("upgrade"));
    let auth = ws.recv_packet().await;
    assert!(matches!(auth.frame, Frame::AuthOk(_)), "{auth:?}");
    let text = push_large(&server, "wes").await;
    let (_, wire) = ws.recv_data().await;
    let mut codec = FrameCodec::new(
        Limits {
            max_frame_len: 512,
            require_checksum: true,
            ..Limits::default()
        },
        EncodeOptions::default(),
    );
    let mut buf = BytesMut::from(&wire[..]);
    let mut frames = 0;
    let mut at = 0;
    while at < wire.len() {
        let h = Header::parse(&wire[at..]).unwrap();
        assert_eq!(h.flags & flags::COMPRESSED, 0, "{h:?}");
        at += HEADER_LEN + h.length as usize;
        frames += 1;
    }
    assert!(frames > 1);
    assert_eq!(expect_text(codec.decode(&mut buf).unwrap().unwrap()), text);

    // A frame limit too small to fragment into is refused before the upgrade.
    let path = format!("/ws?token={}&max_frame_len=100", token("wes"));
    match WsClient::connect(server.http_addr, &path, &[], &[]).await {
        Err(r) => assert!(r.status == 400 && r.body.contains("max_frame_len"), "{r:?}"),
        Ok(_) => panic!("upgraded with max_frame_len=100"),
    }
}

/// The kinds of the room messages `c` receives until one of kind `last`.
async fn kinds_until(c: &mut Connection, last: &str) -> Vec<String> {
    let mut kinds = Vec::new();
    loop {
        let p = c.next_timeout(WAIT).await.expect("a frame in time");
        if let Frame::Push(Push { kind, .. }) = p.frame {
            kinds.push(kind.clone());
            if kind == last {
                return kinds;
            }
        }
    }
}

/// Publishes and returns the kinds of the room messages that arrived before the ack.
async fn publish(c: &mut Connection, room: &str, kind: &str) -> Vec<String> {
    let (ack, before) = c
        .request(Frame::Publish(Publish {
            room: room.into(),
            key: String::new(),
            kind: kind.into(),
            format: PayloadFormat::OPAQUE,
            payload: bytes::Bytes::from_static(b"x"),
            transient: false,
        }))
        .await
        .unwrap();
    assert!(matches!(ack.frame, Frame::PublishAck(_)), "{ack:?}");
    before
        .into_iter()
        .filter_map(|p| match p.frame {
            Frame::Push(m) => Some(m.kind),
            _ => None,
        })
        .collect()
}

/// P (TCP, no echo) on `a`; Q (TCP, default) and J (JSON mode, no echo) on `b`: each
/// publisher misses only its own messages.
async fn no_echo(a: &TestServer, b: &TestServer) {
    let quiet = |user: &str| ConnectOptions {
        token: token(user),
        hello_options: HelloOptions {
            no_echo: true,
            ..HelloOptions::default()
        },
        ..ConnectOptions::default()
    };
    let mut p = Connection::connect(a.tcp_addr, &quiet("pia"))
        .await
        .unwrap();
    let mut q = connect(b.tcp_addr, "quinn").await;
    let mut j = WsClient::connect(b.http_addr, "/ws", &["push.v1.json"], &[])
        .await
        .unwrap_or_else(|_| panic!("upgrade"));
    j.send_json(json!({"op": "hello", "token": token("jo"), "no_echo": true}))
        .await;
    assert_eq!(j.recv_json().await["op"], "welcome");
    join(&mut p, "echo").await;
    join(&mut q, "echo").await;
    j.send_json(json!({"op": "join", "seq": 2, "room": "echo"}))
        .await;
    assert_eq!(j.recv_json().await["op"], "ok");

    let mut p_kinds = publish(&mut p, "echo", "from-p").await;
    let mut q_kinds = publish(&mut q, "echo", "from-q").await;
    j.send_json(json!({"op": "publish", "seq": 3, "room": "echo", "type": "from-j", "data": "x"}))
        .await;
    let body = r#"{"to":{"room":"echo"},"kind":"from-api","payload":"x"}"#;
    let mut acked = false;
    let mut j_kinds = Vec::new();
    while !acked {
        let v = j.recv_json().await;
        match v["op"].as_str() {
            Some("publish_ack") => acked = true,
            Some("push") => j_kinds.push(v["type"].as_str().unwrap().to_string()),
            _ => panic!("{v}"),
        }
    }
    assert_eq!(push(a, body).await.0, 200);
    loop {
        let v = j.recv_json().await;
        if v["op"] == "push" {
            j_kinds.push(v["type"].as_str().unwrap().to_string());
            if v["type"] == "from-api" {
                break;
            }
        }
    }
    assert_eq!(j_kinds, ["from-p", "from-q", "from-api"]);
    p_kinds.extend(kinds_until(&mut p, "from-api").await);
    assert_eq!(p_kinds, ["from-q", "from-j", "from-api"]);
    q_kinds.extend(kinds_until(&mut q, "from-api").await);
    assert_eq!(
        q_kinds,
        ["from-p", "from-q", "from-j", "from-api"],
        "a client that did not ask gets its own messages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_echo_on_one_node() {
    let server = start(publishing()).await;
    no_echo(&server, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_echo_in_cluster_mode() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let a = node_with(&nats, "e1", publishing()).await;
    let b = node_with(&nats, "e1", publishing()).await;
    no_echo(&a, &b).await;
}
