//! Long-poll fallback (`GET /api/v1/poll`, SPEC.md §13): the last resort for clients that can
//! open neither TCP nor WebSocket. Each poll is a short-lived connection in the hub: it
//! acknowledges the user stream up to `after`, receives the replay of everything still
//! unacknowledged (and broadcast or rooms after the positions given), waits for live messages
//! up to the deadline, and returns them with their positions. Nothing is acknowledged until
//! the next poll names its position, so the delivery guarantees are those of a connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::BytesMut;
use push_protocol::{ErrorCode, Frame, FrameCodec, Stream, StreamPos};
use serde::Deserialize;
use serde_json::{json, Value};
use thin_vec::ThinVec;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::error;
use crate::context::Ctx;
use crate::delivery::ids::unix_ms;
use crate::hub::{Conn, Output, Queued};
use crate::stream::{may_join, valid_room_name};
use push_protocol::ws::json::{push_json, stream_name};

/// Most messages one poll returns unless `limit` asks for fewer.
const MAX_LIMIT: usize = 1000;

/// Query of a poll.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PollQuery {
    /// Last user-stream position processed (acknowledges up to it).
    #[serde(default)]
    after: u64,
    /// Receive broadcast messages after this position.
    broadcast_after: Option<u64>,
    /// Rooms with the last position processed in each: `lobby:12,ops:0`.
    rooms: Option<String>,
    /// Longest wait in ms (capped at `poll_max_wait_ms`).
    wait_ms: Option<u64>,
    /// Most messages to return (default and cap 1000).
    limit: Option<usize>,
    /// Access token, for clients that cannot set the Authorization header.
    token: Option<String>,
    /// The epoch the positions belong to (SPEC.md §5.2); 0 or absent: none known.
    #[serde(default)]
    epoch: u64,
}

/// Index of long-poll in `stats::TRANSPORTS`.
const LONG_POLL: usize = 2;

/// Removes the poll's connection from the hub however the request ends.
struct Registered(Arc<Ctx>, Arc<Conn>);

impl Registered {
    fn new(ctx: Arc<Ctx>, conn: Arc<Conn>) -> Self {
        ctx.stats.inc(&ctx.stats.connections[LONG_POLL]);
        Registered(ctx, conn)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.hub.unregister(&self.1);
        self.0.stats.connections[LONG_POLL].fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn parse_rooms(s: &str) -> Result<Vec<(String, u64)>, String> {
    let mut out = Vec::new();
    for item in s.split(',').filter(|i| !i.is_empty()) {
        let (room, pos) = item
            .rsplit_once(':')
            .ok_or_else(|| format!("rooms item \"{item}\" is not room:position"))?;
        valid_room_name(room).map_err(|e| format!("rooms: {e}"))?;
        let pos = pos
            .parse()
            .map_err(|_| format!("rooms position \"{pos}\" is not an integer"))?;
        out.push((room.to_string(), pos));
    }
    Ok(out)
}

/// `GET /api/v1/poll`.
pub(super) async fn poll(
    State(ctx): State<Arc<Ctx>>,
    headers: HeaderMap,
    query: Result<Query<PollQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text(), Some("query")),
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(tok) = bearer.or(q.token.as_deref()) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing user token: Authorization: Bearer <token> or ?token=",
            None,
        );
    };
    let claims = match ctx.tokens.verify(tok, unix_ms() / 1000) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::UNAUTHORIZED, e.public_reason(), Some("token")),
    };
    let rooms = match q.rooms.as_deref().map(parse_rooms).transpose() {
        Ok(r) => r.unwrap_or_default(),
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason, Some("rooms")),
    };
    if rooms.len() > ctx.config.max_rooms_per_connection {
        return error(
            StatusCode::BAD_REQUEST,
            "more rooms than max_rooms_per_connection",
            Some("rooms"),
        );
    }
    let limit = q.limit.unwrap_or(MAX_LIMIT).clamp(1, MAX_LIMIT);
    let wait = Duration::from_millis(
        q.wait_ms
            .unwrap_or(u64::MAX)
            .min(ctx.config.poll_max_wait_ms),
    );

    let plan = Plan {
        grants: claims.rooms,
        user: claims.sub,
        after: q.after,
        broadcast_after: q.broadcast_after,
        rooms,
        limit,
        wait,
        epoch: q.epoch,
    };
    // The poll runs in a task of its own so that a client hanging up never interrupts the
    // registration half-way (which would leave a connection in the hub); the guard tells the
    // task to stop waiting when this request goes away.
    let cancel = CancellationToken::new();
    let _stop_when_dropped = cancel.clone().drop_guard();
    match tokio::spawn(run(ctx, plan, cancel)).await {
        Ok(r) => r,
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("poll failed: {e}"),
            None,
        ),
    }
}

/// A validated poll.
struct Plan {
    user: String,
    grants: Vec<String>,
    after: u64,
    broadcast_after: Option<u64>,
    rooms: Vec<(String, u64)>,
    limit: usize,
    wait: Duration,
    epoch: u64,
}

