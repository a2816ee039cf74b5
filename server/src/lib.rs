//! The push server: long-lived connections speaking the binary protocol of SPEC.md (raw TCP,
//! optionally TLS, or the WebSocket shim), durable per-stream delivery, and an HTTP API.
//!
//! The path of a message, top to bottom:
//! - in from a service: `api` (HTTP, axum routes on the `http` accept loop) or `ingest`
//!   (RabbitMQ), both through `push_request` (one schema, one validation); in from a client:
//!   `transport` (accept loops: TCP, `/ws` upgrade) -> `session` (one task per connection:
//!   handshake, decoding under flow control, PUBLISH, JOIN/LEAVE, ACK);
//! - `delivery`: the handle to the engine thread, which assigns positions per stream
//!   (`stream::StreamKey`), checks idempotency and commits to `store` (sled, redb or memory)
//!   before anything is sent, then fans out; replay, retries and compaction run there too,
//!   on time from `clock`;
//! - `hub`: who is connected where (user, room, everyone), sharded; each `hub::Conn` has an
//!   outbox that its session drains into vectored socket writes.
//!
//! Beside the path: `server` (start, heartbeat sweep, graceful shutdown), `context` (the
//! shared state), `config`, `jwt` (client tokens), `tls`, `ratelimit`, `stats` and `metrics`.

pub(crate) mod api;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod context;
pub mod delivery;
pub(crate) mod fd_limit;
pub(crate) mod http;
pub mod hub;
pub(crate) mod ingest;
pub(crate) mod jwt;
pub mod memory;
pub(crate) mod metrics;
pub(crate) mod push_request;
pub(crate) mod ratelimit;
pub mod server;
pub(crate) mod session;
pub mod stats;
pub mod store;
pub mod stream;
pub mod tls;
pub mod trace;
pub(crate) mod transport;

pub use config::Config;
pub use server::{start, start_with_clock, ServerHandle, StartError};
