//! Cluster mode on NATS JetStream (issue 14; CLUSTER.md), one concept per file:
//! - `engine`: settings, connection, streams, writer locks; `tails` the tails cache;
//! - `publish`: publishing to users (idempotent atomic batches);
//! - `commit`: group commit (publishes waiting together stored as one batch);
//! - `room_publish`: publishing to rooms and broadcast;
//! - `live`: the node-wide live subscription, resyncs (reconnect, overflow, new leader),
//!   departures;
//! - `user`: per-user actors (live delivery, replay on connect, retries); `acks` their
//!   acknowledgement record; `retry` the resend schedule; `actors` the node's table of them
//!   (awake, or asleep as a few numbers) and the node-wide tail checks;
//! - `rooms`: per-room and broadcast actors (live delivery, JOIN/LEAVE/PUBLISH in order);
//! - `read`: stored messages read back as PUSH frames; `history`: history pages;
//! - `control`: the admin API's questions answered by every node;
//! - `names`: streams, subjects, headers; `js`: the JetStream requests async-nats has no
//!   helper for (atomic batches with compare-and-set, direct reads) and their errors.

mod acks;
mod actors;
pub mod commit;
pub mod control;
pub mod engine;
mod epoch;
mod history;
pub mod js;
mod live;
pub mod names;
mod no_echo;
mod publish;
mod read;
mod recall;
mod retry;
mod room_publish;
mod rooms;
mod tails;
mod transient;
mod user;

pub use engine::{ClusterEngine, ClusterSettings};
pub use rooms::Cmd as RoomRequest;
