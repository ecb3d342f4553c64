//! The record layer of daemon-to-daemon connections: after the handshake
//! ([`auth`](crate::auth)) every byte in both directions travels in records.
//!
//! ```text
//! +----------------+--------------------------------------------+
//! | len: u16 (LE)  | body: len bytes (payload + 16-byte tag)     |
//! +----------------+--------------------------------------------+
//! ```
//! A record is at most 65535 bytes (Noise's limit), so it carries at most
//! [`MAX_PAYLOAD`] bytes; larger writes are cut into several records. Each
//! direction counts its records from 0 and that count is the nonce: a record
//! that was changed, replayed, reordered or left out fails its tag, and the
//! reader returns [`ProtoError::Tampered`] (via `io::Error`, see
//! [`ProtoError::from`]) and stays failed. No byte of a record is handed to
//! the caller before its tag was checked.
//!
//! Two protections, chosen per daemon and checked in the handshake:
//! - [`Protection::Encrypted`] (the default): Noise transport messages, AES-256-GCM.
//! - [`Protection::Integrity`] (`mitosis daemon --no-encrypt`): the payload in
//!   clear and a 16-byte keyed BLAKE3 tag over the payload and the record
//!   counter, keyed with the per-direction keys of Noise's Split().
//!
//! # Decision (measured with `mitosis bench crypto`)
//! One run, medians of 7 samples, 2 vCPUs shared with other work. One
//! connection on loopback, `ReadPages` answers of 256 KiB (the pager's
//! default window) and 2 MiB:
//!
//! | window  | raw TCP   | integrity only   | AES-256-GCM       | ChaCha20-Poly1305 |
//! |--------:|----------:|-----------------:|------------------:|------------------:|
//! | 256 KiB | 3376 MB/s | 827 MB/s (-75%)  | 1279 MB/s (-62%)  | 655 MB/s (-81%)   |
//! | 2 MiB   | 3274 MB/s | 830 MB/s (-75%)  | 1078 MB/s (-67%)  | 687 MB/s (-79%)   |
//!
//! End to end, a child on host b touching all of a 256 MiB seed on host a
//! (no cache, no working set): raw TCP a -> b 1725 MB/s, encrypting daemons
//! 591 MB/s, `--no-encrypt` daemons 463 MB/s.
//!
//! Protecting the records costs more than 15% of page throughput, but the
//! cost is the authentication, which is not optional: AES-256-GCM (ring's,
//! with AES-NI/VAES) authenticates *and* encrypts faster than keyed BLAKE3
//! only authenticates. So integrity is always on, encryption is an option
//! that is **on by default**, and `--no-encrypt` (both daemons must agree)
//! is slower on these hosts; it is meant for hosts without AES instructions,
//! where AES-GCM falls back to software and BLAKE3 needs only SIMD (not
//! measured here). AES-GCM beat ChaCha20-Poly1305, so it is the Noise suite
//! ([`NOISE_PARAMS`](crate::auth::NOISE_PARAMS)).

use std::io::{self, Read, Write};
use std::sync::Arc;

use crate::ProtoError;

/// Largest record on the wire (Noise's message limit).
pub const MAX_RECORD: usize = 65535;
/// Bytes of authentication tag per record.
pub const TAG: usize = 16;
/// Largest payload of one record.
pub const MAX_PAYLOAD: usize = MAX_RECORD - TAG;

/// How records are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protection {
    /// Encrypted and authenticated (Noise transport messages).
    #[default]
    Encrypted,
    /// Authenticated only: payload in clear, tag over it.
    Integrity,
}

impl Protection {
    pub(crate) fn code(self) -> u8 {
        match self {
            Protection::Encrypted => 1,
            Protection::Integrity => 2,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Protection> {
        match c {
            1 => Some(Protection::Encrypted),
            2 => Some(Protection::Integrity),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protection::Encrypted => "encryption",
            Protection::Integrity => "integrity only (--no-encrypt)",
        })
    }
}

/// Noise cipher suites mitosis knows; daemons speak [`Suite::AesGcm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    AesGcm,
    ChaChaPoly,
}

