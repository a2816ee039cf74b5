//! Rust SDK for the push server.
//!
//! - [`Client`]: the application-facing client. It reconnects with exponential backoff and
//!   jitter, resumes from the positions it has seen, re-joins rooms, answers heartbeats, detects
//!   a dead server by its own timeout (sooner with `ClientConfig::ping_interval`, protocol
//!   version 2), acknowledges automatically (or when told, in manual mode) and never hands the
//!   application the same message id twice. `Client::ping` measures the round trip.
//! - [`Connection`]: one authenticated connection, frame by frame (tools and tests).
//! - [`ClientError`]: typed errors; [`ClientError::is_auth_failure`] tells a rejected token
//!   from a transient failure.
//! - [`TlsOptions`]: TLS with certificate verification (web roots plus any CA you add; there
//!   is no switch to turn verification off).
//! - `token`: mint HS256 test tokens (re-exported from `push-protocol`).
//! - `http_api` (feature `cli`, off by default): a small HTTP/1.1 client for the push API, used
//!   by `push-cli` and the `push-bench` harness (crate `push-benches`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), push_client::ClientError> {
//! use push_client::{Client, ClientConfig};
//! let addr = "127.0.0.1:7100".parse().unwrap();
//! let mut client = Client::connect(ClientConfig::new(addr, "<jwt>")).await?;
//! client.join("lobby").await?;
//! while let Some(msg) = client.next_message().await {
//!     println!("{} #{} {}", msg.kind, msg.position, String::from_utf8_lossy(&msg.payload));
//! }
//! # Ok(()) }
//! ```

mod client;
mod connection;
mod dedupe;
mod error;
/// A minimal keep-alive HTTP/1.1 client for the push API, used by `push-cli` and `push-bench`.
#[cfg(feature = "cli")]
pub mod http_api;
mod tls;

pub use client::{Client, ClientConfig, Event, Message};
pub use connection::{ConnectOptions, Connection};
pub use dedupe::Dedupe;
pub use error::ClientError;
pub use push_protocol as protocol;
pub use push_protocol::token;
pub use push_protocol::HelloOptions;
pub use tls::{Stream, TlsOptions};
