//! The cluster's epoch (SPEC.md §5.2): one number for every stream of the deployment, kept on
//! a subject of its own in the rooms stream. The first node to start creates it; the others
//! read it. Streams created from scratch (a cluster rebuilt, the streams deleted) start a new
//! one, and so does a node started with `new_epoch`.

use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use async_nats::Client;

use super::js::{last_for_subject_from_leader, publish_atomic, JsError, Outbound};
use super::names::Names;

/// How long a starting node keeps trying to read the epoch while JetStream cannot answer
/// (a stream electing its leader, a NATS server restarting).
const PATIENCE: Duration = Duration::from_secs(60);

/// The deployment's epoch, created when there is none; replaced by a fresh one when `renew`.
/// Retried while JetStream is unavailable, for up to [`PATIENCE`].
pub(crate) async fn load_epoch(
    client: &Client,
    rooms: &Stream,
    names: &Names,
    timeout: Duration,
    renew: bool,
) -> Result<u64, JsError> {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        match try_load_epoch(client, rooms, names, timeout, renew).await {
            Err(JsError::Unavailable(e)) if tokio::time::Instant::now() < give_up => {
                tracing::warn!("reading the cluster's epoch: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            done => return done,
        }
    }
}

async fn try_load_epoch(
    client: &Client,
    rooms: &Stream,
    names: &Names,
    timeout: Duration,
    mut renew: bool,
) -> Result<u64, JsError> {
    let subject = names.epoch();
    loop {
        let last = last_for_subject_from_leader(rooms, &subject).await?;
        let expect = match &last {
            Some(m) if !renew => {
                return std::str::from_utf8(&m.payload)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        JsError::Invalid(format!("epoch {:?} on {subject}", m.payload))
                    });
            }
            Some(m) => m.sequence,
            None => 0,
        };
        let epoch = crate::store::new_epoch();
        let msg = Outbound::new(subject.clone(), epoch.to_string().into())
            .expect_last_subject_sequence(expect);
        match publish_atomic(client, vec![msg], timeout).await {
            Ok(_) => return Ok(epoch),
            // Another node wrote one meanwhile: that one is the epoch.
            Err(JsError::WrongLastSequence(_)) => renew = false,
            Err(e) => return Err(e),
        }
    }
}