/// Registers the poll's connection, collects messages until there are some (or the wait, the
/// request or the server ends), then unregisters.
async fn run(ctx: Arc<Ctx>, plan: Plan, cancel: CancellationToken) -> Response {
    let Plan {
        user,
        grants,
        after,
        broadcast_after,
        rooms,
        limit,
        wait,
        epoch,
    } = plan;
    let conn = Arc::new(
        Conn::with_grants(
            ctx.next_conn_id(),
            user.as_str().into(),
            Some("long-poll".into()),
            grants,
            ctx.hub.now_ms(),
        )
        // Its JSON carries what version 2 adds (transient messages).
        .with_version(2)
        .with_transport(LONG_POLL),
    );
    let restricted = &ctx.config.restricted_room_prefixes;
    let grants = conn.room_grants();
    if let Some((room, _)) = rooms.iter().find(|(r, _)| !may_join(grants, r, restricted)) {
        let reason = format!("room {room} is restricted and the token grants no access to it");
        return error(StatusCode::FORBIDDEN, reason, Some("rooms"));
    }
    let mut resume = vec![StreamPos {
        stream: Stream::User,
        position: after,
    }];
    if let Some(b) = broadcast_after {
        resume.push(StreamPos {
            stream: Stream::Broadcast,
            position: b,
        });
    }
    resume.extend(rooms.iter().map(|(room, after)| StreamPos {
        stream: Stream::Room(room.clone()),
        position: *after,
    }));
    // Positions of another epoch: GAPs, and every stream from its start.
    ctx.delivery.restart_positions(&conn, epoch, &mut resume);
    let at = |s: &Stream| resume.iter().find(|p| &p.stream == s).map(|p| p.position);
    let after = at(&Stream::User).unwrap_or(0);
    let broadcast_after = broadcast_after.and(at(&Stream::Broadcast));
    let rooms: Vec<(String, u64)> = rooms
        .into_iter()
        .map(|(room, _)| {
            let after = at(&Stream::Room(room.clone())).unwrap_or(0);
            (room, after)
        })
        .collect();
    resume.retain(|p| !matches!(p.stream, Stream::Room(_)));
    if let Err(code) = ctx.delivery.attach(conn.clone(), resume).await {
        let status = if code == ErrorCode::TOO_MANY_USER_CONNECTIONS {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return error(status, code.description(), None);
    }
    let _registered = Registered::new(ctx.clone(), conn.clone());
    ctx.stats.inc(&ctx.stats.long_polls);
    for (room, after) in &rooms {
        ctx.delivery
            .join(conn.clone(), room.clone(), Some(*after), 0);
    }
    let mut positions: BTreeMap<String, u64> = BTreeMap::new();
    positions.insert(stream_name(&Stream::User), after);
    if let Some(b) = broadcast_after {
        positions.insert(stream_name(&Stream::Broadcast), b);
    }
    for (room, after) in &rooms {
        positions.insert(stream_name(&Stream::Room(room.clone())), *after);
    }
    let mut out = Collected {
        messages: Vec::new(),
        gaps: Vec::new(),
        positions,
        joins_pending: rooms.len(),
        closed: None,
        limit,
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut codec = FrameCodec::new(ctx.limits, *ctx.delivery.options());
    loop {
        let mut batch = ThinVec::new();
        let next = std::future::poll_fn(|cx| conn.poll_output(cx, &mut batch, 64));
        let output = tokio::select! {
            o = next => o,
            _ = tokio::time::sleep_until(deadline) => break,
            _ = ctx.shutdown.cancelled() => break,
            _ = cancel.cancelled() => break,
        };
        match output {
            Output::Frames => {
                // A long poll's "write" is the frame joining the response.
                if let Some(tracer) = &ctx.stats.tracer {
                    for q in batch.iter().filter(|q| q.stamp.trace != 0) {
                        tracer.written(q.stamp.trace, &conn);
                    }
                }
                out.take(&mut codec, batch)
            }
            Output::Close(order) => {
                out.closed = Some(order.code);
                break;
            }
        }
        if out.full() || (!out.messages.is_empty() && out.joins_pending == 0) {
            break;
        }
    }
    let closed = out.closed.map(|c| json!({"code": c.0, "name": c.name()}));
    (
        StatusCode::OK,
        Json(json!({
            "user": user,
            "epoch": ctx.delivery.epoch(),
            "messages": out.messages,
            "positions": out.positions,
            "gaps": out.gaps,
            "closed": closed,
        })),
    )
        .into_response()
}

/// What a poll has gathered so far.
struct Collected {
    messages: Vec<Value>,
    gaps: Vec<Value>,
    positions: BTreeMap<String, u64>,
    joins_pending: usize,
    closed: Option<ErrorCode>,
    limit: usize,
}

impl Collected {
    fn full(&self) -> bool {
        self.messages.len() >= self.limit
    }

    /// Decodes queued frames; messages past the limit are left for the next poll (they are
    /// not acknowledged, so they are replayed).
    fn take(&mut self, codec: &mut FrameCodec, batch: ThinVec<Queued>) {
        for q in batch {
            let mut src = BytesMut::from(&q.frame[..]);
            while let Ok(Some(packet)) = codec.decode(&mut src) {
                match packet.frame {
                    // Transient (position 0): nothing to track or resume from.
                    Frame::Push(p) if !self.full() && p.position == 0 => {
                        self.messages.push(push_json(&p));
                    }
                    Frame::Push(p) if !self.full() => {
                        let name = stream_name(&p.stream);
                        // A retry can queue a message this poll already holds.
                        if self
                            .positions
                            .get(&name)
                            .is_some_and(|&seen| p.position <= seen)
                        {
                            continue;
                        }
                        self.positions.insert(name, p.position);
                        self.messages.push(push_json(&p));
                    }
                    Frame::Gap(g) => self.gaps.push(json!({
                        "stream": stream_name(&g.stream),
                        "requested_after": g.requested_after,
                        "first_available": g.first_available,
                    })),
                    Frame::Ok(_) | Frame::Error(_) => {
                        self.joins_pending = self.joins_pending.saturating_sub(1)
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_parameter() {
        assert_eq!(
            parse_rooms("lobby:3,a:b:0").unwrap(),
            vec![("lobby".into(), 3), ("a:b".into(), 0)]
        );
        assert!(parse_rooms("lobby").is_err());
        assert!(parse_rooms("bad room:1").is_err());
        assert!(parse_rooms("lobby:x").is_err());
    }
}
