//! SPEC.md §12's WebSocket and JSON vectors: the server produces and parses exactly them.

use bytes::BytesMut;
use push_client::protocol::ws::frame::{encode_close, parse, WsFrame};
use push_client::protocol::ws::json::{parse_client, server_json};
use push_client::protocol::ws::Transport;
use push_protocol::{
    encode_to_bytes, Frame, Hello, Packet, Stream, StreamPos, MAX_VERSION, MIN_VERSION,
};

/// The block after `<!-- {kind}: {name} -->`.
fn block(kind: &str, name: &str) -> String {
    let spec = include_str!("../../SPEC.md");
    let marker = format!("<!-- {kind}: {name} -->");
    let at = spec
        .find(&marker)
        .unwrap_or_else(|| panic!("SPEC.md has no {marker}"));
    let rest = &spec[at + marker.len()..];
    let open = rest.find("```").unwrap();
    let body = &rest[open..];
    let start = body.find('\n').unwrap() + 1;
    let end = body[start..].find("```").unwrap();
    body[start..start + end].trim().to_string()
}

fn hex(name: &str) -> Vec<u8> {
    block("ws-vector", name)
        .split_whitespace()
        .map(|t| u8::from_str_radix(t, 16).unwrap())
        .collect()
}

#[test]
fn client_binary_message_unmasks_to_a_pong() {
    let mut raw = BytesMut::from(&hex("client_pong")[..]);
    let f = parse(&mut raw, 1 << 20).unwrap().unwrap();
    let pong = encode_to_bytes(&Packet::new(7, Frame::Pong), &Default::default()).unwrap();
    assert_eq!(
        f,
        WsFrame::Data {
            opcode: 2,
            fin: true,
            payload: pong
        }
    );
    assert!(raw.is_empty());
}

#[test]
fn server_binary_message_and_close_are_byte_exact() {
    let ping = Transport::WsBinary
        .encode(&Packet::new(9, Frame::Ping), &Default::default())
        .unwrap();
    assert_eq!(ping.to_vec(), hex("server_ping"));
    let close = encode_close(4304, push_protocol::ErrorCode::SLOW_CONSUMER.description());
    assert_eq!(close.to_vec(), hex("server_close_slow"));
}

#[test]
fn json_client_vectors_map_to_their_frames() {
    let hello = parse_client(block("json-vector", "client_hello").as_bytes()).unwrap();
    assert_eq!(
        hello.frame,
        Frame::Hello(Hello {
            min_version: MIN_VERSION,
            max_version: MAX_VERSION,
            token: "tok".into(),
            device: "phone".into(),
            resume: vec![
                StreamPos {
                    stream: Stream::Room("lobby".into()),
                    position: 300
                },
                StreamPos {
                    stream: Stream::User,
                    position: 41
                },
            ],
            options: Default::default(),
        })
    );
    let ack = parse_client(block("json-vector", "client_ack").as_bytes()).unwrap();
    assert_eq!(ack.seq, 3);
    assert_eq!(
        ack.frame,
        Frame::Ack(vec![StreamPos {
            stream: Stream::User,
            position: 42
        }])
    );
}

/// The binary frame of §11 vector `name`.
fn binary_vector(name: &str) -> Packet {
    use tokio_util::codec::Decoder;
    let bytes: Vec<u8> = block("vector", name)
        .split_whitespace()
        .map(|t| u8::from_str_radix(t, 16).unwrap())
        .collect();
    let mut buf = BytesMut::from(&bytes[..]);
    push_protocol::FrameCodec::default()
        .decode(&mut buf)
        .unwrap()
        .expect("one whole frame")
}

/// The transient JSON vectors are the binary `push_transient` and `publish_transient`
/// vectors in JSON mode (version 2).
#[test]
fn json_transient_vectors() {
    let push = binary_vector("push_transient");
    let want: serde_json::Value =
        serde_json::from_str(&block("json-vector", "server_push_transient")).unwrap();
    assert_eq!(server_json(&Packet::new(0, push.frame)), want);
    let publish = binary_vector("publish_transient");
    let parsed = parse_client(block("json-vector", "client_publish_transient").as_bytes()).unwrap();
    assert_eq!((parsed.seq, parsed.frame), (publish.seq, publish.frame));
}

/// The other version-2 JSON vectors are their binary twins in JSON mode.
#[test]
fn json_version_2_vectors() {
    for (binary, json) in [
        ("auth_ok_v2", "server_welcome_v2"),
        ("recall", "server_recall"),
    ] {
        let packet = binary_vector(binary);
        let want: serde_json::Value = serde_json::from_str(&block("json-vector", json)).unwrap();
        let got = server_json(&Packet::new(packet.seq, packet.frame));
        assert_eq!(got, want, "{json}");
    }
    let withdraw = binary_vector("withdraw");
    let parsed = parse_client(block("json-vector", "client_withdraw").as_bytes()).unwrap();
    assert_eq!((parsed.seq, parsed.frame), (withdraw.seq, withdraw.frame));
}

/// The JSON push vector is the binary `push_notice` vector (§11) in JSON mode: the same
/// message, so the two modes can be checked against each other.
#[test]
fn json_server_push_vector() {
    let packet = binary_vector("push_notice");
    let Frame::Push(push) = packet.frame else {
        panic!("push_notice is not a PUSH");
    };
    let want: serde_json::Value =
        serde_json::from_str(&block("json-vector", "server_push")).unwrap();
    assert_eq!(server_json(&Packet::new(0, Frame::Push(push))), want);
}
