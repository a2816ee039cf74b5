//! The push server: long-lived TCP connections speaking the binary protocol of SPEC.md, a
//! registry of users and rooms, message acceptance and fan-out, and an HTTP API.
//!
//! Layout (data flows top to bottom):
//! - `api`: HTTP API: push, history, presence, rooms, metrics, health (axum);
//! - `ingest`: the RabbitMQ consumer;
//! - `push_request`: the publish request both of them receive, and its validation;
//! - `delivery`: ids, positions, idempotency, routing a message to the hub;
//! - `hub`: who is connected where (user, room, everyone), sharded; per-connection outboxes;
//! - `session`: one task per connection: handshake, then the read/write event loop;
//! - `transport`: accept loops;
//! - `server`: lifecycle (start, heartbeat sweep, graceful shutdown);
//! - `store`: the storage trait and its sled and redb backends;
//! - `stream`: [`stream::StreamKey`], every form of a stream's name;
//! - `tls`: certificate and key for TLS on every listener;
//! - `clock`: where the delivery engine's time comes from (a manual clock in tests);
//! - `config`, `context`, `stats`: settings, shared state, counters.

pub mod api;
pub mod clock;
pub mod config;
pub mod context;
pub mod delivery;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod jwt;
pub mod metrics;
pub mod push_request;
pub mod ratelimit;
pub mod server;
pub mod session;
pub mod stats;
pub mod store;
pub mod stream;
pub mod tls;
pub mod transport;

pub use config::Config;
pub use server::{start, start_with_clock, ServerHandle, StartError};
