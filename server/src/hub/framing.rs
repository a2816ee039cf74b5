//! Server frames wrapped for WebSocket once per message: every WebSocket connection in the
//! server's own encoding gets the same binary message (server-to-client frames are not
//! masked) or, in JSON mode, the same text, instead of each connection's task copying or
//! transcoding the frame for itself. Connections whose client chose its own encoding, TCP
//! connections and long polls get the frame as it was encoded.

use bytes::Bytes;
use push_protocol::ws::Transport;
use push_protocol::{EncodeOptions, Limits};

use super::{Conn, Stamp};

/// What wrapping a frame for a transport needs (the server's codec settings).
#[derive(Debug, Clone, Copy, Default)]
pub struct Framing {
    /// Limits for reading back the server's own frames (JSON mode transcodes them).
    pub limits: Limits,
    /// The server's encoding.
    pub options: EncodeOptions,
}

/// One message's frame and its wrapped forms, made the first time a connection needs them.
pub(super) struct Shared<'a> {
    raw: &'a Bytes,
    framing: &'a Framing,
    binary: Option<Bytes>,
    json: Option<Bytes>,
}

impl<'a> Shared<'a> {
    pub(super) fn new(raw: &'a Bytes, framing: &'a Framing) -> Self {
        Shared {
            raw,
            framing,
            binary: None,
            json: None,
        }
    }

    /// The bytes to queue to `conn` and their stamp (marked already framed when wrapped here).
    pub(super) fn for_conn(&mut self, conn: &Conn, stamp: Stamp) -> (Bytes, Stamp) {
        let Some(transport) = conn.shared_framing().filter(|_| !stamp.framed) else {
            return (self.raw.clone(), stamp);
        };
        let slot = match transport {
            Transport::WsJson => &mut self.json,
            _ => &mut self.binary,
        };
        let (raw, f) = (self.raw, self.framing);
        let bytes = slot.get_or_insert_with(|| transport.wrap(raw.clone(), f.limits, f.options));
        let framed = Stamp {
            framed: true,
            ..stamp
        };
        (bytes.clone(), framed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use push_protocol::{encode_to_bytes, Frame, MessageId, Packet, PayloadFormat, Push, Stream};

    fn conn(id: u64, transport: Transport) -> Conn {
        Conn::new(id, "u".into(), None, 0).with_framing(transport)
    }

    #[test]
    fn one_wrapped_frame_serves_every_websocket_connection_of_a_mode() {
        let push = Push {
            id: MessageId([7; 16]),
            stream: Stream::Room("r".into()),
            position: 3,
            timestamp_ms: 1,
            kind: "k".into(),
            format: PayloadFormat::OPAQUE,
            payload: Bytes::from_static(b"hello"),
        };
        let raw = encode_to_bytes(&Packet::new(9, Frame::Push(push)), &Default::default()).unwrap();
        let framing = Framing::default();
        let mut shared = Shared::new(&raw, &framing);
        let stamp = Stamp::delivery(1);

        let (tcp, s) = shared.for_conn(&conn(1, Transport::Tcp), stamp);
        assert_eq!((tcp.as_ptr(), s.framed), (raw.as_ptr(), false));
        let own = conn(2, Transport::WsBinary).with_client_options(Some(Default::default()), false);
        let (mine, s) = shared.for_conn(&own, stamp);
        assert_eq!(
            (mine.as_ptr(), s.framed),
            (raw.as_ptr(), false),
            "re-encoded by its task"
        );

        let (b1, s) = shared.for_conn(&conn(3, Transport::WsBinary), stamp);
        let (b2, _) = shared.for_conn(&conn(4, Transport::WsBinary), stamp);
        assert!(s.framed && s.scenario == 1);
        assert_eq!(b1.as_ptr(), b2.as_ptr(), "one copy for both");
        let wrap = |t: Transport| t.wrap(raw.clone(), framing.limits, framing.options);
        assert_eq!(b1, wrap(Transport::WsBinary));

        let (j1, _) = shared.for_conn(&conn(5, Transport::WsJson), stamp);
        let (j2, _) = shared.for_conn(&conn(6, Transport::WsJson), stamp);
        assert_eq!(j1.as_ptr(), j2.as_ptr(), "one JSON text for both");
        assert_eq!(j1, wrap(Transport::WsJson));
        assert!(String::from_utf8_lossy(&j1).contains("hello"));

        // Frames already in the transport's framing (a PONG) are passed on as they are.
        let (pong, s) = shared.for_conn(&conn(7, Transport::WsBinary), Stamp::FRAMED);
        assert_eq!((pong.as_ptr(), s.framed), (raw.as_ptr(), true));
    }
}
