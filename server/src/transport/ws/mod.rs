//! The WebSocket shim (SPEC.md §12): `GET /ws` upgrades, then the same session task as TCP
//! runs over RFC 6455 framing. The framing, the JSON mode and the inbound decoder live in
//! `push_protocol::ws` (pure, fuzzed); this module adds the HTTP upgrade.
//!
//! - `upgrade`: the HTTP handshake (`/ws` route), origin check and token in the query string.

pub(crate) mod upgrade;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::context::Ctx;

/// The `/ws` route: merged into the API's router when the shim shares the HTTP port, or
/// served on a listener of its own (`ws_listen`).
pub(crate) fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/ws", get(upgrade::handler))
        .with_state(ctx)
}

pub(crate) use push_protocol::ws::{json, Transport, SUBPROTOCOL_BINARY, SUBPROTOCOL_JSON};
