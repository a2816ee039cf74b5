//! Cluster mode on NATS JetStream (issue 14; CLUSTER.md): `engine` (connection, streams,
//! publishing to users), `user` (per-user delivery actors), `rooms` (rooms and broadcast),
//! `names` (streams, subjects, headers), `js` (below).
//!
//! - `js`: the JetStream requests async-nats has no helper for (atomic batch publish with
//!   per-subject compare-and-set, direct reads of a subject's last message), with their error
//!   classification. The cluster engine builds on these; its tests run them against a real
//!   three-node nats-server cluster (`server/tests/jetstream.rs`).

pub mod control;
pub mod engine;
mod history;
pub mod js;
pub mod names;
mod retry;
mod rooms;
mod user;

pub use engine::{ClusterEngine, ClusterSettings};
pub use rooms::Cmd as RoomRequest;
