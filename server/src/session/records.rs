//! TLS records after the handshake, sealed and opened here rather than inside rustls.
//!
//! rustls keeps about 8 KiB per connection for as long as it lives (a 4 KiB deframing buffer,
//! the connection state, expanded AES and GHASH tables for both directions). A push server's
//! connections idle most of their lives, so once the handshake is over the session keeps only
//! what a record needs: the two directions' raw keys, IVs and sequence numbers, and rustls'
//! `KernelConnection` for key updates. The AEAD keys are expanded for each batch of records
//! (a few hundred nanoseconds next to the socket call that moves them), and the ciphertext
//! buffers are dropped whenever they empty. TLS 1.3 (RFC 8446 §5) and the TLS 1.2 AEAD suites
//! (RFC 5288, RFC 7905) are both spoken, as the handshake may settle on either.

use std::io::{self, IoSlice};

use bytes::{Buf, BytesMut};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ProtocolVersion, SupportedCipherSuite};

/// Plaintext sealed per write call, at most (records are written before more is taken).
pub(crate) const WRITE_CHUNK: usize = 64 * 1024;
/// Largest plaintext in one record.
const MAX_PLAINTEXT: usize = 16 * 1024;
/// Largest ciphertext a peer may send in one record (TLS 1.2's bound; 1.3's is 256 over).
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 2048;
const HEADER: usize = 5;
const TAG: usize = 16;
const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const KEY_UPDATE: u8 = 24;

fn bad(why: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {why}"))
}

/// One direction's keys.
struct Keys {
    alg: &'static aead::Algorithm,
    key: [u8; 32],
    iv: [u8; 12],
    seq: u64,
}

impl Keys {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> io::Result<Keys> {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(bad("a cipher suite this server does not seal itself")),
        };
        let (mut k, mut v) = ([0u8; 32], [0u8; 12]);
        let (key, iv) = (key.as_ref(), iv.as_ref());
        if key.len() != alg.key_len() || iv.len() != v.len() {
            return Err(bad("unexpected key or IV length"));
        }
        k[..key.len()].copy_from_slice(key);
        v.copy_from_slice(iv);
        Ok(Keys {
            alg,
            key: k,
            iv: v,
            seq,
        })
    }

    fn expand(&self) -> LessSafeKey {
        let key = UnboundKey::new(self.alg, &self.key[..self.alg.key_len()])
            .expect("the key length was checked against the algorithm");
        LessSafeKey::new(key)
    }

    /// The per-record nonce of TLS 1.3 and of ChaCha20 in TLS 1.2: the IV XOR the sequence.
    fn nonce(&self) -> [u8; 12] {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }

    /// TLS 1.2's additional data: sequence, type, version, plaintext length.
    fn aad12(&self, typ: u8, len: usize) -> [u8; 13] {
        let mut a = [0u8; 13];
        a[..8].copy_from_slice(&self.seq.to_be_bytes());
        a[8..].copy_from_slice(&[typ, 3, 3, (len >> 8) as u8, len as u8]);
        a
    }

    /// AES-GCM, whose TLS 1.2 records carry an explicit nonce (ChaCha20's do not).
    fn gcm12(&self) -> bool {
        *self.alg != aead::CHACHA20_POLY1305
    }
}

/// What one pass over the received records found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Opened {
    /// Application bytes appended.
    pub data: usize,
    /// The peer sent close_notify.
    pub closed: bool,
}

/// An established TLS connection's record layer.
pub(crate) struct Records {
    kernel: KernelConnection<ServerConnectionData>,
    tls13: bool,
    rx: Keys,
    tx: Keys,
    /// Received ciphertext short of a whole record.
    rx_buf: BytesMut,
    /// Sealed records not yet written.
    tx_buf: BytesMut,
    /// Records sealed under one key before it is replaced (TLS 1.3) or the connection ends
    /// (TLS 1.2): below the suite's confidentiality limit.
    tx_limit: u64,
    /// The client sent close_notify: nothing after it is read.
    closed: bool,
}

