//! Presence, rooms, disconnecting users, server-side room membership, metrics, readiness.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::auth::{Caller, Denied};
use super::error;
use crate::cluster::control::{answer_local, Answer, Control};
use crate::config::Scope;
use crate::context::Ctx;
use crate::stats::{NodeStats, BUCKETS};
use crate::stream::valid_room_name;

/// Every node's answer to `q` (in cluster mode), or this node's.
async fn answers(ctx: &Ctx, q: Control) -> Result<Vec<Answer>, Response> {
    let Some(cluster) = ctx.delivery.cluster() else {
        return Ok(vec![answer_local(&ctx.hub, &ctx.stats, &q)]);
    };
    cluster
        .ask_all(&q)
        .await
        .map_err(|reason| error(StatusCode::SERVICE_UNAVAILABLE, reason, None))
}

/// Every node's answer to `q`, added up.
async fn across(ctx: &Ctx, q: Control) -> Result<Answer, Response> {
    let all = answers(ctx, q).await?;
    Ok(all.into_iter().fold(Answer::default(), |mut sum, a| {
        sum.count += a.count;
        sum.devices.extend(a.devices);
        sum
    }))
}

/// `GET /api/v1/users/{id}/presence`: online, connection count, devices.
pub(super) async fn presence(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Denied> {
    caller.require(Scope::Read)?;
    let q = Control::Presence { user: id.clone() };
    let all = match answers(&ctx, q).await {
        Ok(all) => all,
        Err(resp) => return Ok(resp),
    };
    let count: usize = all.iter().map(|a| a.count).sum();
    let devices: Vec<&String> = all.iter().flat_map(|a| &a.devices).collect();
    let now_ms = crate::clock::unix_ms();
    let sessions: Vec<serde_json::Value> = all
        .iter()
        .flat_map(|a| &a.sessions)
        .map(|s| {
            let mut v = json!({
                "id": s.id,
                "transport": s.transport,
                "device": s.device,
                "protocol_version": s.version,
                "connected_at_ms": now_ms.saturating_sub(s.connected_for_s * 1000),
            });
            if !s.node.is_empty() {
                v["node"] = json!(s.node);
            }
            v
        })
        .collect();
    let mut body = json!({
        "user": id,
        "online": count > 0,
        "connections": count,
        "devices": devices,
        "sessions": sessions,
    });
    if ctx.delivery.cluster().is_some() {
        // Which nodes hold the user's connections (cluster mode).
        let nodes: serde_json::Map<String, serde_json::Value> = all
            .iter()
            .filter(|a| a.count > 0)
            .map(|a| (a.node.clone(), a.count.into()))
            .collect();
        body["nodes"] = nodes.into();
    }
    Ok(Json(body).into_response())
}

/// `DELETE /api/v1/users/{id}/connections`: closes every connection of the user with KICKED
/// and no reconnect hint (e.g. after a password change).
pub(super) async fn kick(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Denied> {
    caller.require(Scope::Admin)?;
    let q = Control::Kick { user: id.clone() };
    let n = match across(&ctx, q).await {
        Ok(a) => a.count,
        Err(resp) => return Ok(resp),
    };
    tracing::info!(user = %id, connections = n, "user disconnected through the API");
    Ok(Json(json!({ "user": id, "closed": n })).into_response())
}

/// `GET /api/v1/rooms/{id}`: member count.
pub(super) async fn room(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Denied> {
    caller.require(Scope::Read)?;
    if let Err(reason) = valid_room_name(&id) {
        return Ok(error(StatusCode::BAD_REQUEST, reason, Some("room")));
    }
    let q = Control::RoomSize { room: id.clone() };
    Ok(match across(&ctx, q).await {
        Ok(a) => Json(json!({ "room": id, "members": a.count })).into_response(),
        Err(resp) => resp,
    })
}

/// `PUT /api/v1/rooms/{id}/members/{user}`: every current connection of the user joins.
pub(super) async fn add_member(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path((room, user)): Path<(String, String)>,
) -> Result<Response, Denied> {
    caller.require(Scope::Admin)?;
    if let Err(reason) = valid_room_name(&room) {
        return Ok(error(StatusCode::BAD_REQUEST, reason, Some("room")));
    }
    let q = Control::JoinUser {
        user: user.clone(),
        room: room.clone(),
    };
    Ok(match across(&ctx, q).await {
        Ok(a) => Json(json!({ "room": room, "user": user, "joined": a.count })).into_response(),
        Err(resp) => resp,
    })
}

/// `DELETE /api/v1/rooms/{id}/members/{user}`: every connection of the user leaves.
pub(super) async fn remove_member(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path((room, user)): Path<(String, String)>,
) -> Result<Response, Denied> {
    caller.require(Scope::Admin)?;
    let q = Control::LeaveUser {
        user: user.clone(),
        room: room.clone(),
    };
    Ok(match across(&ctx, q).await {
        Ok(a) => Json(json!({ "room": room, "user": user, "left": a.count })).into_response(),
        Err(resp) => resp,
    })
}

/// `GET /api/v1/key`: the calling key's name and scopes (the console checks for `admin`).
pub(super) async fn key(caller: Caller) -> Response {
    let (name, scopes) = caller.key();
    Json(json!({ "name": name, "scopes": scopes })).into_response()
}

/// `GET /api/v1/stats`: every node's figures (one node's on a single server) and their total,
/// with the latency buckets' bounds so a watcher can take quantiles between two readings.
pub(super) async fn stats(State(ctx): State<Arc<Ctx>>, caller: Caller) -> Result<Response, Denied> {
    caller.require(Scope::Read)?;
    let all = match answers(&ctx, Control::Stats).await {
        Ok(all) => all,
        Err(resp) => return Ok(resp),
    };
    let gauges = ctx.gauges();
    let mut nodes: Vec<NodeStats> = all
        .into_iter()
        .filter_map(|a| a.stats.map(|s| *s))
        .collect();
    if let [one] = nodes.as_mut_slice() {
        one.storage_bytes = gauges.storage_bytes;
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let total = NodeStats::total(&nodes);
    Ok(Json(json!({
        "cluster": ctx.delivery.cluster().is_some(),
        "buckets_le_s": BUCKETS,
        "broker": gauges.broker_up.map(|up| if up { "connected" } else { "disconnected" }),
        "nodes": nodes.iter().map(NodeStats::to_json).collect::<Vec<_>>(),
        "total": total.to_json(),
    }))
    .into_response())
}

/// `GET /metrics`: OpenMetrics text, which Prometheus reads (no authentication, like most
/// exporters; bind the HTTP listener to a private address when that matters).
pub(super) async fn metrics(State(ctx): State<Arc<Ctx>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::render(&ctx.stats, ctx.gauges()),
    )
        .into_response()
}

/// `GET /readyz`: 200 when storage answers; 503 with the reason otherwise.
pub(super) async fn readyz(State(ctx): State<Arc<Ctx>>) -> Response {
    if ctx.shutdown.is_cancelled() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down", None);
    }
    if !ctx.delivery.ready(Duration::from_secs(2)).await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage engine not answering within 2 s",
            None,
        );
    }
    if ctx
        .stats
        .storage_failing
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage is failing writes (disk full or I/O error); publishes get 503 until it recovers",
            None,
        );
    }
    let broker = match &ctx.config.amqp {
        None => "not configured",
        Some(_) if ctx.broker_up.load(std::sync::atomic::Ordering::Relaxed) => "connected",
        Some(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "message queue not connected (reconnecting)",
                None,
            )
        }
    };
    Json(json!({ "status": "ready", "storage": "ok", "broker": broker })).into_response()
}
