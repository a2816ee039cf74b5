//! The admin API's questions about connections, answered by one node (`answer_local`) or
//! across nodes: presence, room member counts, server-side room membership and
//! disconnecting a user act on every node's connections. The asking node publishes the
//! request on the deployment's control subject with a reply inbox; every node (itself
//! included) answers for the connections it holds, and the asker adds the answers up. Nodes
//! are not registered anywhere, so the asker collects answers until none has come for a
//! short while (bounded by a total wait).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::StreamExt;
use serde::{Deserialize, Serialize};

use super::engine::ClusterEngine;
use crate::hub::Hub;
use crate::stats::{NodeStats, Stats, TRANSPORTS};
use crate::stream::StreamKey;

/// The longest the asker waits for answers.
const TOTAL_WAIT: Duration = Duration::from_secs(1);
/// Answers are complete once none has arrived for this long.
const QUIET: Duration = Duration::from_millis(100);

/// A question every node answers for its own connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Control {
    /// The user's connections.
    Presence {
        /// User id.
        user: String,
    },
    /// Close every connection of the user with KICKED.
    Kick {
        /// User id.
        user: String,
    },
    /// Members of a room.
    RoomSize {
        /// Room name.
        room: String,
    },
    /// Every connection of the user joins the room.
    JoinUser {
        /// User id.
        user: String,
        /// Room name.
        room: String,
    },
    /// The node's figures (`GET /api/v1/stats`).
    Stats,
    /// Every connection of the user leaves the room.
    LeaveUser {
        /// User id.
        user: String,
        /// Room name.
        room: String,
    },
}

/// One node's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Answer {
    /// Connections counted (or acted on) on that node.
    pub count: usize,
    /// Device labels of the user's connections (presence).
    #[serde(default)]
    pub devices: Vec<String>,
    /// The answering node's name (cluster mode).
    #[serde(default)]
    pub node: String,
    /// The node's figures (stats).
    #[serde(default)]
    pub stats: Option<Box<NodeStats>>,
    /// The user's connections on that node (presence).
    #[serde(default)]
    pub sessions: Vec<SessionInfo>,
}

/// One connection of a user, as presence describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Connection id (unique per node).
    pub id: u64,
    /// `tcp`, `websocket` or `long_poll`.
    pub transport: String,
    /// Device label, when the token or HELLO named one.
    pub device: Option<String>,
    /// Protocol version negotiated.
    pub version: u16,
    /// Seconds since the connection was admitted.
    pub connected_for_s: u64,
    /// The node holding it (cluster mode).
    #[serde(default)]
    pub node: String,
}

/// This node's answer to `q` for the connections it holds (the whole answer on a single
/// node; one node's share in a cluster).
pub fn answer_local(hub: &Hub, stats: &Stats, q: &Control) -> Answer {
    let count = match q {
        Control::Presence { user } => {
            let conns = hub.user_connections(user);
            let devices = conns
                .iter()
                .filter_map(|c| c.device().map(str::to_string))
                .collect();
            let now_s = hub.now_ms() / 1000;
            let sessions = conns
                .iter()
                .map(|c| SessionInfo {
                    id: c.id,
                    transport: TRANSPORTS
                        .get(c.transport())
                        .copied()
                        .unwrap_or("tcp")
                        .to_string(),
                    device: c.device().map(str::to_string),
                    version: c.version(),
                    connected_for_s: now_s.saturating_sub(c.connected_s()),
                    node: String::new(),
                })
                .collect();
            return Answer {
                count: conns.len(),
                devices,
                sessions,
                ..Answer::default()
            };
        }
        Control::Kick { user } => {
            let n = hub.kick(user);
            stats.add(&stats.kicked, n as u64);
            n
        }
        Control::Stats => {
            return Answer {
                stats: Some(Box::new(NodeStats::read(stats, hub.room_count() as u64))),
                ..Answer::default()
            }
        }
        Control::RoomSize { room } => hub.room_size(room),
        Control::JoinUser { user, room } => hub.join_user(user, room),
        Control::LeaveUser { user, room } => hub.leave_user(user, room),
    };
    Answer {
        count,
        ..Answer::default()
    }
}

impl ClusterEngine {
    fn control_subject(&self) -> String {
        self.names.control()
    }

    /// Answers control requests for this node's connections until the connection closes.
    pub(crate) async fn start_control(self: &Arc<Self>) -> Result<(), async_nats::SubscribeError> {
        let mut sub = self.client.subscribe(self.control_subject()).await?;
        let engine = self.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(reply) = msg.reply.clone() else {
                    continue;
                };
                let Ok(q) = serde_json::from_slice::<Control>(&msg.payload) else {
                    continue;
                };
                let answer = engine.answer(&q);
                if let Ok(bytes) = serde_json::to_vec(&answer) {
                    let _ = engine.client.publish(reply, Bytes::from(bytes)).await;
                }
            }
        });
        Ok(())
    }

    fn answer(self: &Arc<Self>, q: &Control) -> Answer {
        let mut answer = answer_local(&self.hub, &self.stats, q);
        answer.node = self.settings.node.clone();
        if let Some(stats) = &mut answer.stats {
            stats.node = answer.node.clone();
        }
        for s in &mut answer.sessions {
            s.node = answer.node.clone();
        }
        if let Control::JoinUser { room, .. } = q {
            if answer.count > 0 {
                // The room's actor delivers to the new members from now on.
                self.watch_room(&StreamKey::room(room));
            }
        }
        answer
    }

    /// Asks every node and returns their answers.
    pub async fn ask_all(&self, q: &Control) -> Result<Vec<Answer>, String> {
        let payload = serde_json::to_vec(q).map_err(|e| e.to_string())?;
        let inbox = self.client.new_inbox();
        let mut sub = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| e.to_string())?;
        self.client
            .publish_with_reply(self.control_subject(), inbox, Bytes::from(payload))
            .await
            .map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + TOTAL_WAIT;
        let mut answers = Vec::new();
        loop {
            let wait = QUIET.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            match tokio::time::timeout(wait, sub.next()).await {
                Ok(Some(m)) => {
                    if let Ok(a) = serde_json::from_slice::<Answer>(&m.payload) {
                        answers.push(a);
                    }
                }
                _ => break,
            }
        }
        if answers.is_empty() {
            return Err("no node answered (is NATS reachable?)".into());
        }
        Ok(answers)
    }
}