impl Suite {
    pub const fn params(self) -> &'static str {
        match self {
            Suite::AesGcm => "Noise_NNpsk0_25519_AESGCM_SHA256",
            Suite::ChaChaPoly => "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s",
        }
    }
}

/// The marker inside the `io::Error` of a record that failed its check.
#[derive(Debug, thiserror::Error)]
#[error("a record failed authentication")]
pub struct RecordRejected;

fn rejected() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, RecordRejected)
}

/// One direction's cipher.
enum Cipher {
    /// Noise transport; `Arc` because both directions share the state.
    Noise(Arc<snow::StatelessTransportState>),
    /// Key of the keyed BLAKE3 MAC.
    Mac([u8; 32]),
}

/// The tag of an integrity-only record: keyed BLAKE3 of the payload and the
/// record counter, cut to [`TAG`] bytes.
fn mac(key: &[u8; 32], nonce: u64, payload: &[u8]) -> [u8; TAG] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(payload);
    h.update(&nonce.to_le_bytes());
    let mut tag = [0u8; TAG];
    h.finalize_xof().fill(&mut tag);
    tag
}

/// Compares without leaking where two tags differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Cipher {
    /// Appends the record body for `payload` to `out`.
    fn seal(&self, nonce: u64, payload: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let start = out.len();
        match self {
            Cipher::Noise(t) => {
                out.resize(start + payload.len() + TAG, 0);
                let n = t.write_message(nonce, payload, &mut out[start..]).map_err(|e| io::Error::other(e.to_string()))?;
                out.truncate(start + n);
            }
            Cipher::Mac(k) => {
                out.extend_from_slice(payload);
                out.extend_from_slice(&mac(k, nonce, payload));
            }
        }
        Ok(())
    }

    /// Checks `body` and puts its payload into `out[..len]`; on failure
    /// `out` is zeroed so that no unchecked byte is left behind.
    fn open(&self, nonce: u64, body: &[u8], out: &mut [u8]) -> io::Result<usize> {
        let len = body.len().checked_sub(TAG).ok_or_else(rejected)?;
        let ok = match self {
            Cipher::Noise(t) => t.read_message(nonce, body, out).is_ok(),
            Cipher::Mac(k) => {
                let (payload, tag) = body.split_at(len);
                ct_eq(&mac(k, nonce, payload), tag) && {
                    out[..len].copy_from_slice(payload);
                    true
                }
            }
        };
        if ok {
            Ok(len)
        } else {
            // A cipher may have used the whole record's length of `out`.
            let n = body.len().min(out.len());
            out[..n].fill(0);
            Err(rejected())
        }
    }
}

/// The keys of a finished handshake, for both directions.
pub struct Channel {
    tx: Tx,
    rx: Rx,
    protection: Protection,
}

impl Channel {
    pub(crate) fn new(mut hs: snow::HandshakeState, protection: Protection) -> Result<Channel, ProtoError> {
        let initiator = hs.is_initiator();
        let (send, recv) = match protection {
            Protection::Encrypted => {
                let t = Arc::new(
                    hs.into_stateless_transport_mode().map_err(|_| ProtoError::AuthFailed("Noise handshake did not finish"))?,
                );
                (Cipher::Noise(t.clone()), Cipher::Noise(t))
            }
            Protection::Integrity => {
                // Split(): the first key is the initiator's sending key.
                let (k1, k2) = hs.dangerously_get_raw_split();
                let (s, r) = if initiator { (k1, k2) } else { (k2, k1) };
                (Cipher::Mac(s), Cipher::Mac(r))
            }
        };
        Ok(Channel { tx: Tx::new(send), rx: Rx::new(recv), protection })
    }

    pub fn protection(&self) -> Protection {
        self.protection
    }

    /// Both directions over one stream.
    pub fn over<S: Read + Write>(self, stream: S) -> SecureStream<S> {
        SecureStream { inner: stream, tx: self.tx, rx: self.rx }
    }

