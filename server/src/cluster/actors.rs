//! The node's table of user actors. An actor runs (a task and its queue, ~2 KB) only while it
//! has work: a request to handle, unacknowledged messages to resend, or an ack record to
//! store. Otherwise it sleeps as the few numbers it needs to go on (what it delivered, the
//! ack record, what it purged), and the next request wakes it without reading anything from
//! JetStream. With 100,000 idle users connected, that is the difference between ~3.2 KB and
//! ~1 KB per connection in cluster mode (BENCHMARKS.md).
//!
//! Every request is queued under the table's lock, and an actor goes to sleep or retires
//! under the same lock only when its queue is empty, so no request is ever lost between the
//! two.

use std::sync::Arc;
use std::time::Duration;

use push_protocol::ErrorCode;
use tokio::sync::mpsc;

use super::acks::{AckState, Purged};
use super::engine::{ClusterEngine, Tail};
use super::user::{run, Cmd};

/// The way to a running actor.
pub(crate) type Handle = mpsc::UnboundedSender<Cmd>;

/// A user's actor as the node holds it.
pub(crate) enum Slot {
    /// Running: requests go to its queue.
    Awake(Handle),
    /// Asleep with what it needs to wake.
    Asleep(Asleep),
}

/// What a sleeping actor keeps.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Asleep {
    /// The last message delivered to the node's connections.
    pub(crate) delivered: Tail,
    /// The user's acknowledgement record as stored.
    pub(crate) ack: AckState,
    /// What of the stream it purged.
    pub(crate) purged: Purged,
}

/// Which actors a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Start one when the node has none (a connection attaching or acknowledging).
    Always,
    /// Only an actor the node has, awake or asleep (live messages, departures, checks: a
    /// user without an actor has no connection here).
    IfKnown,
}

/// Users per step of the periodic tail check, which spreads its steps over half the
/// check interval so 100,000 users do not read their tails in the same second.
const SWEEP_STEP: usize = 256;

impl ClusterEngine {
    /// Hands `cmd` to the user's actor: queued to a running one, waking a sleeping one, or
    /// starting one when `start` allows.
    pub(crate) fn to_user(
        self: &Arc<Self>,
        user: &str,
        cmd: Cmd,
        start: Start,
    ) -> Result<(), ErrorCode> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let woken = match users.get(user) {
            Some(Slot::Awake(h)) => match h.send(cmd) {
                Ok(()) => return Ok(()),
                // The actor ended without leaving the table (it panicked): start afresh.
                Err(mpsc::error::SendError(back)) => {
                    return self.start(&mut users, user, back, None)
                }
            },
            Some(Slot::Asleep(a)) => Some(*a),
            None if start == Start::Always => None,
            None => {
                // No actor here: keep the cached tail current, or the next actor to start
                // (a connection of the user arriving) would begin behind this message.
                if let Cmd::Live(msg) = &cmd {
                    self.note_live_tail(user, msg);
                }
                return Ok(());
            }
        };
        self.start(&mut users, user, cmd, woken)
    }

    fn start(
        self: &Arc<Self>,
        users: &mut std::collections::HashMap<String, Slot>,
        user: &str,
        cmd: Cmd,
        from: Option<Asleep>,
    ) -> Result<(), ErrorCode> {
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(cmd).map_err(|_| ErrorCode::SHUTTING_DOWN)?;
        users.insert(user.to_string(), Slot::Awake(tx));
        tokio::spawn(run(self.clone(), user.to_string(), rx, from));
        Ok(())
    }

    /// Puts the user's actor to sleep unless a request is waiting for it (then it must go
    /// on): true when it may end.
    pub(crate) fn sleep_if_idle(
        &self,
        user: &str,
        rx: &mpsc::UnboundedReceiver<Cmd>,
        state: Asleep,
    ) -> bool {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if !rx.is_empty() {
            return false;
        }
        users.insert(user.to_string(), Slot::Asleep(state));
        true
    }

    /// Ends the user's actor when the node holds none of their connections and nothing is
    /// waiting for it.
    pub(crate) fn retire_if_idle(&self, user: &str, rx: &mpsc::UnboundedReceiver<Cmd>) -> bool {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if !rx.is_empty() || !self.hub.user_connections(user).is_empty() {
            return false;
        }
        users.remove(user);
        true
    }

    /// How many user actors are running and how many sleep.
    pub fn actor_counts(&self) -> (usize, usize) {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let awake = users
            .values()
            .filter(|s| matches!(s, Slot::Awake(_)))
            .count();
        (awake, users.len() - awake)
    }

    /// Asks every user actor to compare what it delivered with the stored tail: all at once
    /// after a resync (live messages may have been missed), spread over `spread` for the
    /// periodic check, which also purges and retires actors whose users left unnoticed.
    pub(crate) async fn check_users(self: &Arc<Self>, periodic: bool, spread: Duration) {
        let names: Vec<String> = {
            let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            users.keys().cloned().collect()
        };
        let steps = names.len().div_ceil(SWEEP_STEP).max(1) as u32;
        for chunk in names.chunks(SWEEP_STEP) {
            for user in chunk {
                let _ = self.to_user(user, Cmd::CatchUp { periodic }, Start::IfKnown);
            }
            if periodic {
                tokio::time::sleep(spread / steps).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
    }

    /// Runs the node-wide user checks: on every resync, and every `tail_check`.
    pub(crate) fn start_user_checks(self: &Arc<Self>) {
        let engine = Arc::downgrade(self);
        let mut resync = self.resync.subscribe();
        let every = self.settings.tail_check;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                let periodic = tokio::select! {
                    _ = tick.tick() => true,
                    changed = resync.changed() => match changed {
                        Ok(()) => false,
                        Err(_) => return,
                    },
                };
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                engine.check_users(periodic, every / 2).await;
            }
        });
    }
}
