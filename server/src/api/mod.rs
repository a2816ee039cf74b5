//! The HTTP API for other services (axum): push, history, presence, rooms, disconnect,
//! metrics, health and readiness.

mod admin;
mod auth;
mod console;
mod demo;
mod history;
mod poll;
mod push;
mod recall;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Extension;
use axum::{Json, Router};
use serde_json::json;

use crate::context::Ctx;

pub(crate) use crate::http::error;

/// Builds the router of the API routes (the server merges `/ws` into it when the WebSocket
/// shim shares the HTTP port).
pub(crate) fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/api/v1/push", post(push::handler))
        .route("/api/v1/recall", post(recall::handler))
        .route("/api/v1/poll", get(poll::poll))
        .route("/api/v1/dev/token", post(demo::mint_token))
        .route("/demo", get(demo::page))
        .route("/sdk/push.js", get(demo::sdk))
        .route("/api/v1/history/users/{id}", get(history::user))
        .route("/api/v1/history/rooms/{id}", get(history::room))
        .route("/api/v1/history/broadcast", get(history::broadcast))
        .route("/api/v1/users/{id}/presence", get(admin::presence))
        .route("/api/v1/users/{id}/connections", delete(admin::kick))
        .route("/api/v1/rooms/{id}", get(admin::room))
        .route(
            "/api/v1/rooms/{id}/members/{user}",
            put(admin::add_member).delete(admin::remove_member),
        )
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/stats", get(admin::stats))
        .route("/api/v1/key", get(admin::key))
        .route("/admin", get(console::page))
        .route("/admin/{file}", get(console::asset))
        .route("/metrics", get(admin::metrics))
        .route("/readyz", get(admin::readyz))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(ctx.config.max_api_body))
        .layer(Extension(Arc::new(auth::ApiKeys::from_config(&ctx.config))))
        .with_state(ctx)
}

/// The OpenAPI document of this API (kept in `openapi.json`, checked against the routes by
/// `server/tests/api.rs`).
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

async fn healthz(State(ctx): State<Arc<Ctx>>) -> Response {
    let s = &ctx.stats;
    let get = crate::stats::Stats::get;
    Json(json!({
        "status": "ok",
        "connections": ctx.hub.connection_count(),
        "counters": {
            "accepted": get(&s.accepted),
            "handshakes_ok": get(&s.handshakes_ok),
            "handshakes_failed": get(&s.handshakes_failed),
            "messages_accepted": get(&s.messages_accepted),
            "duplicates": get(&s.duplicates),
            "deliveries_queued": get(&s.deliveries_queued),
            "slow_consumers": get(&s.slow_consumers),
            "heartbeat_timeouts": get(&s.heartbeat_timeouts),
            "store_commits": get(&s.store_commits),
            "store_commit_micros": get(&s.store_commit_micros),
            "store_errors": get(&s.store_errors),
            "retries": get(&s.retries),
            "compactions": get(&s.compactions),
        },
    }))
    .into_response()
}
