//! JetStream requests the async-nats client has no helper for, in one place: atomic batch
//! publish (nats-server >= 2.12, a stream with `allow_atomic_publish`: every message of a
//! batch is stored or none is) with per-subject compare-and-set, and a direct read of a
//! subject's last message. Errors are classified into what a caller acts on: a lost race
//! (re-read and retry), the engine being unavailable (refuse with 503 and retry later), or
//! anything else.

use std::time::Duration;

use async_nats::jetstream::stream::DirectGetErrorKind;
use async_nats::{Client, HeaderMap, RequestErrorKind};
use bytes::Bytes;
use serde::Deserialize;

/// Header: the publish succeeds only if the subject's last stored message has this stream
/// sequence (0 = the subject has none).
pub const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
/// Header: the batch a message belongs to (at most 64 characters).
pub const BATCH_ID: &str = "Nats-Batch-Id";
/// Header: the message's 1-based place in its batch.
pub const BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
/// Header: set to `1` on the last message, which commits the batch.
pub const BATCH_COMMIT: &str = "Nats-Batch-Commit";
/// The server's cap on messages per atomic batch.
pub const MAX_BATCH: usize = 1000;

/// JetStream API error codes of a failed sequence expectation: 10071 with the stored
/// sequence in its text, 10164 without (the form a batch's check answers with).
const ERR_WRONG_LAST_SEQUENCE: [u64; 2] = [10071, 10164];
/// JetStream API error code of a batch refused because too many are in flight on the stream
/// (the server allows 50 per stream): retry shortly.
const ERR_TOO_MANY_INFLIGHT: u64 = 10210;

/// One message to store.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Subject (decides the stream and the per-subject sequence).
    pub subject: String,
    /// Headers of our own (positions, ids) plus any expectation.
    pub headers: HeaderMap,
    /// Body.
    pub payload: Bytes,
}

impl Outbound {
    /// A message to `subject` with no headers.
    pub fn new(subject: impl Into<String>, payload: Bytes) -> Outbound {
        Outbound {
            subject: subject.into(),
            headers: HeaderMap::new(),
            payload,
        }
    }

    /// Stored only if the subject's last message has stream sequence `seq` (0: none yet).
    pub fn expect_last_subject_sequence(mut self, seq: u64) -> Outbound {
        self.headers
            .insert(EXPECTED_LAST_SUBJECT_SEQUENCE, seq.to_string().as_str());
        self
    }
}

/// Why a JetStream request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsError {
    /// A compare-and-set expectation failed: someone else wrote first. Re-read and retry.
    #[error("lost a race: {0}")]
    WrongLastSequence(String),
    /// The engine cannot answer now (no responders, timeout, no quorum, connection lost):
    /// nothing is known to be stored; retry later.
    #[error("JetStream unavailable: {0}")]
    Unavailable(String),
    /// Any other API error (a bad request, a stream misconfigured).
    #[error("JetStream error {err_code}: {description}")]
    Api {
        /// JetStream's error code.
        err_code: u64,
        /// Its description.
        description: String,
    },
    /// The batch is empty or over [`MAX_BATCH`], or the answer is not what a commit returns.
    #[error("invalid batch: {0}")]
    Invalid(String),
}

/// The answer to a committed batch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BatchAck {
    /// The stream that stored it.
    pub stream: String,
    /// Stream sequence of the batch's last message (the others precede it contiguously).
    #[serde(rename = "seq")]
    pub sequence: u64,
    /// The batch id.
    #[serde(rename = "batch", default)]
    pub batch_id: String,
    /// Messages stored.
    #[serde(rename = "count", default)]
    pub count: u64,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    code: u64,
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Reply {
    Err { error: ApiError },
    Ack(BatchAck),
}

/// Classifies a JetStream API error answer.
fn api_error(e: ApiError) -> JsError {
    if ERR_WRONG_LAST_SEQUENCE.contains(&e.err_code) {
        return JsError::WrongLastSequence(e.description);
    }
    // 503: JetStream not ready or the stream has no leader (no quorum).
    if e.code == 503 || e.err_code == ERR_TOO_MANY_INFLIGHT {
        return JsError::Unavailable(e.description);
    }
    JsError::Api {
        err_code: e.err_code,
        description: e.description,
    }
}

