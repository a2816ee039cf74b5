//! Publishing over the binary protocol: PUBLISH to the room through the SDK (with TLS when
//! `--tls-ca` is given), each publisher a member of the room without echo, waiting for its
//! PUBLISH_ACK as an HTTP publisher waits for its 200. For fan-out runs against a server whose
//! every listener speaks TLS (the harness's HTTP client is plain), and with `--binary-publish`
//! to take HTTP out of the publish path. The server needs `allow_client_publish` and its
//! publish limits lifted.

use std::time::{Duration, Instant};

use bytes::Bytes;
use push_client::protocol::{Frame, HelloOptions, Join, PayloadFormat, Publish};
use push_client::{ConnectOptions, Connection};

use crate::cli::{tls_of, Common, Load};

/// Publisher `first` of `step`: publishes messages `first, first + step, ...` below
/// `load.messages` to `room` at `load.rate` from `t0` (0 = as fast as acks come back).
/// Returns the messages that failed and the first error.
pub(crate) async fn publish_share(
    c: &Common,
    room: &str,
    (first, step): (usize, usize),
    load: &Load,
    t0: Instant,
) -> (u64, Option<String>) {
    let share: Vec<usize> = (first..load.messages).step_by(step.max(1)).collect();
    let all = share.len() as u64;
    let tls = match tls_of(c)
        .map(|(name, pem)| push_client::TlsOptions::new(name).with_ca_pem(pem.as_bytes()))
    {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => return (all, Some(format!("--tls-ca: {e}"))),
    };
    let token = crate::spec::bench_token(&c.secret, format!("{}-publisher-{first}", c.user_prefix));
    let opts = ConnectOptions {
        token,
        timeout: Some(Duration::from_secs(30)),
        tls,
        hello_options: HelloOptions {
            no_echo: true,
            ..HelloOptions::default()
        },
        ..ConnectOptions::default()
    };
    let addr = match c.addr.parse() {
        Ok(a) => a,
        Err(e) => return (all, Some(format!("--addr: {e}"))),
    };
    let mut conn = match Connection::connect(addr, &opts).await {
        Ok(conn) => conn,
        Err(e) => return (all, Some(format!("publisher connect: {e}"))),
    };
    let join = Frame::Join(Join {
        room: room.to_string(),
        resume_after: None,
    });
    if let Err(e) = conn.request(join).await {
        return (all, Some(format!("publisher JOIN: {e}")));
    }
    let (mut failed, mut first_error) = (0, None);
    for i in share {
        if load.rate > 0.0 {
            let due = t0 + Duration::from_secs_f64(i as f64 / load.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let frame = Frame::Publish(Publish {
            room: room.to_string(),
            key: String::new(),
            kind: "bench".into(),
            format: PayloadFormat::OPAQUE,
            payload: Bytes::from(crate::spec::stamped_payload(load.size)),
            transient: load.transient,
        });
        if let Err(e) = conn.request(frame).await {
            failed += 1;
            first_error.get_or_insert(format!("PUBLISH: {e}"));
        }
    }
    (failed, first_error)
}
