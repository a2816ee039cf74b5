//! `POST /api/v1/push`: the request (schema and validation in `push_request`), the scope it
//! needs, and the response.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::{Caller, Denied};
use super::error;
use crate::config::Scope;
use crate::context::Ctx;
use crate::delivery::{Accepted, DeliveryError, Target};
use crate::push_request::{validate, PushRequest};
use crate::trace::AcceptSpan;

/// One accepted stream in the response.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct AcceptedJson {
    /// Message id, 32 hex digits.
    pub id: String,
    /// `user:<id>`, `room:<id>` or `broadcast`.
    pub stream: String,
    /// Position in the stream.
    pub position: u64,
    /// Connections it was queued to immediately.
    pub online: usize,
    /// True when this id had been accepted before.
    pub duplicate: bool,
    /// A transient message (not stored, position 0); absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transient: bool,
}

impl From<&Accepted> for AcceptedJson {
    fn from(a: &Accepted) -> Self {
        AcceptedJson {
            id: a.id.to_string(),
            stream: a.stream.name(),
            position: a.position,
            online: a.queued,
            duplicate: a.duplicate,
            transient: a.position == 0,
        }
    }
}

/// The handler.
pub(super) async fn handler(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Denied> {
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
    let (target, mut msg) = match validate(req, ctx.config.max_message_len) {
        Ok(v) => v,
        Err(inv) => return Ok(error(StatusCode::BAD_REQUEST, inv.reason, Some(inv.field))),
    };
    let scope = match &target {
        Target::Users(_) => Scope::Users,
        Target::Room(_) => Scope::Rooms,
        Target::Broadcast => Scope::Broadcast,
    };
    caller.require(scope)?;
    let span = ctx.stats.tracer.as_ref().and_then(|t| {
        let parent = headers.get("traceparent").and_then(|v| v.to_str().ok());
        t.accept("http", parent)
    });
    msg.trace = span.as_ref().map(AcceptSpan::context);
    let result = ctx.delivery.publish(&target, msg).await;
    if let Some(span) = span {
        span.finish(result.as_deref().map_err(ToString::to_string));
    }
    Ok(match result {
        Ok(accepted) => {
            let list: Vec<AcceptedJson> = accepted.iter().map(AcceptedJson::from).collect();
            (StatusCode::OK, Json(json!({ "accepted": list }))).into_response()
        }
        Err(e @ DeliveryError::Encode(_)) => error(StatusCode::BAD_REQUEST, e.to_string(), None),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None),
    })
}