/// Reads a publish reply: a commit's ack, an empty flow-control ack (`Ok(None)`), or an error.
fn parse_reply(payload: &[u8]) -> Result<Option<BatchAck>, JsError> {
    if payload.is_empty() {
        return Ok(None);
    }
    match serde_json::from_slice::<Reply>(payload) {
        Ok(Reply::Ack(ack)) => Ok(Some(ack)),
        Ok(Reply::Err { error }) => Err(api_error(error)),
        Err(e) => Err(JsError::Invalid(format!(
            "unreadable reply {:?}: {e}",
            String::from_utf8_lossy(payload)
        ))),
    }
}

/// Adds the batch headers to message `seq` (1-based) of batch `id`.
fn batch_headers(headers: &mut HeaderMap, id: &str, seq: usize, commit: bool) {
    headers.insert(BATCH_ID, id);
    headers.insert(BATCH_SEQUENCE, seq.to_string().as_str());
    if commit {
        headers.insert(BATCH_COMMIT, "1");
    }
}

/// A fresh batch id, unique across processes: a per-process random prefix and a counter
/// (32 hex digits; the server allows 64 characters).
fn batch_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(crate::delivery::ids::random_u64);
    format!("{prefix:016x}{:016x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn request_error(e: async_nats::RequestError) -> JsError {
    match e.kind() {
        RequestErrorKind::NoResponders | RequestErrorKind::TimedOut => {
            JsError::Unavailable(e.to_string())
        }
        _ => JsError::Unavailable(format!("request failed: {e}")),
    }
}

/// Stores `msgs` as one atomic batch: every message or none. The first message is sent as a
/// request (the server answers once it has accepted the batch's start, so a refusal comes
/// early), the middle ones without waiting, the last one commits and returns the ack.
/// A per-subject expectation that fails anywhere in the batch fails the whole batch with
/// [`JsError::WrongLastSequence`].
pub async fn publish_atomic(
    client: &Client,
    msgs: Vec<Outbound>,
    timeout: Duration,
) -> Result<BatchAck, JsError> {
    if msgs.is_empty() || msgs.len() > MAX_BATCH {
        return Err(JsError::Invalid(format!(
            "{} messages: a batch holds 1 to {MAX_BATCH}",
            msgs.len()
        )));
    }
    let id = batch_id();
    let last = msgs.len();
    for (i, mut m) in msgs.into_iter().enumerate() {
        let seq = i + 1;
        let commit = seq == last;
        batch_headers(&mut m.headers, &id, seq, commit);
        if seq == 1 || commit {
            let req = async_nats::Request::new()
                .headers(m.headers)
                .payload(m.payload)
                .timeout(Some(timeout));
            let reply = client
                .send_request(m.subject, req)
                .await
                .map_err(request_error)?;
            let ack = parse_reply(&reply.payload)?;
            if commit {
                let ack = ack.ok_or_else(|| JsError::Invalid("empty commit reply".into()))?;
                if ack.batch_id != id || ack.count != last as u64 {
                    return Err(JsError::Invalid(format!(
                        "commit ack for batch {:?} of {} messages, sent {id:?} of {last}",
                        ack.batch_id, ack.count
                    )));
                }
                return Ok(ack);
            }
        } else {
            client
                .publish_with_headers(m.subject, m.headers, m.payload)
                .await
                .map_err(|e| JsError::Unavailable(format!("publish failed: {e}")))?;
        }
    }
    unreachable!("the last message commits")
}

/// The first message stored under `subject` at stream sequence `from` or later (a direct
/// read), or `None` when there is none.
pub async fn next_for_subject(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
    from: Option<u64>,
) -> Result<Option<Stored>, JsError> {
    match stream.direct_get_next_for_subject(subject, from).await {
        Ok(m) => Ok(Some(Stored::from(m))),
        Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(None),
        Err(e) => Err(JsError::Unavailable(format!("direct get failed: {e}"))),
    }
}

