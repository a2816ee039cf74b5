//! Corners of the wire contract where clients written from SPEC.md alone met silence (issue
//! 16), checked on one node and in cluster mode alike: HELLO's room resume entries join and
//! replay as JOIN with resume does, answered with HELLO's Sequence (§5.1); a position beyond
//! a stream's last one (a store restored from an older copy, or recreated) gets a GAP saying
//! where the stream goes on (§5.11); PUBLISH_ACK comes before the publisher's own PUSH
//! (§5.8); only the user's stream ACKs are checked against its tail (§5.5); a server can
//! require checksums (§8.1).

mod common;

use common::cluster::node_with;
use common::*;
use push_client::protocol::{
    encode_to_bytes, EncodeOptions, ErrorCode, Frame, Gap, Join, Packet, PayloadFormat, Publish,
    Stream, StreamPos,
};
use push_client::{ClientError, ConnectOptions, Connection};

fn at(stream: Stream, position: u64) -> StreamPos {
    StreamPos { stream, position }
}

/// Publishes through `via` and checks what a client resuming on `on` receives.
async fn resume_list(on: &TestServer, via: &TestServer) {
    for i in 1..=3 {
        let body = format!(r#"{{"to":{{"room":"lobby"}},"kind":"k","payload":"l{i}"}}"#);
        assert_eq!(push(via, &body).await.0, 200);
    }
    for i in 1..=2 {
        let body = format!(r#"{{"to":{{"users":["rita"]}},"kind":"k","payload":"u{i}"}}"#);
        assert_eq!(push(via, &body).await.0, 200);
    }
    let body = r#"{"to":{"broadcast":true},"kind":"k","payload":"b1"}"#;
    assert_eq!(push(via, body).await.0, 200);

    let mut c = Connection::connect(
        on.tcp_addr,
        &ConnectOptions {
            token: token("rita"),
            resume: vec![
                at(Stream::Room("lobby".into()), 1),
                at(Stream::Room("no room!".into()), 0),
                // Ahead of both streams: the client remembers a previous life of the store.
                at(Stream::User, 9),
                at(Stream::Broadcast, 50),
            ],
            ..ConnectOptions::default()
        },
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 8 {
        let p = c.next_timeout(WAIT).await.expect("frames in time");
        let line = match p.frame {
            Frame::Push(m) => format!(
                "push {:?} {} {}",
                m.stream,
                m.position,
                String::from_utf8_lossy(&m.payload)
            ),
            Frame::Gap(Gap {
                stream,
                requested_after,
                first_available,
            }) => format!("gap {stream:?} {requested_after} {first_available}"),
            Frame::Ok(pos) => format!("ok {pos:?} seq {}", p.seq),
            Frame::Error(e) => format!("error {} seq {}", e.code.name(), p.seq),
            other => panic!("unexpected {other:?}"),
        };
        got.push(line);
    }
    // Per stream, in order: the user's GAP says the replay starts at 1 and both messages
    // follow; broadcast goes on after its last position 1; the room replays after 1, then
    // answers with its tail; the invalid room is refused. HELLO was Sequence 1.
    let of = |prefix: &str| -> Vec<String> {
        got.iter().filter(|l| l.contains(prefix)).cloned().collect()
    };
    assert_eq!(
        of("User"),
        ["gap User 9 1", "push User 1 u1", "push User 2 u2"],
        "{got:?}"
    );
    assert_eq!(of("Broadcast"), ["gap Broadcast 50 2"], "{got:?}");
    let room: Vec<String> = got
        .iter()
        .filter(|l| l.contains("lobby") || l.starts_with("ok"))
        .cloned()
        .collect();
    assert_eq!(
        room,
        [
            "push Room(\"lobby\") 2 l2",
            "push Room(\"lobby\") 3 l3",
            "ok Some(3) seq 1"
        ],
        "{got:?}"
    );
    assert_eq!(of("error"), ["error BAD_REQUEST seq 1"], "{got:?}");

    // The room was joined: live messages follow.
    let body = r#"{"to":{"room":"lobby"},"kind":"k","payload":"l4"}"#;
    assert_eq!(push(via, body).await.0, 200);
    let p = expect_push(c.next_timeout(WAIT).await.unwrap());
    assert_eq!((p.stream, p.position), (Stream::Room("lobby".into()), 4));

    // JOIN with resume beyond the room's tail: the same GAP, then OK.
    let seq = c
        .send(Frame::Join(Join {
            room: "hall".into(),
            resume_after: Some(7),
        }))
        .await
        .unwrap();
    let p = c.next_timeout(WAIT).await.unwrap();
    assert_eq!(
        p.frame,
        Frame::Gap(Gap {
            stream: Stream::Room("hall".into()),
            requested_after: 7,
            first_available: 1
        })
    );
    let p = c.next_timeout(WAIT).await.unwrap();
    assert_eq!((p.seq, p.frame), (seq, Frame::Ok(Some(0))));

    // A publisher gets its PUBLISH_ACK before its own PUSH of the message (§5.8).
    let seq = c
        .send(Frame::Publish(Publish {
            room: "lobby".into(),
            key: String::new(),
            kind: "k".into(),
            format: PayloadFormat(0),
            payload: "l5".into(),
            transient: false,
        }))
        .await
        .unwrap();
    let p = c.next_timeout(WAIT).await.unwrap();
    assert!(
        matches!(p.frame, Frame::PublishAck(ref a) if a.position == 5) && p.seq == seq,
        "{p:?}"
    );
    let p = expect_push(c.next_timeout(WAIT).await.unwrap());
    assert_eq!((p.stream, p.position), (Stream::Room("lobby".into()), 5));

    // ACKs: room and broadcast ones only count as life; the user's stream's are checked
    // (INVALID_ACK beyond its last position, echoing the ACK's Sequence, not fatal).
    c.send(Frame::Ack(vec![
        at(Stream::Room("lobby".into()), 99),
        at(Stream::Broadcast, 99),
    ]))
    .await
    .unwrap();
    let seq = c
        .send(Frame::Ack(vec![at(Stream::User, 99)]))
        .await
        .unwrap();
    let p = c.next_timeout(WAIT).await.unwrap();
    assert!(
        matches!(p.frame, Frame::Error(ref e) if e.code == ErrorCode::INVALID_ACK) && p.seq == seq,
        "{p:?}"
    );
    c.send(Frame::Ack(vec![at(Stream::User, 2)])).await.unwrap();
    let seq = c.send(Frame::Leave("hall".into())).await.unwrap();
    let p = c.next_timeout(WAIT).await.unwrap();
    assert_eq!((p.seq, p.frame), (seq, Frame::Ok(None)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_corners_on_one_node() {
    let server = start(publishing()).await;
    resume_list(&server, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_corners_in_cluster_mode() {
    let Some(nats) = NatsCluster::start(3).await else {
        return;
    };
    let a = node_with(&nats, "r1", publishing()).await;
    let b = node_with(&nats, "r1", publishing()).await;
    resume_list(&a, &b).await;
}

/// SPEC.md §8.1: a server set to require checksums refuses frames without a crc32 trailer,
/// HELLO included, echoing the frame's Sequence; the SDK sends them when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_requiring_checksums_refuses_frames_without_them() {
    let server = start(push_server::Config {
        require_checksum: true,
        ..config()
    })
    .await;
    let opts = |checksum| ConnectOptions {
        token: token("cara"),
        checksum,
        ..ConnectOptions::default()
    };
    let refused = Connection::connect(server.tcp_addr, &opts(false)).await;
    assert!(
        matches!(refused, Err(ClientError::Rejected { code, .. }) if code == ErrorCode::CHECKSUM_REQUIRED),
        "{:?}",
        refused.err()
    );
    let mut c = Connection::connect(server.tcp_addr, &opts(true))
        .await
        .unwrap();
    let (ok, _) = c
        .request(Frame::Join(Join {
            room: "sums".into(),
            resume_after: None,
        }))
        .await
        .unwrap();
    assert_eq!(ok.frame, Frame::Ok(Some(0)));
    let bare = encode_to_bytes(&Packet::new(77, Frame::Pong), &EncodeOptions::default()).unwrap();
    c.send_raw(&bare).await.unwrap();
    let p = c.next_timeout(WAIT).await.unwrap();
    assert!(
        matches!(p.frame, Frame::Error(ref e) if e.code == ErrorCode::CHECKSUM_REQUIRED)
            && p.seq == 77,
        "{p:?}"
    );
}
