//! RabbitMQ stopped and restarted in the middle of a stream (issue 8): the publisher
//! republishes whatever the broker did not confirm, the broker redelivers what the server had
//! not acknowledged, and still every message reaches its user exactly once and is stored once.
//! Runs alone in its binary because it restarts the shared broker.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::amqp::rabbitmqctl;
use common::*;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use push_client::{Client, ClientConfig};

/// A channel with publisher confirms, retried until the broker answers.
async fn confirming_channel(url: &str) -> (Connection, Channel) {
    loop {
        if let Ok(conn) = Connection::connect(url, ConnectionProperties::default()).await {
            if let Ok(ch) = conn.create_channel().await {
                if ch
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .is_ok()
                {
                    return (conn, ch);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publishes and waits for the broker's confirm; false if it did not confirm.
async fn publish_confirmed(ch: &Channel, queue: &str, n: usize) -> bool {
    let body = format!(r#"{{"to":{{"users":["stream-user"]}},"kind":"k","payload":"m{n}"}}"#);
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(format!("m{n}").into());
    let sent = ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        )
        .await;
    let Ok(confirm) = sent else { return false };
    match tokio::time::timeout(Duration::from_secs(5), confirm).await {
        Ok(Ok(c)) => c.is_ack(),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_and_duplicates_nothing() {
    let Some(amqp::Consuming {
        server, url, cfg, ..
    }) = amqp::consuming("midstream").await
    else {
        return;
    };
    let total = 600;
    let mut client = Client::connect(ClientConfig::new(server.tcp_addr, token("stream-user")))
        .await
        .unwrap();
    let queue = cfg.queue.clone();
    let publisher = tokio::spawn(async move {
        let (mut _conn, mut ch) = confirming_channel(&url).await;
        let mut republished = 0;
        for n in 0..total {
            while !publish_confirmed(&ch, &queue, n).await {
                // Unconfirmed: publish again with the same message id once the broker is back.
                republished += 1;
                (_conn, ch) = confirming_channel(&url).await;
            }
            if n % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        republished
    });
    let mut seen: HashMap<String, usize> = HashMap::new();
    let started = Instant::now();
    let mut restarted = false;
    while seen.len() < total {
        if !restarted && seen.len() >= total / 3 {
            rabbitmqctl("stop_app");
            tokio::time::sleep(Duration::from_secs(2)).await;
            rabbitmqctl("start_app");
            restarted = true;
        }
        let m = tokio::time::timeout(Duration::from_secs(60), client.next_message())
            .await
            .unwrap_or_else(|_| panic!("stalled at {}/{total}", seen.len()))
            .unwrap();
        *seen
            .entry(String::from_utf8_lossy(&m.payload).to_string())
            .or_default() += 1;
    }
    let republished = publisher.await.unwrap();
    assert!(restarted);
    assert!(
        seen.values().all(|&c| c == 1),
        "a message reached the user twice"
    );
    // Stored once each, too: the user's stream holds exactly `total` messages.
    let v = user_history(server.http_addr, "stream-user", "limit=1").await;
    assert_eq!(v["tail"].as_u64(), Some(total as u64), "{v}");
    eprintln!(
        "broker restart mid-stream: {total} messages, {republished} republished by the publisher, \
         received {} once each, stored {total}, lost 0, in {:.1} s",
        seen.len(),
        started.elapsed().as_secs_f64()
    );
    client.close();
}