/// The last message stored under `subject`, read through the stream's leader (a consistent
/// read, unlike a direct get that any replica may answer from behind): for after a lost race.
pub async fn last_for_subject_from_leader(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
) -> Result<Option<Stored>, JsError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(Some(Stored::from(m))),
        Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(e) => Err(JsError::Unavailable(format!(
            "read from the leader failed: {e}"
        ))),
    }
}

/// A stored message as a direct read returns it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its subject.
    pub subject: String,
    /// Its stream sequence.
    pub sequence: u64,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub payload: Bytes,
}

impl From<async_nats::jetstream::message::StreamMessage> for Stored {
    fn from(m: async_nats::jetstream::message::StreamMessage) -> Stored {
        Stored {
            subject: m.subject.to_string(),
            sequence: m.sequence,
            headers: m.headers,
            payload: m.payload,
        }
    }
}

/// The last message stored under `subject`: through the leader when `fresh` (after a lost
/// race a replica may still be behind), otherwise by a direct read.
pub async fn last_for_subject_maybe_fresh(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
    fresh: bool,
) -> Result<Option<Stored>, JsError> {
    if fresh {
        last_for_subject_from_leader(stream, subject).await
    } else {
        last_for_subject(stream, subject).await
    }
}

/// The last message stored under `subject` in `stream` (a direct read, answered by any
/// replica; needs `allow_direct`), or `None` when the subject has none.
pub async fn last_for_subject(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
) -> Result<Option<Stored>, JsError> {
    match stream.direct_get_last_for_subject(subject).await {
        Ok(m) => Ok(Some(Stored::from(m))),
        Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(None),
        Err(e) if matches!(e.kind(), DirectGetErrorKind::TimedOut) => {
            Err(JsError::Unavailable(e.to_string()))
        }
        Err(e) => Err(JsError::Unavailable(format!("direct get failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_headers_mark_place_and_commit() {
        let mut h = HeaderMap::new();
        batch_headers(&mut h, "b1", 3, true);
        assert_eq!(h.get(BATCH_ID).map(|v| v.as_str()), Some("b1"));
        assert_eq!(h.get(BATCH_SEQUENCE).map(|v| v.as_str()), Some("3"));
        assert_eq!(h.get(BATCH_COMMIT).map(|v| v.as_str()), Some("1"));
        let mut h = HeaderMap::new();
        batch_headers(&mut h, "b1", 1, false);
        assert!(h.get(BATCH_COMMIT).is_none());
        let m = Outbound::new("u.a", Bytes::new()).expect_last_subject_sequence(7);
        let v = m
            .headers
            .get(EXPECTED_LAST_SUBJECT_SEQUENCE)
            .map(|v| v.as_str());
        assert_eq!(v, Some("7"));
    }

    #[test]
    fn replies_are_classified() {
        let ack = br#"{"stream":"U","seq":12,"batch":"b1","count":3}"#;
        let got = parse_reply(ack).unwrap().unwrap();
        assert_eq!(
            (got.sequence, got.count, got.batch_id.as_str()),
            (12, 3, "b1")
        );
        assert_eq!(parse_reply(b"").unwrap(), None);
        let race =
            br#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 4"}}"#;
        assert!(matches!(
            parse_reply(race),
            Err(JsError::WrongLastSequence(_))
        ));
        let down = br#"{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}"#;
        assert!(matches!(parse_reply(down), Err(JsError::Unavailable(_))));
        let busy = br#"{"error":{"code":400,"err_code":10210,"description":"atomic publish too many inflight"}}"#;
        assert!(matches!(parse_reply(busy), Err(JsError::Unavailable(_))));
        let other = br#"{"error":{"code":400,"err_code":10174,"description":"atomic publish is disabled"}}"#;
        assert!(matches!(
            parse_reply(other),
            Err(JsError::Api {
                err_code: 10174,
                ..
            })
        ));
        assert!(matches!(parse_reply(b"nope"), Err(JsError::Invalid(_))));
        assert!(batch_id().len() <= 64);
    }
}
