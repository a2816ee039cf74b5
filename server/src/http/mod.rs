//! What every HTTP listener shares: the accept loop (`listener`) and the JSON error body.
//! The API routes (`api`) and the WebSocket upgrade (`transport::ws`) both build on it; it
//! depends on neither.

pub(crate) mod listener;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

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
