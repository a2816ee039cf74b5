//! The TCP accept loop: global connection limit, backoff on accept errors, one task per socket.

use std::sync::Arc;
use std::time::Duration;

use push_protocol::{encode_to_bytes, ErrorBody, ErrorCode, Frame, Packet};
use tokio::net::{TcpListener, TcpStream};

use crate::context::Ctx;
use crate::session;

/// Accepts until shutdown; every socket gets its own task, counted in `ctx.open` until it ends.
pub(crate) async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let admission = match ctx.admit(peer) {
                    Ok(a) => a,
                    Err((code, reason)) => {
                        refuse(stream, code, reason);
                        continue;
                    }
                };
                // No TaskTracker: its token would push the task cell past 128 bytes; the
                // open-socket count serves to wait for the drain instead.
                tokio::spawn(session::serve(stream, peer, admission));
            }
            Err(e) => {
                // EMFILE and friends: wait for descriptors to free up instead of spinning.
                tracing::warn!("accept failed: {e}; retrying in {} ms", backoff.as_millis());
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    tracing::info!("tcp listener stopped");
}

/// Best-effort AUTH_ERROR for a refused socket; never blocks the accept loop.
fn refuse(stream: TcpStream, code: ErrorCode, reason: String) {
    let frame = Frame::AuthError(ErrorBody { code, reason });
    if let Ok(bytes) = encode_to_bytes(&Packet::new(0, frame), &Default::default()) {
        let _ = stream.try_write(&bytes);
    }
}
