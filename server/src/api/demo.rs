//! The demo page (`/demo`), the browser SDK it uses (`/sdk/push.js`), and development-mode
//! token minting for them.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use push_protocol::token::{self, Claims};
use serde::Deserialize;
use serde_json::json;

use super::error;
use crate::config::DEV_JWT_SECRET;
use crate::context::Ctx;
use crate::delivery::ids::unix_ms;

/// The browser SDK, served so the demo page (and anyone) can import it.
pub(super) const SDK_JS: &str = include_str!("../../../client/js/push.js");
/// The demo page.
pub(super) const DEMO_HTML: &str = include_str!("demo.html");

/// `GET /demo`.
pub(super) async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        DEMO_HTML,
    )
        .into_response()
}

/// `GET /sdk/push.js`.
pub(super) async fn sdk() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SDK_JS,
    )
        .into_response()
}

/// Query of a development token request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MintQuery {
    /// User id.
    user: String,
    /// Lifetime in seconds (default one day).
    ttl_secs: Option<u64>,
}

/// `POST /api/v1/dev/token?user=`: a user token, only while the server runs on the
/// development secret (it says so in its log); refused otherwise so production never mints.
pub(super) async fn mint_token(
    State(ctx): State<Arc<Ctx>>,
    query: Result<Query<MintQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if ctx.config.jwt_secret != DEV_JWT_SECRET {
        return error(
            StatusCode::FORBIDDEN,
            "token minting is only available in development mode (default jwt_secret)",
            None,
        );
    }
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text(), Some("query")),
    };
    if q.user.is_empty() || q.user.len() > 255 {
        return error(
            StatusCode::BAD_REQUEST,
            "user must be 1 to 255 bytes",
            Some("user"),
        );
    }
    let exp = unix_ms() / 1000 + q.ttl_secs.unwrap_or(86_400).min(30 * 86_400);
    let claims = Claims {
        sub: q.user.clone(),
        exp,
        device: None,
        rooms: Vec::new(),
    };
    let t = token::mint(ctx.config.jwt_secret.as_bytes(), &claims);
    (
        StatusCode::OK,
        Json(json!({"user": q.user, "token": t, "exp": exp})),
    )
        .into_response()
}
