//! `GET /api/v1/history/...`: stored messages of a stream with their delivery states, paged by
//! position.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use push_protocol::{Notice, PayloadFormat};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Caller, Denied};
use super::error;
use crate::config::Scope;
use crate::context::Ctx;
use crate::delivery::HistoryItem;
use crate::stream::StreamKey;

/// Largest page.
const MAX_LIMIT: usize = 1000;

/// Paging parameters.
#[derive(Debug, Deserialize)]
pub(super) struct Page {
    /// Return positions after this one (default 0: from the oldest retained).
    #[serde(default)]
    after: u64,
    /// Page size (default 100, at most 1000).
    #[serde(default)]
    limit: Option<usize>,
}

fn item_json(i: &HistoryItem) -> Value {
    let r = &i.record;
    let mut v = json!({
        "position": i.position,
        "id": r.id.to_string(),
        "timestamp": r.timestamp_ms,
        "kind": r.kind,
        "state": i.state,
        "retries": r.retries,
        "updated": r.updated_ms,
    });
    if r.format == PayloadFormat::NOTICE {
        if let Ok(n) = Notice::decode(r.payload.clone()) {
            v["title"] = json!(n.title);
            v["content"] = json!(n.content);
            v["level"] = json!(n.level.as_str());
            return v;
        }
    }
    match std::str::from_utf8(&r.payload) {
        Ok(s) => v["payload"] = json!(s),
        Err(_) => {
            v["payload_base64"] =
                json!(base64::engine::general_purpose::STANDARD.encode(&r.payload))
        }
    }
    v
}

async fn page(ctx: &Ctx, caller: Caller, stream: StreamKey, p: Page) -> Result<Response, Denied> {
    caller.require(Scope::Read)?;
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1 to {MAX_LIMIT}"),
            Some("limit"),
        ));
    }
    Ok(match ctx.delivery.history(&stream, p.after, limit).await {
        Ok(page) => {
            let next = page.items.last().map(|i| i.position);
            Json(json!({
                "stream": page.stream.name(),
                "first_retained": page.first_retained,
                "tail": page.tail,
                "acked": page.acked,
                "next_after": next,
                "messages": page.items.iter().map(item_json).collect::<Vec<_>>(),
            }))
            .into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None),
    })
}

/// History of one user's stream.
pub(super) async fn user(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(p): Query<Page>,
) -> Result<Response, Denied> {
    page(&ctx, caller, StreamKey::User(id), p).await
}

/// History of a room.
pub(super) async fn room(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(p): Query<Page>,
) -> Result<Response, Denied> {
    page(&ctx, caller, StreamKey::Room(id), p).await
}

/// History of the broadcast stream.
pub(super) async fn broadcast(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Query(p): Query<Page>,
) -> Result<Response, Denied> {
    page(&ctx, caller, StreamKey::Broadcast, p).await
}
