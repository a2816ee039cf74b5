//! Rust SDK for the push server.
//!
//! - [`Connection`]: one authenticated connection; send and receive frames.
//! - [`ClientError`]: typed errors; [`ClientError::is_auth_failure`] tells a rejected token
//!   from a transient failure.
//! - `token`: mint HS256 test tokens (re-exported from `push-protocol`).

mod connection;
mod error;

pub use connection::{ConnectOptions, Connection};
pub use error::ClientError;
pub use push_protocol as protocol;
pub use push_protocol::token;
