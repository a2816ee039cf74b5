//! Group commit: the publishes a node has waiting are stored together, one atomic batch per
//! free in-flight slot, instead of one batch each. A replicated, fsynced batch costs about
//! the same whether it holds 3 messages or 300 (BENCHMARKS.md, "Cluster mode"), so with one
//! batch per publish a node stored ~1,100 publishes/s at 16 batches in flight. No timer
//! holds a publish back: a batch leaves as soon as a slot is free, carrying whatever
//! queued while every slot was busy.
//!
//! Every part keeps its own all-or-nothing meaning: when a batch of several parts is refused
//! for a failed compare-and-set (someone else wrote first to one part's subject), each part
//! is sent again alone, so only the part that lost its race sees the refusal.

use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::js::{publish_atomic, BatchAck, JsError, Outbound, MAX_BATCH};

/// Parts waiting for a slot before publishers wait to queue theirs (each part's publisher
/// already holds its writer locks, so this bounds memory, not ordering).
const QUEUE: usize = 4096;

/// One publish's messages, stored all or none, and where its answer goes.
struct Part {
    msgs: Vec<Outbound>,
    done: oneshot::Sender<Result<BatchAck, JsError>>,
}

/// Stores parts, grouping those that wait together into one atomic batch.
pub struct Committer {
    tx: mpsc::Sender<Part>,
}

fn stopped() -> JsError {
    JsError::Unavailable("the node's committer has stopped".into())
}

impl Committer {
    /// Starts the committer of one stream's publishes: a batch is in flight while it holds
    /// one of `slots`' permits.
    pub fn start(client: Client, timeout: Duration, slots: Arc<Semaphore>) -> Committer {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(
            rx,
            Sender {
                client,
                timeout,
                slots,
            },
        ));
        Committer { tx }
    }

    /// Stores `msgs` atomically (every one or none); the answer's `sequence` is the stream
    /// sequence of the last of them and `count` their number, as if they were a batch alone.
    pub async fn commit(&self, msgs: Vec<Outbound>) -> Result<BatchAck, JsError> {
        if msgs.is_empty() || msgs.len() > MAX_BATCH {
            return Err(JsError::Invalid(format!(
                "{} messages: a publish stores 1 to {MAX_BATCH}",
                msgs.len()
            )));
        }
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Part { msgs, done })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Parts queued and not yet taken into a batch.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// What sending a batch needs.
#[derive(Clone)]
struct Sender {
    client: Client,
    timeout: Duration,
    slots: Arc<Semaphore>,
}

async fn run(mut rx: mpsc::Receiver<Part>, sender: Sender) {
    let mut carry: Option<Part> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(slot) = sender.slots.clone().acquire_owned().await else {
            return;
        };
        let mut count = first.msgs.len();
        let mut parts = vec![first];
        while let Ok(p) = rx.try_recv() {
            if count + p.msgs.len() > MAX_BATCH {
                carry = Some(p);
                break;
            }
            count += p.msgs.len();
            parts.push(p);
        }
        tokio::spawn(sender.clone().store(parts, slot));
    }
}

impl Sender {
    async fn store(self, mut parts: Vec<Part>, slot: OwnedSemaphorePermit) {
        if parts.len() == 1 {
            return self.alone(parts.remove(0), slot).await;
        }
        let msgs: Vec<Outbound> = parts.iter().flat_map(|p| p.msgs.iter().cloned()).collect();
        let total = msgs.len() as u64;
        let r = publish_atomic(&self.client, msgs, self.timeout).await;
        drop(slot);
        match r {
            Ok(ack) => {
                let mut next = (ack.sequence + 1).saturating_sub(total);
                for p in parts {
                    let count = p.msgs.len() as u64;
                    next += count;
                    let _ = p.done.send(Ok(BatchAck {
                        stream: ack.stream.clone(),
                        sequence: next - 1,
                        batch_id: ack.batch_id.clone(),
                        count,
                    }));
                }
            }
            // Nothing was stored; only the loser(s) of the race should hear of it.
            Err(JsError::WrongLastSequence(_)) => {
                for p in parts {
                    let sender = self.clone();
                    tokio::spawn(async move {
                        match sender.slots.clone().acquire_owned().await {
                            Ok(slot) => sender.alone(p, slot).await,
                            Err(_) => drop(p.done.send(Err(stopped()))),
                        }
                    });
                }
            }
            Err(e) => {
                for p in parts {
                    let _ = p.done.send(Err(e.clone()));
                }
            }
        }
    }

    async fn alone(&self, p: Part, slot: OwnedSemaphorePermit) {
        let r = publish_atomic(&self.client, p.msgs, self.timeout).await;
        drop(slot);
        let _ = p.done.send(r);
    }
}
