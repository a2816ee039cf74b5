//! Helpers for tests against a real RabbitMQ (started by scripts/test.sh).

use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use push_server::config::AmqpConfig;

/// Runs `rabbitmqctl <arg>` (stop_app, start_app) on the test broker.
pub(crate) fn rabbitmqctl(arg: &str) {
    let out = std::process::Command::new("rabbitmqctl")
        .arg(arg)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {arg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The broker URL, or `None` (with a note) when tests run without one outside CI.
pub(crate) fn url() -> Option<String> {
    match std::env::var("PUSH_TEST_AMQP_URL") {
        Ok(u) => Some(u),
        Err(_) if std::env::var("CI").is_ok() => {
            panic!("PUSH_TEST_AMQP_URL is not set: run the tests through scripts/test.sh")
        }
        Err(_) => {
            // Straight to the process's stderr: the test harness captures eprintln!, and a
            // skipped test must not look like a passed one.
            use std::io::Write;
            let test = std::thread::current().name().unwrap_or("?").to_string();
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: RabbitMQ tests need PUSH_TEST_AMQP_URL (scripts/test.sh starts a broker and sets it)"
            );
            None
        }
    }
}

/// A config with queue names unique to this test.
pub(crate) fn config(url: &str, tag: &str) -> AmqpConfig {
    let unique = format!(
        "{tag}-{}",
        super::data_dir().file_name().unwrap().to_string_lossy()
    );
    AmqpConfig {
        url: url.into(),
        queue: format!("q-{unique}"),
        dead_letter_exchange: format!("dlx-{unique}"),
        dead_letter_queue: format!("dlq-{unique}"),
        prefetch: 64,
        concurrency: 4,
    }
}

/// A channel for the test's own publishing and inspection.
pub(crate) async fn channel(url: &str) -> (Connection, Channel) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("broker reachable");
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

/// Publishes `body` to `queue` through the default exchange, persistent, with a message id.
pub(crate) async fn publish(ch: &Channel, queue: &str, body: &[u8], message_id: Option<&str>) {
    let mut props = BasicProperties::default().with_delivery_mode(2);
    if let Some(id) = message_id {
        props = props.with_message_id(id.into());
    }
    publish_props(ch, queue, body, props).await;
}

/// Publishes `body` to `queue` through the default exchange with `props`.
pub(crate) async fn publish_props(ch: &Channel, queue: &str, body: &[u8], props: BasicProperties) {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// Messages waiting in `queue` (declares it passively, on a channel of its own because a
/// failed passive declare closes the channel).
pub(crate) async fn depth(conn: &Connection, queue: &str) -> u32 {
    let Ok(ch) = conn.create_channel().await else {
        return u32::MAX;
    };
    let n = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|q| q.message_count())
        .unwrap_or(u32::MAX);
    let _ = ch.close(200, "".into()).await;
    n
}

/// Waits for the server's consumer to declare `queue`.
pub(crate) async fn wait_for_queue(conn: &Connection, queue: &str) {
    for _ in 0..500 {
        if depth(conn, queue).await != u32::MAX {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the server never declared {queue}");
}

/// Takes one message from `queue`, waiting up to the test timeout.
pub(crate) async fn get(ch: &Channel, queue: &str) -> lapin::message::BasicGetMessage {
    for _ in 0..500 {
        if let Ok(Some(m)) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
        {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing arrived in {queue}");
}

/// A server consuming a fresh queue, and the test's own connection to the broker.
pub(crate) struct Consuming {
    /// The server.
    pub server: super::TestServer,
    /// Broker URL.
    pub url: String,
    /// The server's queue settings.
    pub cfg: AmqpConfig,
    /// The test's broker connection (for passive declares).
    pub conn: Connection,
    /// A channel on it (for publishing and reading).
    pub ch: Channel,
}

/// Starts a server consuming a queue unique to `tag` and waits until it has declared it;
/// `None` when no broker is configured outside CI.
pub(crate) async fn consuming(tag: &str) -> Option<Consuming> {
    let url = url()?;
    let cfg = config(&url, tag);
    let server = super::start(push_server::Config {
        amqp: Some(cfg.clone()),
        ..super::config()
    })
    .await;
    let (conn, ch) = channel(&url).await;
    wait_for_queue(&conn, &cfg.queue).await;
    Some(Consuming {
        server,
        url,
        cfg,
        conn,
        ch,
    })
}
