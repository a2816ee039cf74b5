//! A receiver that survives its node: the SDK's reconnecting client (resume from its
//! positions, deduplication by id, acknowledgements), seen through the same `PushSource` the
//! plain receivers use, counting every session after the first.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use push_client::protocol::{Frame, Push};
use push_client::{Client, ClientConfig, Event};

use crate::spec::unix_micros;
use crate::worker::PushSource;

/// Reconnects of one worker's resilient receivers.
#[derive(Default)]
pub(crate) struct Reconnects {
    /// Sessions after the first, all receivers together.
    pub count: Cell<u64>,
    /// GAP notices.
    pub gaps: Cell<u64>,
    /// Time of the latest reconnect, µs since the Unix epoch.
    pub last_us: Cell<u64>,
}

/// One reconnecting receiver.
pub(crate) struct Resilient {
    client: Client,
    counts: Rc<Reconnects>,
}

impl Resilient {
    /// Connects (the first session must succeed; later ones are retried by the client).
    pub(crate) async fn connect(
        addr: SocketAddr,
        token: String,
        local_ip: Option<std::net::IpAddr>,
        counts: Rc<Reconnects>,
    ) -> Result<Resilient, String> {
        let mut cfg = ClientConfig::new(addr, token);
        cfg.backoff_min = Duration::from_millis(100);
        cfg.backoff_max = Duration::from_secs(2);
        cfg.local_ip = local_ip;
        let client = tokio::time::timeout(Duration::from_secs(30), Client::connect(cfg))
            .await
            .map_err(|_| "no session within 30 s".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(Resilient { client, counts })
    }
}

impl PushSource for Resilient {
    async fn join(&mut self, room: String) -> Result<(), String> {
        self.client
            .join(&room)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn next_frame(&mut self) -> Result<Frame, String> {
        loop {
            match self.client.next_event().await {
                Some(Event::Message(m)) => return Ok(Frame::Push(Push::from(m))),
                // `connect` took the first session's event: every one seen here is a reconnect.
                Some(Event::Connected { .. }) => {
                    let c = &self.counts;
                    c.count.set(c.count.get() + 1);
                    c.last_us.set(unix_micros());
                }
                Some(Event::Gap { .. }) => self.counts.gaps.set(self.counts.gaps.get() + 1),
                Some(Event::Disconnected { error, fatal: true }) => return Err(error.to_string()),
                Some(Event::Disconnected { .. }) | Some(Event::Recalled { .. }) => {}
                None => return Err("the client stopped".into()),
            }
        }
    }

    /// The client acknowledges by itself (auto-ack), after the application took the message.
    async fn send_frame(&mut self, _frame: Frame) -> Result<(), String> {
        Ok(())
    }
}
