//! The WebSocket shim (SPEC.md §12): `GET /ws` upgrades, then the same session task as TCP
//! runs over RFC 6455 framing. The framing, the JSON mode and the inbound decoder live in
//! `push_protocol::ws` (pure, fuzzed); this module adds the HTTP upgrade.
//!
//! - `upgrade`: the HTTP handshake (`/ws` route), origin check and token in the query string.

pub mod upgrade;

pub use push_protocol::ws::{
    frame, inbound, json, Transport, SUBPROTOCOL_BINARY, SUBPROTOCOL_JSON,
};