    /// The two directions over the two halves of a stream (e.g. two clones of
    /// a `TcpStream`), to be used by different owners or threads.
    pub fn split<R: Read, W: Write>(self, reader: R, writer: W) -> (SecureReader<R>, SecureWriter<W>) {
        (SecureReader { inner: reader, rx: self.rx }, SecureWriter { inner: writer, tx: self.tx })
    }
}

/// Sending state: the plaintext not yet sealed and the next nonce.
struct Tx {
    cipher: Cipher,
    nonce: u64,
    pending: Vec<u8>,
    record: Vec<u8>,
}

impl Tx {
    fn new(cipher: Cipher) -> Tx {
        Tx { cipher, nonce: 0, pending: Vec::with_capacity(MAX_PAYLOAD), record: Vec::with_capacity(2 + MAX_RECORD) }
    }

    fn send<W: Write>(&mut self, w: &mut W, payload: Option<&[u8]>) -> io::Result<()> {
        let payload = payload.unwrap_or(&self.pending);
        self.record.clear();
        self.record.extend_from_slice(&((payload.len() + TAG) as u16).to_le_bytes());
        self.cipher.seal(self.nonce, payload, &mut self.record)?;
        self.nonce = self.nonce.checked_add(1).ok_or_else(|| io::Error::other("record counter exhausted"))?;
        w.write_all(&self.record)
    }

    fn write<W: Write>(&mut self, w: &mut W, data: &[u8]) -> io::Result<usize> {
        if self.pending.is_empty() && data.len() >= MAX_PAYLOAD {
            // A full record straight from the caller's buffer.
            self.send(w, Some(&data[..MAX_PAYLOAD]))?;
            return Ok(MAX_PAYLOAD);
        }
        let n = data.len().min(MAX_PAYLOAD - self.pending.len());
        self.pending.extend_from_slice(&data[..n]);
        if self.pending.len() == MAX_PAYLOAD {
            self.seal_pending(w)?;
        }
        Ok(n)
    }

    fn seal_pending<W: Write>(&mut self, w: &mut W) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.send(w, None)?;
            self.pending.clear();
        }
        Ok(())
    }

    fn flush<W: Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.seal_pending(w)?;
        w.flush()
    }
}

/// Receiving state: the opened payload not yet read and the next nonce.
struct Rx {
    cipher: Cipher,
    nonce: u64,
    body: Vec<u8>,
    plain: Vec<u8>,
    pos: usize,
    failed: bool,
}

impl Rx {
    fn new(cipher: Cipher) -> Rx {
        Rx { cipher, nonce: 0, body: vec![0; MAX_RECORD], plain: Vec::with_capacity(MAX_RECORD), pos: 0, failed: false }
    }

    fn read<R: Read>(&mut self, r: &mut R, out: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(rejected());
        }
        if out.is_empty() {
            return Ok(0);
        }
        if self.pos == self.plain.len() {
            // The next record. EOF exactly between records is a clean end.
            let mut len = [0u8; 2];
            if !read_exact_or_eof(r, &mut len)? {
                return Ok(0);
            }
            let len = u16::from_le_bytes(len) as usize;
            let body = &mut self.body[..len];
            r.read_exact(body)?;
            let nonce = self.nonce;
            self.nonce += 1;
            if out.len() >= len {
                // Straight into the caller's buffer (room for the whole body, so
                // the cipher works in place), which open() zeroes on failure.
                return self.cipher.open(nonce, body, out).inspect_err(|_| self.failed = true);
            }
            self.plain.resize(MAX_RECORD, 0);
            let n = self.cipher.open(nonce, body, &mut self.plain).inspect_err(|_| self.failed = true)?;
            self.plain.truncate(n);
            self.pos = 0;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Fills `buf`; false if the stream ended before its first byte.
fn read_exact_or_eof<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Both directions of a channel over one stream.
pub struct SecureStream<S> {
    inner: S,
    tx: Tx,
    rx: Rx,
}

impl<S> SecureStream<S> {
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Read> Read for SecureStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.rx.read(&mut self.inner, buf)
    }
}

impl<S: Write> Write for SecureStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx.write(&mut self.inner, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tx.flush(&mut self.inner)
    }
}