impl Records {
    /// The record layer of a finished handshake; `rx_buf` holds ciphertext read past it.
    pub(crate) fn new(
        secrets: rustls::ExtractedSecrets,
        kernel: KernelConnection<ServerConnectionData>,
        rx_buf: BytesMut,
    ) -> io::Result<Records> {
        let tls13 = match kernel.protocol_version() {
            ProtocolVersion::TLSv1_3 => true,
            ProtocolVersion::TLSv1_2 => false,
            v => return Err(bad(format!("protocol {v:?}"))),
        };
        let limit = match kernel.negotiated_cipher_suite() {
            SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
        };
        Ok(Records {
            tls13,
            rx: Keys::new(secrets.rx)?,
            tx: Keys::new(secrets.tx)?,
            kernel,
            rx_buf,
            tx_buf: BytesMut::new(),
            // rustls updates its keys a little before the limit as well.
            tx_limit: limit - limit / 16,
            closed: false,
        })
    }

    /// Lowers the record limit to `more` records past the ones sealed so far (tests).
    #[cfg(test)]
    pub(crate) fn set_tx_limit(&mut self, more: u64) {
        self.tx_limit = self.tx.seq + more;
    }

    /// Records sealed under the current key (tests).
    #[cfg(test)]
    pub(crate) fn tx_seq(&self) -> u64 {
        self.tx.seq
    }

    /// The buffer the socket's ciphertext goes into, with room for at least one read.
    fn rx_buf(&mut self) -> &mut BytesMut {
        let want = match self.rx_buf.get(3..HEADER) {
            Some(l) => HEADER + usize::from(u16::from_be_bytes([l[0], l[1]])),
            None => 0,
        };
        self.rx_buf
            .reserve(want.saturating_sub(self.rx_buf.len()).max(4096));
        &mut self.rx_buf
    }

