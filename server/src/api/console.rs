//! The admin console (`/admin`): a static page that charts `GET /api/v1/stats` and drives the
//! public API with the operator's key. Its files are compiled in, so serving it needs no build
//! step and no files next to the binary; uPlot (MIT, console/UPLOT-LICENSE) draws the charts.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error;

/// (name, content type, body) of every file under `/admin/`.
const FILES: [(&str, &str, &str); 4] = [
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("console/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("console/console.css"),
    ),
    (
        "uplot.min.js",
        "text/javascript; charset=utf-8",
        include_str!("console/uplot.min.js"),
    ),
    (
        "uplot.min.css",
        "text/css; charset=utf-8",
        include_str!("console/uplot.min.css"),
    ),
];

/// `GET /admin`.
pub(super) async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("console/index.html"),
    )
        .into_response()
}

/// `GET /admin/{file}`.
pub(super) async fn asset(Path(file): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, body)) => ([(header::CONTENT_TYPE, *kind)], *body).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no console file {file:?}"),
            None,
        ),
    }
}