/// The receiving half of a channel: reads open records.
pub struct SecureReader<R> {
    inner: R,
    rx: Rx,
}

impl<R: Read> Read for SecureReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.rx.read(&mut self.inner, buf)
    }
}

impl<R> SecureReader<R> {
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Bytes of an opened record not yet read (a server that still has some
    /// holds more of a pipelined request, and may hold back its answers).
    pub fn opened_unread(&self) -> usize {
        self.rx.plain.len() - self.rx.pos
    }
}

/// The sending half of a channel: writes are sealed into records when a
/// record is full or on `flush`, so callers must flush after each message.
pub struct SecureWriter<W> {
    inner: W,
    tx: Tx,
}

impl<W: Write> Write for SecureWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx.write(&mut self.inner, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tx.flush(&mut self.inner)
    }
}

impl<W> SecureWriter<W> {
    pub fn get_ref(&self) -> &W {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{client_handshake, server_handshake, ClusterKey};
    use crate::frame::{read_msg, write_msg};

    /// A stream that records what is written and reads from a given buffer.
    #[derive(Default)]
    struct Wire {
        sent: Vec<u8>,
        incoming: io::Cursor<Vec<u8>>,
    }
    impl Read for Wire {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.incoming.read(buf)
        }
    }
    impl Write for Wire {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.sent.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn key() -> ClusterKey {
        ClusterKey::from_file_contents(b"0123456789abcdef-key").unwrap()
    }

    /// Two ends of a finished handshake (client, server).
    fn channels(p: Protection) -> (Channel, Channel) {
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || server_handshake(&mut b, &key(), p).unwrap());
        let c = client_handshake(&mut a, &key(), p).unwrap();
        (c, server.join().unwrap())
    }

    /// The records the client sends for `payloads` (one flush each), and the server end.
    fn sent(p: Protection, payloads: &[&[u8]]) -> (Vec<Vec<u8>>, Channel) {
        let (c, s) = channels(p);
        let mut w = c.over(Wire::default());
        let mut records = Vec::new();
        for pl in payloads {
            w.write_all(pl).unwrap();
            w.flush().unwrap();
            let all = std::mem::take(&mut w.inner.sent);
            let mut rest = &all[..];
            while !rest.is_empty() {
                let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
                records.push(rest[..2 + len].to_vec());
                rest = &rest[2 + len..];
            }
        }
        (records, s)
    }

    fn receive(s: Channel, wire: Vec<u8>) -> (Vec<u8>, io::Result<usize>) {
        let mut r = s.over(Wire { sent: vec![], incoming: io::Cursor::new(wire) });
        let mut got = Vec::new();
        let res = r.read_to_end(&mut got);
        (got, res)
    }

    fn assert_rejected(res: io::Result<usize>) {
        let e = res.expect_err("the record must be refused");
        assert!(matches!(ProtoError::from(e), ProtoError::Tampered), "not a Tampered error");
    }

    const BOTH: [Protection; 2] = [Protection::Encrypted, Protection::Integrity];

    #[test]
    fn round_trip_of_messages_and_large_payloads() {
        for p in BOTH {
            let (c, s) = channels(p);
            assert_eq!(c.protection(), p);
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            let big: Vec<u8> = (0..3 * MAX_PAYLOAD + 12345).map(|i| (i * 7 % 251) as u8).collect();
            let send = big.clone();
            let writer = std::thread::spawn(move || {
                let mut w = c.over(a);
                write_msg(&mut w, &(7u32, "hello".to_string())).unwrap();
                w.write_all(&send).unwrap();
                w.flush().unwrap();
                write_msg(&mut w, &9u64).unwrap();
                w.flush().unwrap();
            });
            let (mut r, _) = s.split(b.try_clone().unwrap(), b);
            let m: (u32, String) = read_msg(&mut r, 100).unwrap();
            assert_eq!(m, (7, "hello".to_string()));
            let mut got = vec![0u8; big.len()];
            r.read_exact(&mut got).unwrap();
            assert!(got == big, "{p:?}: payload differs");
            assert_eq!(read_msg::<_, u64>(&mut r, 100).unwrap(), 9);
            writer.join().unwrap();
            assert!(matches!(read_msg::<_, u64>(&mut r, 100), Err(ProtoError::Closed)));
        }
    }