    /// Opens every whole record received, appending application data to `dst` and
    /// answering key updates.
    pub(crate) fn open(&mut self, dst: &mut BytesMut) -> io::Result<Opened> {
        let mut out = Opened {
            data: 0,
            closed: self.closed,
        };
        if self.closed {
            return Ok(out);
        }
        let mut key = None;
        while let Some(h) = self.rx_buf.get(..HEADER) {
            let (typ, len) = (h[0], usize::from(u16::from_be_bytes([h[3], h[4]])));
            if h[1] != 3 || len > MAX_CIPHERTEXT {
                return Err(bad("record overflow or not a TLS record"));
            }
            if self.rx_buf.len() < HEADER + len {
                break;
            }
            let mut record = self.rx_buf.split_to(HEADER + len);
            let header: [u8; HEADER] = record[..HEADER].try_into().expect("five bytes");
            let k = key.get_or_insert_with(|| self.rx.expand());
            let (typ, body) = if self.tls13 {
                if typ != APPLICATION_DATA {
                    return Err(bad(format!("unexpected record type {typ}")));
                }
                let nonce = Nonce::assume_unique_for_key(self.rx.nonce());
                let plain = k
                    .open_in_place(nonce, Aad::from(header), &mut record[HEADER..])
                    .map_err(|_| bad("a record failed to decrypt"))?;
                let end = plain
                    .iter()
                    .rposition(|&b| b != 0)
                    .ok_or_else(|| bad("a record without a content type"))?;
                let typ = plain[end];
                let body_len = end;
                record.truncate(HEADER + body_len);
                record.advance(HEADER);
                (typ, record)
            } else {
                let explicit = if self.rx.gcm12() { 8 } else { 0 };
                if len < explicit + TAG {
                    return Err(bad("a record shorter than its tag"));
                }
                let mut nonce = self.rx.nonce();
                if explicit > 0 {
                    nonce[4..].copy_from_slice(&record[HEADER..HEADER + 8]);
                }
                let aad = self.rx.aad12(typ, len - explicit - TAG);
                let body_len = k
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        &mut record[HEADER + explicit..],
                    )
                    .map_err(|_| bad("a record failed to decrypt"))?
                    .len();
                record.truncate(HEADER + explicit + body_len);
                record.advance(HEADER + explicit);
                (typ, record)
            };
            self.rx.seq += 1;
            match typ {
                APPLICATION_DATA => {
                    dst.extend_from_slice(&body);
                    out.data += body.len();
                }
                // close_notify, whatever level the client gave it.
                ALERT if body.len() == 2 && body[1] == 0 => {
                    (self.closed, out.closed) = (true, true);
                    break;
                }
                ALERT => {
                    let what = body.get(1).copied().unwrap_or(0);
                    return Err(bad(format!("the client sent alert {what}")));
                }
                HANDSHAKE if self.tls13 => {
                    self.key_update(&body)?;
                    key = None;
                }
                _ => return Err(bad(format!("unexpected message of type {typ}"))),
            }
        }
        self.release_rx_if_empty();
        Ok(out)
    }

    /// Drops the read buffer when it holds nothing: an idle connection keeps none.
    fn release_rx_if_empty(&mut self) {
        if self.rx_buf.is_empty() && self.rx_buf.capacity() > 0 {
            self.rx_buf = BytesMut::new();
        }
    }

    /// A KeyUpdate from the client: switch its keys, and switch ours if asked to.
    fn key_update(&mut self, body: &[u8]) -> io::Result<()> {
        if body.len() != 5 || body[0] != KEY_UPDATE || body[1..4] != [0, 0, 1] || body[4] > 1 {
            return Err(bad("unexpected handshake message after the handshake"));
        }
        self.rx = Keys::new(self.kernel.update_rx_secret().map_err(bad)?)?;
        if body[4] == 1 {
            self.update_tx_keys()?;
        }
        Ok(())
    }

    /// Tells the client our next records use new keys, and uses them.
    fn update_tx_keys(&mut self) -> io::Result<()> {
        let key = self.tx.expand();
        self.seal_one(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], &key);
        self.tx = Keys::new(self.kernel.update_tx_secret().map_err(bad)?)?;
        Ok(())
    }

    /// Seals up to `max` bytes of `bufs`, in order, into records of application data (up to
    /// 16 KiB each, across slice boundaries); returns how many bytes were taken.
    pub(crate) fn seal_vectored(&mut self, bufs: &[IoSlice<'_>], max: usize) -> io::Result<usize> {
        let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(max);
        let mut key = self.tx.expand();
        let (mut taken, mut slice, mut offset) = (0, 0, 0);
        while taken < total {
            if self.tx.seq >= self.tx_limit {
                if !self.tls13 {
                    return Err(bad("the cipher suite's record limit was reached"));
                }
                self.update_tx_keys()?;
                key = self.tx.expand();
            }
            let n = (total - taken).min(MAX_PLAINTEXT);
            let start = self.begin(APPLICATION_DATA, n);
            let mut left = n;
            while left > 0 {
                let b = &bufs[slice][offset..];
                let k = b.len().min(left);
                self.tx_buf.extend_from_slice(&b[..k]);
                left -= k;
                offset += k;
                if offset == bufs[slice].len() {
                    (slice, offset) = (slice + 1, 0);
                }
            }
            self.finish(APPLICATION_DATA, start, &key);
            taken += n;
        }
        Ok(taken)
    }

    /// Seals all of `data` into records of application data.
    pub(crate) fn seal(&mut self, data: &[u8]) -> io::Result<()> {
        self.seal_vectored(&[IoSlice::new(data)], usize::MAX)
            .map(drop)
    }

    /// Seals a close_notify alert.
    pub(crate) fn seal_close_notify(&mut self) {
        let key = self.tx.expand();
        self.seal_one(ALERT, &[1, 0], &key);
    }

    fn seal_one(&mut self, typ: u8, data: &[u8], key: &LessSafeKey) {
        let start = self.begin(typ, data.len());
        self.tx_buf.extend_from_slice(data);
        self.finish(typ, start, key);
    }

    /// Starts a record of `len` plaintext bytes (which the caller appends next): its header
    /// and, for AES-GCM in TLS 1.2, the explicit nonce. Returns where the record starts.
    fn begin(&mut self, typ: u8, len: usize) -> usize {
        let start = self.tx_buf.len();
        let explicit = self.explicit_len();
        let wire = if self.tls13 {
            len + 1 + TAG
        } else {
            explicit + len + TAG
        };
        let typ = if self.tls13 { APPLICATION_DATA } else { typ };
        self.tx_buf.reserve(HEADER + wire);
        self.tx_buf
            .extend_from_slice(&[typ, 3, 3, (wire >> 8) as u8, wire as u8]);
        if explicit > 0 {
            let nonce = self.tx.nonce();
            self.tx_buf.extend_from_slice(&nonce[4..]);
        }
        start
    }

    /// Seals the record begun at `start` in place and appends its tag.
    fn finish(&mut self, typ: u8, start: usize, key: &LessSafeKey) {
        let body = start + HEADER + self.explicit_len();
        let nonce = Nonce::assume_unique_for_key(self.tx.nonce());
        let tag = if self.tls13 {
            self.tx_buf.extend_from_slice(&[typ]);
            let header: [u8; HEADER] = self.tx_buf[start..body].try_into().expect("five bytes");
            key.seal_in_place_separate_tag(nonce, Aad::from(header), &mut self.tx_buf[body..])
        } else {
            let aad = self.tx.aad12(typ, self.tx_buf.len() - body);
            key.seal_in_place_separate_tag(nonce, Aad::from(aad), &mut self.tx_buf[body..])
        }
        .expect("a record is within the AEAD's limits");
        self.tx_buf.extend_from_slice(tag.as_ref());
        self.tx.seq += 1;
    }

    /// TLS 1.2 AES-GCM's explicit nonce in each record (none in TLS 1.3 or for ChaCha20).
    fn explicit_len(&self) -> usize {
        if !self.tls13 && self.tx.gcm12() {
            8
        } else {
            0
        }
    }

    /// Reads ciphertext from `tcp` without blocking and opens whole records into `dst`:
    /// `Ok(n > 0)` bytes appended, `Ok(0)` the end of the stream (or close_notify),
    /// `WouldBlock` nothing more now.
    pub(crate) fn read_from(
        &mut self,
        tcp: &tokio::net::TcpStream,
        dst: &mut BytesMut,
    ) -> io::Result<usize> {
        loop {
            let opened = self.open(dst)?;
            // A key update to answer; what does not fit now waits for the next write.
            self.send_some(tcp)?;
            if opened.data > 0 {
                return Ok(opened.data);
            }
            if opened.closed {
                return Ok(0);
            }
            match tcp.try_read_buf(self.rx_buf()) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) => {
                    // Usually WouldBlock: an idle connection keeps no read buffer.
                    self.release_rx_if_empty();
                    return Err(e);
                }
            }
        }
    }

    /// Sends what the socket takes now; the rest waits for the next write or flush.
    pub(crate) fn send_some(&mut self, tcp: &tokio::net::TcpStream) -> io::Result<()> {
        match self.try_send(tcp) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    /// Writes sealed records without blocking; `WouldBlock` if some remain.
    pub(crate) fn try_send(&mut self, tcp: &tokio::net::TcpStream) -> io::Result<()> {
        while !self.tx_buf.is_empty() {
            match tcp.try_write(&self.tx_buf)? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => self.sent(n),
            }
        }
        Ok(())
    }

    /// Sealed bytes waiting for the socket.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.tx_buf
    }

    /// `n` sealed bytes went out.
    fn sent(&mut self, n: usize) {
        self.tx_buf.advance(n);
        if self.tx_buf.is_empty() {
            self.tx_buf = BytesMut::new();
        }
    }
}
