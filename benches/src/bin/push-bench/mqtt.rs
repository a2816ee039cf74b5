//! A minimal MQTT 3.1.1 client for the peer rows (Mosquitto): CONNECT with a clean session,
//! SUBSCRIBE and PUBLISH at QoS 0, PINGREQ as a barrier. Hand-written rather than a crate's
//! client because the harness holds 18,000 of them on shared cores and only needs these
//! packets; the packet layouts are those of the MQTT 3.1.1 standard (OASIS, 2014), §3.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::peer::bad;

/// Largest packet accepted from the broker.
const MAX_PACKET: usize = 1 << 20;

/// A connected MQTT client.
pub(crate) struct MqttConn {
    stream: TcpStream,
    buf: BytesMut,
}

/// What the broker sent.
enum Packet {
    Publish(Bytes),
    ConnAck(u8),
    SubAck(u8),
    PingResp,
    Other,
}

/// Appends the variable-length "remaining length" (§2.2.3).
fn put_len(dst: &mut BytesMut, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        dst.put_u8(b);
        if n == 0 {
            return;
        }
    }
}

fn put_str(dst: &mut BytesMut, s: &[u8]) {
    dst.put_u16(s.len() as u16);
    dst.put_slice(s);
}

/// A whole packet: fixed header byte, length, body.
fn packet(first: u8, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(first);
    put_len(&mut out, body.len());
    out.put_slice(body);
    out
}

/// A QoS 0 PUBLISH of `payload` to `topic`.
pub(crate) fn publish_packet(topic: &str, payload: &[u8]) -> BytesMut {
    let mut body = BytesMut::with_capacity(2 + topic.len() + payload.len());
    put_str(&mut body, topic.as_bytes());
    body.put_slice(payload);
    packet(0x30, &body)
}

/// Splits one whole packet off `buf`, if it holds one.
fn parse(buf: &mut BytesMut) -> io::Result<Option<Packet>> {
    let mut len = 0usize;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7f) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Err(bad("MQTT remaining length over 4 bytes"));
        }
    }
    if len > MAX_PACKET {
        return Err(bad("MQTT packet over 1 MiB"));
    }
    if buf.len() < i + len {
        buf.reserve(i + len - buf.len());
        return Ok(None);
    }
    let first = buf[0];
    buf.advance(i);
    let mut body = buf.split_to(len);
    Ok(Some(match first >> 4 {
        3 => {
            if body.len() < 2 {
                return Err(bad("short MQTT PUBLISH"));
            }
            let topic = usize::from(body.get_u16());
            let id = if (first >> 1) & 3 > 0 { 2 } else { 0 };
            if body.len() < topic + id {
                return Err(bad("short MQTT PUBLISH"));
            }
            body.advance(topic + id);
            Packet::Publish(body.freeze())
        }
        2 if len == 2 => Packet::ConnAck(body[1]),
        9 if len >= 3 => Packet::SubAck(body[2]),
        13 => Packet::PingResp,
        _ => Packet::Other,
    }))
}

impl MqttConn {
    /// Connects as `client_id` (clean session, no keep-alive) and waits for CONNACK.
    pub(crate) async fn connect(stream: TcpStream, client_id: &str) -> io::Result<MqttConn> {
        let mut body = BytesMut::new();
        put_str(&mut body, b"MQTT");
        body.put_u8(4); // protocol level 3.1.1
        body.put_u8(0x02); // clean session
        body.put_u16(0); // keep-alive off: the runs measure, they do not idle for minutes
        put_str(&mut body, client_id.as_bytes());
        let mut c = MqttConn {
            stream,
            buf: BytesMut::with_capacity(256),
        };
        c.stream.write_all(&packet(0x10, &body)).await?;
        match c.next_packet().await? {
            Packet::ConnAck(0) => Ok(c),
            Packet::ConnAck(rc) => Err(bad(&format!("MQTT CONNACK refused with code {rc}"))),
            _ => Err(bad("MQTT: no CONNACK")),
        }
    }

    async fn next_packet(&mut self) -> io::Result<Packet> {
        loop {
            if let Some(p) = parse(&mut self.buf)? {
                return Ok(p);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(bad("closed by the broker"));
            }
        }
    }

    /// Subscribes to `topic` at QoS 0 and waits for SUBACK.
    pub(crate) async fn subscribe(&mut self, topic: &str) -> io::Result<()> {
        let mut body = BytesMut::new();
        body.put_u16(1);
        put_str(&mut body, topic.as_bytes());
        body.put_u8(0);
        self.stream.write_all(&packet(0x82, &body)).await?;
        loop {
            match self.next_packet().await? {
                Packet::SubAck(0) => return Ok(()),
                Packet::SubAck(rc) => return Err(bad(&format!("MQTT SUBACK code {rc}"))),
                _ => continue,
            }
        }
    }

    /// The next PUBLISH's payload.
    pub(crate) async fn next_publish(&mut self) -> io::Result<Bytes> {
        loop {
            if let Packet::Publish(p) = self.next_packet().await? {
                return Ok(p);
            }
        }
    }

    /// Sends bytes already encoded (PUBLISH packets).
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// PINGREQ and wait for PINGRESP: the broker handles a client's packets in order, so
    /// every PUBLISH sent before has been processed.
    pub(crate) async fn barrier(&mut self) -> io::Result<()> {
        self.stream.write_all(&[0xc0, 0]).await?;
        loop {
            if let Packet::PingResp = self.next_packet().await? {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_packets_round_trip_through_the_parser() {
        for size in [0, 10, 200, 20_000] {
            let payload = vec![b'x'; size];
            let mut buf = publish_packet("bench-room", &payload);
            buf.extend_from_slice(&[0xd0, 0]);
            match parse(&mut buf).unwrap() {
                Some(Packet::Publish(p)) => assert_eq!(p.len(), size),
                _ => panic!("not a publish"),
            }
            assert!(matches!(parse(&mut buf).unwrap(), Some(Packet::PingResp)));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn a_partial_packet_waits_for_the_rest() {
        let whole = publish_packet("t", &[1; 300]);
        let mut buf = BytesMut::from(&whole[..100]);
        assert!(parse(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&whole[100..]);
        assert!(matches!(parse(&mut buf).unwrap(), Some(Packet::Publish(p)) if p.len() == 300));
    }

    #[test]
    fn the_remaining_length_uses_seven_bits_a_byte() {
        let mut b = BytesMut::new();
        put_len(&mut b, 321);
        assert_eq!(&b[..], &[0xc1, 0x02]);
    }
}
