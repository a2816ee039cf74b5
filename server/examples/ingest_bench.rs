//! Ingestion throughput from RabbitMQ: publishes N messages (one user each, offline users so
//! fan-out costs nothing) to the queue, then times the in-process server until it has accepted
//! them all durably and acknowledged them to the broker.
//!
//! `cargo run --release -p push-server --example ingest_bench -- [messages] [store] [concurrency]`
//! (needs RabbitMQ on 127.0.0.1:5672; `scripts/test.sh` shows how to start one).

use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use push_server::config::AmqpConfig;
use push_server::stats::Stats;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let store = args.next().unwrap_or_else(|| "sled".into());
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let tag = std::process::id();
    let dir = std::env::temp_dir().join(format!("ingest-bench-{tag}"));
    let queue = format!("ingest-bench-{tag}");
    // Fill the queue first, so the measurement is the server draining it.
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = lapin::types::FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        lapin::types::AMQPValue::LongString(format!("dlx-{tag}").as_str().into()),
    );
    ch.queue_declare(
        queue.as_str().into(),
        lapin::options::QueueDeclareOptions::durable(),
        args,
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let t = Instant::now();
    let mut confirms = Vec::with_capacity(1000);
    for i in 0..n {
        let body = format!(
            r#"{{"to":{{"users":["offline-{}"]}},"kind":"bench","payload":"{}","id":"m{i}"}}"#,
            i % 10_000,
            "x".repeat(100)
        );
        confirms.push(
            ch.basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap(),
        );
        if confirms.len() == 1000 {
            for c in confirms.drain(..) {
                c.await.unwrap();
            }
        }
    }
    for c in confirms.drain(..) {
        c.await.unwrap();
    }
    eprintln!("queued {n} messages in {:.1} s", t.elapsed().as_secs_f64());
    let server = push_server::start(push_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.clone(),
        store: store.parse().unwrap(),
        amqp: Some(AmqpConfig {
            url: url.clone(),
            queue: queue.clone(),
            dead_letter_exchange: format!("dlx-{tag}"),
            dead_letter_queue: format!("dlq-{tag}"),
            prefetch: 1024,
            concurrency,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let t = Instant::now();
    loop {
        let done = Stats::get(&server.ctx.stats.ingest_accepted) as usize;
        if done >= n {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(600), "stalled at {done}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{{\"scenario\":\"ingest\",\"store\":\"{store}\",\"concurrency\":{concurrency},\"prefetch\":1024,\"messages\":{n},\"seconds\":{secs:.3},\"accepted_per_second\":{:.0},\"commits\":{}}}",
        n as f64 / secs,
        Stats::get(&server.ctx.stats.store_commits)
    );
    server.shutdown();
    server.wait().await;
    let _ = ch
        .queue_delete(queue.as_str().into(), Default::default())
        .await;
    let _ = std::fs::remove_dir_all(dir);
}