    #[test]
    fn encryption_hides_the_payload_and_integrity_does_not() {
        let secret = b"the seed's secret page bytes";
        let (recs, _) = sent(Protection::Encrypted, &[secret]);
        assert!(!recs[0].windows(secret.len()).any(|w| w == secret));
        let (recs, _) = sent(Protection::Integrity, &[secret]);
        assert!(recs[0].windows(secret.len()).any(|w| w == secret));
    }

    #[test]
    fn a_flipped_byte_is_refused_and_delivers_nothing() {
        for p in BOTH {
            for at in [0usize, 1, 2, 10, 2 + 100 + 5] {
                let (mut recs, s) = sent(p, &[&[0x5a; 100]]);
                recs[0][at] ^= 0x01;
                let (got, res) = receive(s, recs.concat());
                assert!(got.is_empty(), "{p:?} byte {at}: {} bytes delivered", got.len());
                assert!(res.is_err(), "{p:?} byte {at}: accepted");
                if at >= 2 {
                    assert_rejected(res);
                }
            }
        }
    }

    #[test]
    fn a_flipped_byte_in_a_large_read_is_refused_and_zeroed() {
        for p in BOTH {
            let (mut recs, s) = sent(p, &[&[0x77; 1000]]);
            recs[0][500] ^= 0x80;
            let mut r = s.over(Wire { sent: vec![], incoming: io::Cursor::new(recs.concat()) });
            let mut out = vec![0u8; 4096];
            assert_rejected(r.read(&mut out));
            assert!(out.iter().all(|&b| b == 0), "{p:?}: unchecked bytes left in the buffer");
            // And the reader stays failed.
            assert_rejected(r.read(&mut out));
        }
    }

    #[test]
    fn a_replayed_record_is_refused() {
        for p in BOTH {
            let (recs, s) = sent(p, &[b"first", b"second"]);
            let wire = [recs[0].clone(), recs[0].clone(), recs[1].clone()].concat();
            let (got, res) = receive(s, wire);
            assert_eq!(got, b"first");
            assert_rejected(res);
        }
    }

    #[test]
    fn reordered_records_are_refused() {
        for p in BOTH {
            let (recs, s) = sent(p, &[b"first", b"second", b"third"]);
            let wire = [recs[0].clone(), recs[2].clone(), recs[1].clone()].concat();
            let (got, res) = receive(s, wire);
            assert_eq!(got, b"first");
            assert_rejected(res);
        }
    }

    #[test]
    fn a_dropped_record_is_refused() {
        for p in BOTH {
            let (recs, s) = sent(p, &[b"first", b"second", b"third"]);
            let (got, res) = receive(s, [recs[0].clone(), recs[2].clone()].concat());
            assert_eq!(got, b"first");
            assert_rejected(res);
        }
    }

    #[test]
    fn records_of_another_session_are_refused() {
        for p in BOTH {
            let (recs, _) = sent(p, &[b"from another session"]);
            let (_, s) = channels(p);
            let (got, res) = receive(s, recs.concat());
            assert!(got.is_empty());
            assert_rejected(res);
        }
    }

    #[test]
    fn a_record_reflected_back_is_refused() {
        for p in BOTH {
            let (_c, s) = channels(p);
            let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            let (mut r, mut w) = s.split(b.try_clone().unwrap(), b);
            w.write_all(b"server to client").unwrap();
            w.flush().unwrap();
            let mut rec = vec![0u8; 2 + 16 + TAG];
            a.read_exact(&mut rec).unwrap();
            // Sent back to the server, which expects records sealed with the client's key.
            a.write_all(&rec).unwrap();
            drop(a);
            let mut got = Vec::new();
            assert_rejected(r.read_to_end(&mut got));
            assert!(got.is_empty());
        }
    }
}
