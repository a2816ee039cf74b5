//! The group commit: staged writes made durable in one batch, then publishers answered and
//! the committed messages fanned out, in position order per stream.

use super::*;

impl Engine {
    /// Commits what is staged, then answers publishers and fans messages out.
    pub(super) fn flush(&mut self) {
        let mut stage = std::mem::take(&mut self.stage);
        if stage.ops.is_empty() && stage.metas.is_empty() && stage.done.is_empty() {
            return;
        }
        for (stream, meta) in &stage.metas {
            stage.ops.push(Op::Put(meta_key(stream), meta.encode()));
        }
        let result = if stage.ops.is_empty() {
            Ok(())
        } else {
            let started = Instant::now();
            let result = self.kv.apply(&stage.ops);
            let micros = started.elapsed().as_micros() as u64;
            self.stats.add(&self.stats.store_commit_micros, micros);
            self.stats.commit_latency.observe_micros(micros);
            self.stats.inc(&self.stats.store_commits);
            result
        };
        self.stats
            .storage_failing
            .store(result.is_err(), std::sync::atomic::Ordering::Relaxed);
        if let Some(tracer) = &self.stats.tracer {
            let error = result.as_ref().err().map(|e| e.to_string());
            for done in &stage.done {
                if let Done::Service {
                    trace: Some(parent),
                    staged,
                    ..
                } = done
                {
                    tracer.commit(parent, *staged, stage.ops.len(), error.as_deref());
                }
            }
        }
        match result {
            Ok(()) => {
                self.metas.extend(stage.metas);
                let now = self.now.unix_ms;
                for (k, v) in stage.idem {
                    self.idem.insert(k, v, now);
                }
                for done in stage.done {
                    self.complete(done);
                }
            }
            Err(e) => {
                self.stats.inc(&self.stats.store_errors);
                tracing::error!("commit of {} writes failed: {e}", stage.ops.len());
                for done in stage.done {
                    match done {
                        Done::Service {
                            reply, scenario, ..
                        } => {
                            self.stats.inc(&self.stats.failed_by[scenario]);
                            let _ = reply.send(Err(storage(e.clone())));
                        }
                        Done::Conn { conn, seq, .. } => self.send_error(
                            &conn,
                            seq,
                            ErrorCode::STORAGE_UNAVAILABLE,
                            e.to_string(),
                        ),
                    }
                }
            }
        }
    }

    /// Queues each accepted message to its stream's connections, except connection `skip` (a
    /// publisher that asked not to get its own messages back).
    pub(super) fn fan_out(
        &mut self,
        accepted: &mut [Accepted],
        sends: Sends,
        staged: Instant,
        skip: Option<u64>,
        trace: Option<&SpanContext>,
    ) {
        let stamp_us = self
            .hub
            .now_us()
            .saturating_sub(staged.elapsed().as_micros() as u64)
            .max(1);
        for ((stream, frame), a) in sends.into_iter().zip(accepted.iter_mut()) {
            let scenario = stream.scenario();
            let stamp = Stamp {
                accepted_us: stamp_us,
                scenario: scenario as u8,
                ..Stamp::NONE
            };
            let hub = &self.hub;
            let send = |stamp| match &stream {
                StreamKey::User(u) => hub.send_user(u, &frame, stamp),
                StreamKey::Room(r) => hub.send_room_except(r, &frame, stamp, skip),
                StreamKey::Broadcast => hub.broadcast(&frame, stamp),
            };
            let tracer = self.stats.tracer.as_deref();
            let fan = crate::trace::fan_out(tracer, trace, &stream, a.position, stamp, send);
            if let (StreamKey::User(u), true) = (&stream, fan.queued > 0) {
                self.ack_watch
                    .entry(u.clone())
                    .or_insert((a.position, staged));
                if !self.retry.contains_key(u) {
                    self.retry.insert(
                        u.clone(),
                        RetryState {
                            retries: 0,
                            next_at: self.now.at + self.cfg.retry_interval,
                        },
                    );
                }
            }
            a.queued = fan.queued;
            self.stats.inc(&self.stats.accepted_by[scenario]);
            self.stats
                .add(&self.stats.queued_by[scenario], fan.queued as u64);
            self.stats.fanout_latency[scenario].observe_micros(staged.elapsed().as_micros() as u64);
            self.stats
                .add(&self.stats.deliveries_queued, fan.queued as u64);
            self.stats.add(&self.stats.slow_consumers, fan.slow as u64);
            if fan.slow > 0 {
                tracing::warn!(stream = %a.stream, dropped = fan.slow, "slow consumers disconnected");
            }
        }
    }

    /// Counts a committed publish and fans it out; `accepted` gets the queued counts.
    pub(super) fn deliver(
        &mut self,
        accepted: &mut [Accepted],
        sends: Sends,
        staged: Instant,
        skip: Option<u64>,
        trace: Option<&SpanContext>,
    ) {
        if !sends.is_empty() {
            self.stats.inc(&self.stats.messages_accepted);
            self.stats
                .publish_latency
                .observe_micros(staged.elapsed().as_micros() as u64);
        }
        self.fan_out(accepted, sends, staged, skip, trace);
    }

    pub(super) fn complete(&mut self, done: Done) {
        match done {
            Done::Service {
                reply,
                mut accepted,
                sends,
                staged,
                trace,
                ..
            } => {
                self.deliver(&mut accepted, sends, staged, None, trace.as_ref());
                let _ = reply.send(Ok(accepted));
            }
            Done::Conn {
                conn,
                seq,
                mut accepted,
                sends,
                staged,
            } => {
                // PUBLISH_ACK before the publisher's own PUSH, as in cluster mode (SPEC.md §5.8).
                if let Some(a) = accepted.first() {
                    self.send_frame(
                        &conn,
                        seq,
                        Frame::PublishAck(push_protocol::PublishAck {
                            id: a.id,
                            position: a.position,
                            duplicate: a.duplicate,
                        }),
                    );
                }
                let skip = conn.no_echo().then_some(conn.id);
                self.deliver(&mut accepted, sends, staged, skip, None);
            }
        }
    }
}
