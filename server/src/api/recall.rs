//! `POST /api/v1/recall` (SPEC.md §5.12): a publisher withdraws a stored message, named by its
//! stream and position (and optionally its id, to be sure), or every message of one publish by
//! the publish's idempotency id.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::auth::{Caller, Denied};
use super::error;
use crate::cluster::names::parse_id;
use crate::config::Scope;
use crate::context::Ctx;
use crate::delivery::{DeliveryError, RecallTarget};
use crate::stream::StreamKey;

/// The request body: `stream` and `position` (with an optional `message_id`), or `id`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecallRequest {
    /// `user:<id>`, `room:<name>` or `broadcast`.
    #[serde(default)]
    stream: Option<String>,
    /// Position in that stream.
    #[serde(default)]
    position: Option<u64>,
    /// The message's id (32 hex digits): refused if the position holds another message.
    #[serde(default)]
    message_id: Option<String>,
    /// The idempotency id a publish was made with: every message it accepted.
    #[serde(default)]
    id: Option<String>,
}

fn scope_of(stream: &StreamKey) -> Scope {
    match stream {
        StreamKey::User(_) => Scope::Users,
        StreamKey::Room(_) => Scope::Rooms,
        StreamKey::Broadcast => Scope::Broadcast,
    }
}

fn bad(reason: impl Into<String>, field: &'static str) -> Response {
    error(StatusCode::BAD_REQUEST, reason.into(), Some(field))
}

/// The handler.
pub(super) async fn handler(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, Denied> {
    let req: RecallRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return Ok(bad(format!("invalid JSON: {e}"), "body")),
    };
    let stream = match req.stream.as_deref().map(StreamKey::parse) {
        None => None,
        Some(Some(s)) => Some(s),
        Some(None) => return Ok(bad("must be user:<id>, room:<name> or broadcast", "stream")),
    };
    let target = match (stream, req.position, req.id) {
        (Some(stream), Some(position), None) => {
            let id = match req.message_id.as_deref().map(parse_id) {
                None => None,
                Some(Some(id)) => Some(id),
                Some(None) => return Ok(bad("must be 32 hex digits", "message_id")),
            };
            caller.require(scope_of(&stream))?;
            RecallTarget::At {
                stream,
                position,
                id,
            }
        }
        (Some(stream), None, Some(id)) if req.message_id.is_none() => {
            caller.require(scope_of(&stream))?;
            RecallTarget::Key {
                key: id,
                stream: Some(stream),
            }
        }
        (None, None, Some(id)) if req.message_id.is_none() => {
            // The streams a publish reached are known only once it is found.
            caller.require(Scope::Admin)?;
            RecallTarget::Key {
                key: id,
                stream: None,
            }
        }
        _ => return Ok(bad(
            "give stream and position (and optionally message_id), or id (and optionally stream)",
            "body",
        )),
    };
    Ok(match ctx.delivery.recall(target).await {
        Ok(list) => {
            let list: Vec<_> = list
                .iter()
                .map(|r| {
                    json!({"id": r.id.to_string(), "stream": r.stream.name(),
                        "position": r.position, "already": r.already})
                })
                .collect();
            (StatusCode::OK, Json(json!({ "recalled": list }))).into_response()
        }
        Err(e @ DeliveryError::NotFound(_)) => error(StatusCode::NOT_FOUND, e.to_string(), None),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None),
    })
}
