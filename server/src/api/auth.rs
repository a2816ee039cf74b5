//! API authentication: which key is calling, whether it may do this, and whether it is within
//! its rate.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error;
use crate::config::{ApiKey, Config, Scope};
use crate::context::Ctx;
use crate::ratelimit::Bucket;

/// An API key with its live rate-limit bucket.
pub(super) struct KeyState {
    /// Configured key.
    pub key: ApiKey,
    /// Token bucket.
    pub bucket: std::sync::Mutex<Bucket>,
}

/// Every API key of the server: the named `api_keys`, plus the plain `api_tokens`, which get
/// every scope. Handed to the routes as a request extension.
pub(super) struct ApiKeys(Vec<KeyState>);

impl ApiKeys {
    /// The keys of `config`, each with a full bucket.
    pub(super) fn from_config(config: &Config) -> ApiKeys {
        let now = std::time::Instant::now();
        let plain = config
            .api_tokens
            .iter()
            .enumerate()
            .map(|(i, token)| ApiKey {
                name: format!("api_tokens[{i}]"),
                token: token.clone(),
                scopes: Scope::ALL.to_vec(),
                rate_per_sec: 50_000.0,
                burst: 100_000.0,
                allow_from: Vec::new(),
            });
        let keys = config
            .api_keys
            .iter()
            .cloned()
            .chain(plain)
            .map(|key| KeyState {
                bucket: std::sync::Mutex::new(Bucket::full(key.burst, now)),
                key,
            })
            .collect();
        ApiKeys(keys)
    }
}

/// Why a request was refused before it did anything.
#[derive(Debug)]
pub(super) enum Denied {
    /// No or unknown token (401).
    Unauthorized(&'static str),
    /// The key lacks a scope (403).
    Forbidden(String),
    /// The key is over its rate (429 with Retry-After).
    RateLimited {
        /// Seconds until a request would be accepted.
        retry_after: u64,
        /// Reason text.
        reason: String,
    },
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Unauthorized(r) => error(StatusCode::UNAUTHORIZED, r, None),
            Denied::Forbidden(r) => error(StatusCode::FORBIDDEN, r, None),
            Denied::RateLimited {
                retry_after,
                reason,
            } => {
                let mut resp = error(StatusCode::TOO_MANY_REQUESTS, reason, None);
                if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
                resp
            }
        }
    }
}

/// Constant-time comparison, so token checks leak no prefix timing.
fn same(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

/// Identifies the calling key, checks the caller's address against the key's allow-list and
/// charges one request to its bucket (401, 403 or 429 otherwise).
fn authenticate(
    ctx: &Ctx,
    keys: &ApiKeys,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> Result<usize, Denied> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Denied::Unauthorized(
            "missing Authorization: Bearer <token>",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let mut found = None;
    for (i, k) in keys.0.iter().enumerate() {
        // Compare against every key so timing does not reveal which one matched.
        if same(k.key.token.as_bytes(), token.as_bytes()) {
            found = Some(i);
        }
    }
    let Some(index) = found else {
        return Err(Denied::Unauthorized("invalid API token"));
    };
    let key = &keys.0[index];
    if !peer.is_some_and(|ip| key.key.allows(ip)) && !key.key.allow_from.is_empty() {
        let from = peer.map_or_else(|| "an unknown address".to_string(), |ip| ip.to_string());
        tracing::warn!(key = %key.key.name, %from, "API key used from an address outside its allow_from");
        return Err(Denied::Forbidden(format!(
            "key {} may not be used from {from}",
            key.key.name
        )));
    }
    let charged = key.bucket.lock().unwrap_or_else(|p| p.into_inner()).take(
        key.key.rate_per_sec,
        key.key.burst,
        std::time::Instant::now(),
    );
    if let Err(wait) = charged {
        ctx.stats.inc(&ctx.stats.rate_limited_api);
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        return Err(Denied::RateLimited {
            retry_after: secs,
            reason: format!(
                "key {} is limited to {} requests/s; retry in {secs} s",
                key.key.name, key.key.rate_per_sec
            ),
        });
    }
    Ok(index)
}

/// The API key of the request, authenticated and charged to its rate limit before the
/// handler runs (and before the body is read).
pub(super) struct Caller {
    keys: Arc<ApiKeys>,
    /// Index into `keys`.
    index: usize,
}

impl FromRequestParts<Arc<Ctx>> for Caller {
    type Rejection = Denied;

    async fn from_request_parts(parts: &mut Parts, ctx: &Arc<Ctx>) -> Result<Caller, Denied> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let Some(keys) = parts.extensions.get::<Arc<ApiKeys>>().cloned() else {
            return Err(Denied::Unauthorized("no API keys on this listener"));
        };
        authenticate(ctx, &keys, &parts.headers, peer).map(|index| Caller { keys, index })
    }
}

impl Caller {
    /// 403 unless the caller's key holds `scope`.
    /// The key's name and scopes (`GET /api/v1/key`).
    pub(super) fn key(&self) -> (&str, &[Scope]) {
        let key: &KeyState = &self.keys.0[self.index];
        (&key.key.name, &key.key.scopes)
    }

    pub(super) fn require(&self, scope: Scope) -> Result<(), Denied> {
        let key: &KeyState = &self.keys.0[self.index];
        if key.key.scopes.contains(&scope) {
            return Ok(());
        }
        let name = serde_json::to_value(scope)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        Err(Denied::Forbidden(format!(
            "key {} lacks the {name:?} scope",
            key.key.name
        )))
    }
}
