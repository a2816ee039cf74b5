//! How stored messages reach the actors live, and what happens when some may have been
//! missed: one node-wide subscription to what the streams' leaders republish; a resync of
//! every actor (each compares what it delivered with the stored tail) when the NATS
//! connection comes back, a subscription overflows or a stream elects a new leader (a leader
//! that dies between storing and republishing loses the republish); and the hub telling a
//! user's actor that the user's last connection left.

use std::sync::Arc;

use futures_lite::StreamExt;

use super::actors::Start;
use super::engine::ClusterEngine;
use super::user::Cmd;

/// Logs a NATS connection event and asks every actor to resync when live messages may
/// have been missed.
pub(crate) fn on_event(resync: &tokio::sync::watch::Sender<u64>, event: async_nats::Event) {
    use async_nats::Event;
    match event {
        Event::Connected => {
            tracing::info!("cluster mode: connected to NATS; checking every user's tail");
            resync.send_modify(|n| *n += 1);
        }
        Event::SlowConsumer(sid) => {
            tracing::warn!(sid, "cluster mode: live messages dropped (slow subscription); checking every user's tail");
            resync.send_modify(|n| *n += 1);
        }
        Event::Disconnected => {
            tracing::warn!("cluster mode: lost the NATS connection; reconnecting")
        }
        other => tracing::info!("cluster mode: NATS {other}"),
    }
}

impl ClusterEngine {
    /// Receives every user's republished messages on one subscription and hands each to the
    /// actor of its user when this node has one (others are dropped: their users are not
    /// connected here). One subscription per node instead of one per connected user: a
    /// subscription costs ~5 KB of channel here, which was most of a connection's memory in
    /// cluster mode (BENCHMARKS.md); the price is that every node reads every user message.
    pub(crate) async fn start_live_users(
        self: &Arc<Self>,
    ) -> Result<(), async_nats::SubscribeError> {
        let mut sub = self.client.subscribe(self.names.live_users()).await?;
        let engine = self.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(user) = engine.names.user_of_live(msg.subject.as_str()) else {
                    continue;
                };
                let _ = engine.to_user(&user, Cmd::Live(Box::new(msg)), Start::IfKnown);
            }
        });
        Ok(())
    }

    /// Resyncs every actor when a stream elects a new leader.
    pub(crate) async fn watch_leaders(self: &Arc<Self>) -> Result<(), async_nats::SubscribeError> {
        let subject = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.*";
        let mut sub = self.client.subscribe(subject).await?;
        let engine = self.clone();
        let ours = [
            self.names.users_stream.clone(),
            self.names.rooms_stream.clone(),
        ];
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let stream = msg.subject.as_str().rsplit('.').next().unwrap_or("");
                if ours.iter().any(|s| s == stream) {
                    tracing::info!(%stream, "cluster mode: new stream leader; checking every tail");
                    engine.resync.send_modify(|n| *n += 1);
                }
            }
        });
        Ok(())
    }

    /// Tells the hub to report departures: a user's actor retires as soon as the user's last
    /// connection on this node leaves (instead of every actor checking on a timer).
    pub(crate) fn watch_departures(self: &Arc<Self>) {
        let engine = Arc::downgrade(self);
        self.hub.on_user_gone(Box::new(move |user| {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            let _ = engine.to_user(user, Cmd::Left, Start::IfKnown);
        }));
    }
}
