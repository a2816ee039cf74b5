//! The HTTP API for other services (axum): push, history, presence, rooms, disconnect,
//! metrics, health and readiness.

mod admin;
mod auth;
mod demo;
mod history;
pub mod listener;
mod poll;
mod push;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::Scope;
use crate::context::Ctx;
use crate::delivery::{DeliveryError, Target};
pub use push::{validate as validate_push, AcceptedJson, Invalid, PushRequest};

/// Builds the router.
pub fn router(ctx: Arc<Ctx>) -> Router {
    let mut r = Router::new();
    if ctx.config.ws_on_http {
        r = r.route("/ws", get(crate::transport::ws::upgrade::handler));
    }
    r.route("/api/v1/push", post(push_handler))
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
        .route("/metrics", get(admin::metrics))
        .route("/readyz", get(admin::readyz))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(ctx.config.max_api_body))
        .with_state(ctx)
}

/// The router of a listener of its own for the WebSocket shim.
pub fn ws_router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/ws", get(crate::transport::ws::upgrade::handler))
        .with_state(ctx)
}

/// Serves the API until shutdown.
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>) {
    let app = router(ctx.clone());
    listener::serve(listener, ctx, app, "http api").await
}

/// A JSON error body: `{"error": reason, "field": name}`.
pub(crate) fn error(
    status: StatusCode,
    reason: impl Into<String>,
    field: Option<&str>,
) -> Response {
    let mut body = json!({ "error": reason.into() });
    if let Some(f) = field {
        body["field"] = json!(f);
    }
    (status, Json(body)).into_response()
}

async fn push_handler(
    State(ctx): State<Arc<Ctx>>,
    caller: auth::Caller,
    body: Bytes,
) -> Result<Response, auth::Denied> {
    let req: PushRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                format!("invalid JSON: {e}"),
                None,
            ))
        }
    };
    let (target, msg) = match push::validate(req, ctx.config.max_message_len) {
        Ok(v) => v,
        Err(inv) => return Ok(error(StatusCode::BAD_REQUEST, inv.reason, Some(inv.field))),
    };
    let scope = match &target {
        Target::Users(_) => Scope::Users,
        Target::Room(_) => Scope::Rooms,
        Target::Broadcast => Scope::Broadcast,
    };
    caller.require(&ctx, scope)?;
    Ok(match ctx.delivery.publish(&target, msg).await {
        Ok(accepted) => {
            let list: Vec<AcceptedJson> = accepted.iter().map(AcceptedJson::from).collect();
            (StatusCode::OK, Json(json!({ "accepted": list }))).into_response()
        }
        Err(e @ DeliveryError::Encode(_)) => error(StatusCode::BAD_REQUEST, e.to_string(), None),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None),
    })
}

/// The OpenAPI document of this API (kept in `openapi.json`, checked against the routes by
/// `server/tests/api.rs`).
pub const OPENAPI: &str = include_str!("openapi.json");

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
