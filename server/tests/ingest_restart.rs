//! The broker stops and comes back: the server keeps serving, reports it in /readyz, reconnects
//! by itself and consumes again. Runs alone in its binary because it restarts the shared broker.

mod common;

use std::time::Duration;

use common::amqp::rabbitmqctl;
use common::*;
use push_client::protocol::Frame;

async fn readyz(server: &push_server::ServerHandle) -> u16 {
    http(server.http_addr, "GET", "/readyz", None, "").await.0
}

#[tokio::test]
async fn the_server_survives_a_broker_restart_and_resumes_consuming() {
    let Some(amqp::Consuming {
        server,
        url,
        cfg,
        conn: _conn,
        ch,
    }) = amqp::consuming("restart").await
    else {
        return;
    };
    let queue = cfg.queue;
    let mut c = connect(server.tcp_addr, "r-user").await;
    amqp::publish(
        &ch,
        &queue,
        br#"{"to":{"users":["r-user"]},"kind":"k","payload":"before"}"#,
        Some("b1"),
    )
    .await;
    assert!(matches!(
        c.next_timeout(WAIT).await.unwrap().frame,
        Frame::Push(_)
    ));
    rabbitmqctl("stop_app");
    let mut down = false;
    for _ in 0..100 {
        if readyz(&server).await == 503 {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Whatever happens to the broker, connections and the HTTP API keep working.
    let (s, _) = push(
        &server,
        r#"{"to":{"users":["r-user"]},"kind":"k","payload":"via http"}"#,
    )
    .await;
    assert_eq!(s, 200);
    assert!(matches!(
        c.next_timeout(WAIT).await.unwrap().frame,
        Frame::Push(_)
    ));
    rabbitmqctl("start_app");
    assert!(down, "/readyz reported the broker down");
    let mut up = false;
    for _ in 0..300 {
        if readyz(&server).await == 200 {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the consumer reconnected");
    let (_conn, ch) = amqp::channel(&url).await;
    amqp::publish(
        &ch,
        &queue,
        br#"{"to":{"users":["r-user"]},"kind":"k","payload":"after"}"#,
        Some("a1"),
    )
    .await;
    match c.next_timeout(WAIT).await.unwrap().frame {
        Frame::Push(p) => assert_eq!(&p.payload[..], b"after"),
        other => panic!("{other:?}"),
    }
}
