//! The WebSocket opening handshake (RFC 6455 §4.2) as an axum route: validate, check origin
//! and limits, answer 101, then hand the raw socket to the session task.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use push_protocol::{ErrorCode, Hello, HelloOptions, StreamPos, MAX_VERSION, MIN_VERSION};
use serde::Deserialize;
use sha1::{Digest, Sha1};
use tokio::net::TcpStream;

use super::{json, Transport, SUBPROTOCOL_BINARY, SUBPROTOCOL_JSON};
use crate::context::Ctx;
use crate::http::error;
use crate::session;
use crate::session::Link;

/// RFC 6455's fixed GUID for `Sec-WebSocket-Accept`.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Query parameters of `GET /ws`, for clients that cannot send HELLO first (or prefer not to).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WsQuery {
    /// Access token; when present, no HELLO is awaited.
    token: Option<String>,
    /// Device label.
    device: Option<String>,
    /// Resume positions: `user:5,broadcast:3`.
    resume: Option<String>,
    /// HELLO options of version 2 (SPEC.md §5.1.2): largest frame the client accepts.
    max_frame_len: Option<u32>,
    /// The client cannot inflate zstd.
    no_zstd: Option<bool>,
    /// Every server frame carries a crc32 trailer.
    checksum: Option<bool>,
    /// The connection's own room PUBLISHes are not pushed back to it.
    no_echo: Option<bool>,
    /// The epoch the resume positions belong to.
    epoch: Option<u64>,
}

/// `Sec-WebSocket-Accept` for a client key.
pub(crate) fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// The mode the client asked for; `Err` when it offered only subprotocols this server lacks.
fn choose_mode(headers: &HeaderMap) -> Result<Option<(Transport, &'static str)>, String> {
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(',').map(|t| t.trim().to_string()))
        .filter(|t| !t.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(None);
    }
    for p in &offered {
        if p == SUBPROTOCOL_JSON {
            return Ok(Some((Transport::WsJson, SUBPROTOCOL_JSON)));
        }
        if p == SUBPROTOCOL_BINARY {
            return Ok(Some((Transport::WsBinary, SUBPROTOCOL_BINARY)));
        }
    }
    Err(format!(
        "none of the offered subprotocols ({}) is spoken here: use {SUBPROTOCOL_BINARY} \
         (binary frames) or {SUBPROTOCOL_JSON} (JSON text)",
        offered.join(", ")
    ))
}

fn parse_resume(s: &str) -> Result<Vec<StreamPos>, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .take(push_protocol::frame::MAX_POSITIONS + 1)
        .map(|item| {
            let (name, pos) = item
                .rsplit_once(':')
                .ok_or_else(|| format!("resume item \"{item}\" is not stream:position"))?;
            let stream = json::parse_stream(name)
                .ok_or_else(|| format!("resume names an unknown stream \"{name}\""))?;
            let position = pos
                .parse()
                .map_err(|_| format!("resume position \"{pos}\" is not an integer"))?;
            Ok(StreamPos { stream, position })
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|v| {
            if v.len() > push_protocol::frame::MAX_POSITIONS {
                Err("more than 256 resume positions".to_string())
            } else {
                Ok(v)
            }
        })
}

/// `GET /ws`: the WebSocket upgrade.
pub(crate) async fn handler(
    State(ctx): State<Arc<Ctx>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    query: Result<Query<WsQuery>, axum::extract::rejection::QueryRejection>,
    mut req: Request,
) -> Response {
    let headers = req.headers();
    if !header_has_token(headers, header::UPGRADE, "websocket")
        || !header_has_token(headers, header::CONNECTION, "upgrade")
    {
        return error(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket: send Upgrade: websocket and Connection: Upgrade",
            None,
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut r = error(
            StatusCode::UPGRADE_REQUIRED,
            "only WebSocket version 13 is supported",
            Some("sec-websocket-version"),
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| {
            base64::engine::general_purpose::STANDARD
                .decode(k)
                .is_ok_and(|b| b.len() == 16)
        });
    let Some(key) = key else {
        return error(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key must be 16 bytes in base64",
            Some("sec-websocket-key"),
        );
    };
    let accept = accept_key(key);
    if let Some(origin) = headers.get(header::ORIGIN) {
        let allowed = &ctx.config.ws_allowed_origins;
        let origin = origin.to_str().unwrap_or("");
        if !allowed.is_empty() && !allowed.iter().any(|a| a == origin) {
            tracing::warn!(%peer, origin, "WebSocket refused: origin not allowed");
            return error(
                StatusCode::FORBIDDEN,
                format!("origin {origin} is not allowed (ws_allowed_origins)"),
                Some("origin"),
            );
        }
    }
    let (transport, subprotocol) = match choose_mode(headers) {
        Ok(Some((t, p))) => (t, Some(p)),
        Ok(None) => (Transport::WsBinary, None),
        Err(reason) => {
            return error(
                StatusCode::BAD_REQUEST,
                reason,
                Some("sec-websocket-protocol"),
            )
        }
    };
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text(), Some("query")),
    };
    let resume = match q.resume.as_deref().map(parse_resume).transpose() {
        Ok(r) => r.unwrap_or_default(),
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason, Some("resume")),
    };
    let options = HelloOptions {
        max_frame_len: q.max_frame_len.unwrap_or(0),
        no_zstd: q.no_zstd.unwrap_or(false),
        checksum: q.checksum.unwrap_or(false),
        no_echo: q.no_echo.unwrap_or(false),
        epoch: q.epoch.unwrap_or(0),
    };
    if (1..HelloOptions::MIN_FRAME_LEN).contains(&options.max_frame_len) {
        let reason = format!(
            "max_frame_len must be 0 or at least {}",
            HelloOptions::MIN_FRAME_LEN
        );
        return error(StatusCode::BAD_REQUEST, reason, Some("max_frame_len"));
    }
    let hello = q.token.map(|token| Hello {
        min_version: MIN_VERSION,
        max_version: MAX_VERSION,
        token,
        device: q.device.unwrap_or_default(),
        resume,
        options,
    });
    let admission = match ctx.admit(peer) {
        Ok(a) => a,
        Err((code, reason)) => return refusal(code, reason),
    };
    ctx.stats.inc(&ctx.stats.ws_upgrades);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(%peer, "WebSocket upgrade did not complete: {e}");
                return;
            }
        };
        let Some((link, early)) = into_link(upgraded) else {
            tracing::error!(%peer, "WebSocket upgrade on an unexpected socket type");
            return;
        };
        // A second task: the long-lived one is the small connection task alone.
        tokio::spawn(session::serve_on(
            link, peer, admission, transport, early, hello,
        ));
    });
    let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = subprotocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    r
}

/// The socket under an upgraded connection, plain or TLS, with the bytes already read past
/// the request (by hyper, then any plaintext the TLS stream has decrypted but not yet handed
/// out).
fn into_link(upgraded: hyper::upgrade::Upgraded) -> Option<(Link, Bytes)> {
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => return Some((Link::plain(parts.io.into_inner()), parts.read_buf)),
        Err(u) => u,
    };
    let parts = upgraded.downcast::<TokioIo<session::TlsStream>>().ok()?;
    let (tcp, records, plain, kind) = parts.io.into_inner().into_parts();
    let mut early = BytesMut::from(&parts.read_buf[..]);
    early.extend_from_slice(&plain);
    Some((Link::tls_records(tcp, records, kind), early.freeze()))
}

/// A refusal by the admission check (per-address and global limits) as an HTTP answer.
fn refusal(code: ErrorCode, reason: String) -> Response {
    if code == ErrorCode::RATE_LIMITED {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, reason, None);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    error(StatusCode::SERVICE_UNAVAILABLE, reason, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn resume_query() {
        let r = parse_resume("user:5,room:a:b:2,broadcast:0").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[1].stream, push_protocol::Stream::Room("a:b".into()));
        assert!(parse_resume("user").is_err());
        assert!(parse_resume("nowhere:1").is_err());
        assert!(parse_resume("user:x").is_err());
    }

    #[test]
    fn subprotocol_choice() {
        let mut h = HeaderMap::new();
        assert_eq!(choose_mode(&h).unwrap(), None);
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("mqtt, push.v1.json"),
        );
        assert_eq!(choose_mode(&h).unwrap().unwrap().0, Transport::WsJson);
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("mqtt"),
        );
        assert!(choose_mode(&h).unwrap_err().contains("push.v1.json"));
    }
}
