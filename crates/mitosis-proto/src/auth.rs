//! Opening handshake of daemon-to-daemon connections: version check, then a
//! Noise handshake keyed with the shared cluster key, which yields the
//! [`Channel`](crate::secure::Channel) that carries every later byte.
//!
//! The first two messages keep the layout of every earlier version (no
//! postcard), so that any two versions of mitosis can tell each other apart
//! with a clear "version mismatch":
//!
//! ```text
//! client -> server  HELLO   magic "MITOSIS1" | version u32 LE | protection u8 | zero [31]     (44 bytes)
//! server -> client  REPLY   magic | version u32 LE | status u8 | protection u8 | zero [63]    (77 bytes)
//! client -> server  NOISE1  len u16 LE | Noise message  -> psk, e
//! server -> client  status u8, then if OK: len u16 LE | Noise message  <- e, ee
//! ```
//! The Noise protocol is [`NOISE_PARAMS`] (`NNpsk0`: no static keys; the
//! pre-shared key is `HMAC-SHA256(cluster key, "mitosis noise psk")`). Its
//! prologue is HELLO and REPLY as sent, so a man in the middle who changes a
//! version or protection byte breaks the handshake. The first Noise message
//! can only be made with the key and the second only by someone who holds the
//! key and read the first: both sides prove they hold the key, the key never
//! crosses the wire, and fresh ephemeral keys make every session's keys new.
//! A wrong key gets the AUTH status (server side) or fails to open the
//! second message (client side): [`ProtoError::AuthFailed`] either way.
//!
//! `protection` is [`Protection::Encrypted`] (1) or [`Protection::Integrity`]
//! (2). Both daemons must use the same; otherwise the server answers with the
//! MODE status and its own protection ([`ProtoError::ProtectionMismatch`]).

use std::io::{Read, Write};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secure::{Channel, Protection, Suite};
use crate::{ProtoError, PROTOCOL_VERSION};

const MAGIC: &[u8; 8] = b"MITOSIS1";
const STATUS_OK: u8 = 0;
const STATUS_VERSION: u8 = 1;
const STATUS_AUTH: u8 = 2;
const STATUS_MODE: u8 = 3;
/// The server holds as many connections as it takes (sent at once, in the
/// REPLY's place, before any handshake work).
const STATUS_BUSY: u8 = 4;
const HELLO_LEN: usize = 44;
const REPLY_LEN: usize = 77;
/// Longest handshake message accepted (ours are 48 bytes).
const MAX_NOISE_MSG: usize = 256;

/// The Noise protocol the daemons speak (AES-GCM was measured faster than
/// ChaCha20-Poly1305 on these AES-NI hosts: see [`crate::secure`]).
pub const NOISE_PARAMS: &str = Suite::AesGcm.params();

/// The shared secret of a cluster, read from the daemon's key file.
#[derive(Clone)]
pub struct ClusterKey(Vec<u8>);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// Builds a key from the contents of a key file (surrounding white space ignored).
    /// Keys shorter than 16 bytes are refused: they could be guessed.
    pub fn from_file_contents(bytes: &[u8]) -> Result<Self, &'static str> {
        let text = bytes.trim_ascii();
        if text.len() < 16 {
            return Err("cluster key must be at least 16 bytes");
        }
        Ok(ClusterKey(text.to_vec()))
    }

    /// The 32-byte Noise PSK: key files have any length of 16 bytes or more.
    fn psk(&self) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("hmac takes any key length");
        mac.update(b"mitosis noise psk");
        mac.finalize().into_bytes().into()
    }
}

/// A Noise handshake state for our side of the protocol.
fn handshake_state(suite: Suite, key: &ClusterKey, prologue: &[u8], initiator: bool) -> Result<snow::HandshakeState, ProtoError> {
    let params: snow::params::NoiseParams = suite.params().parse().expect("a valid Noise protocol name");
    let psk = key.psk();
    let b = snow::Builder::new(params).psk(0, &psk).and_then(|b| b.prologue(prologue));
    let hs = if initiator { b.and_then(|b| b.build_initiator()) } else { b.and_then(|b| b.build_responder()) };
    hs.map_err(|_| ProtoError::AuthFailed("cannot set up the Noise handshake"))
}

/// The HELLO a client of this version sends first, offering `protection`
/// (also what fuzzers and probes start from).
pub fn hello(protection: Protection) -> [u8; HELLO_LEN] {
    let mut h = [0u8; HELLO_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    h[12] = protection.code();
    h
}

fn reply(status: u8, protection: Protection) -> [u8; REPLY_LEN] {
    let mut r = [0u8; REPLY_LEN];
    r[..8].copy_from_slice(MAGIC);
    r[8..12].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    r[12] = status;
    r[13] = protection.code();
    r
}

fn prologue(hello: &[u8], reply: &[u8]) -> Vec<u8> {
    [hello, reply].concat()
}

fn write_noise<W: Write>(w: &mut W, msg: &[u8]) -> Result<(), ProtoError> {
    let mut buf = Vec::with_capacity(2 + msg.len());
    buf.extend_from_slice(&(msg.len() as u16).to_le_bytes());
    buf.extend_from_slice(msg);
    w.write_all(&buf)?;
    Ok(())
}

fn read_noise<R: Read>(r: &mut R) -> Result<Vec<u8>, ProtoError> {
    let mut len = [0u8; 2];
    read_exact_or_closed(r, &mut len)?;
    let len = u16::from_le_bytes(len) as usize;
    if len > MAX_NOISE_MSG {
        return Err(ProtoError::FrameTooLarge { len: len as u64, limit: MAX_NOISE_MSG as u64 });
    }
    let mut msg = vec![0u8; len];
    read_exact_or_closed(r, &mut msg)?;
    Ok(msg)
}

/// Runs the client side of the handshake, offering `protection`.
pub fn client_handshake<S: Read + Write>(s: &mut S, key: &ClusterKey, protection: Protection) -> Result<Channel, ProtoError> {
    client_handshake_with(s, key, protection, Suite::AesGcm)
}

/// [`client_handshake`] with a chosen cipher suite: daemons always use
/// [`NOISE_PARAMS`]; the other suite exists so that the benchmark can compare.
pub fn client_handshake_with<S: Read + Write>(
    s: &mut S,
    key: &ClusterKey,
    protection: Protection,
    suite: Suite,
) -> Result<Channel, ProtoError> {
    let hello = hello(protection);
    s.write_all(&hello)?;
    let mut reply = [0u8; REPLY_LEN];
    read_exact_or_closed(s, &mut reply)?;
    if &reply[..8] != MAGIC {
        return Err(ProtoError::BadMagic);
    }
    let theirs = u32::from_le_bytes(reply[8..12].try_into().unwrap());
    match reply[12] {
        STATUS_OK => {}
        STATUS_VERSION => return Err(ProtoError::VersionMismatch { ours: PROTOCOL_VERSION, theirs }),
        STATUS_BUSY => return Err(ProtoError::Busy),
        STATUS_MODE => {
            return Err(match Protection::from_code(reply[13]) {
                Some(theirs) => ProtoError::ProtectionMismatch { ours: protection, theirs },
                None => ProtoError::Unexpected,
            })
        }
        _ => return Err(ProtoError::AuthFailed("server refused the hello")),
    }
    let mut hs = handshake_state(suite, key, &prologue(&hello, &reply), true)?;
    let mut msg = [0u8; MAX_NOISE_MSG];
    let n = hs.write_message(&[], &mut msg).map_err(|_| ProtoError::AuthFailed("cannot write the Noise handshake"))?;
    write_noise(s, &msg[..n])?;
    let mut status = [0u8; 1];
    read_exact_or_closed(s, &mut status)?;
    if status[0] != STATUS_OK {
        return Err(ProtoError::AuthFailed("server rejected our cluster key"));
    }
    let answer = read_noise(s)?;
    let mut payload = [0u8; MAX_NOISE_MSG];
    hs.read_message(&answer, &mut payload).map_err(|_| ProtoError::AuthFailed("server does not hold our cluster key"))?;
    Channel::new(hs, protection)
}

/// Runs the server side of the handshake; the client must offer `protection`.
/// On error the connection must be dropped; the client has already been told
/// why where the layout allows it.
pub fn server_handshake<S: Read + Write>(s: &mut S, key: &ClusterKey, protection: Protection) -> Result<Channel, ProtoError> {
    server_handshake_with(s, key, protection, Suite::AesGcm)
}

/// [`server_handshake`] with a chosen cipher suite (see [`client_handshake_with`]).
pub fn server_handshake_with<S: Read + Write>(
    s: &mut S,
    key: &ClusterKey,
    protection: Protection,
    suite: Suite,
) -> Result<Channel, ProtoError> {
    let mut hello = [0u8; HELLO_LEN];
    read_exact_or_closed(s, &mut hello)?;
    if &hello[..8] != MAGIC {
        return Err(ProtoError::BadMagic);
    }
    let theirs = u32::from_le_bytes(hello[8..12].try_into().unwrap());
    if theirs != PROTOCOL_VERSION {
        s.write_all(&reply(STATUS_VERSION, protection))?;
        return Err(ProtoError::VersionMismatch { ours: PROTOCOL_VERSION, theirs });
    }
    if hello[12] != protection.code() {
        s.write_all(&reply(STATUS_MODE, protection))?;
        return Err(match Protection::from_code(hello[12]) {
            Some(theirs) => ProtoError::ProtectionMismatch { ours: protection, theirs },
            None => ProtoError::Decode { what: "hello protection" },
        });
    }
    let reply = reply(STATUS_OK, protection);
    s.write_all(&reply)?;
    let mut hs = handshake_state(suite, key, &prologue(&hello, &reply), false)?;
    let first = read_noise(s)?;
    let mut payload = [0u8; MAX_NOISE_MSG];
    if hs.read_message(&first, &mut payload).is_err() {
        let _ = s.write_all(&[STATUS_AUTH]);
        return Err(ProtoError::AuthFailed("client does not hold our cluster key"));
    }
    let mut msg = [0u8; MAX_NOISE_MSG];
    let n = hs.write_message(&[], &mut msg).map_err(|_| ProtoError::AuthFailed("cannot write the Noise handshake"))?;
    let mut answer = vec![STATUS_OK];
    answer.extend_from_slice(&(n as u16).to_le_bytes());
    answer.extend_from_slice(&msg[..n]);
    s.write_all(&answer)?;
    Channel::new(hs, protection)
}

/// Tells a client that this server is busy (status 4 in a REPLY's layout),
/// without reading its HELLO: the connection is closed next.
pub fn refuse_busy<W: Write>(w: &mut W) -> std::io::Result<()> {
    let mut reply = Vec::with_capacity(REPLY_LEN);
    reply.extend_from_slice(MAGIC);
    reply.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    reply.push(STATUS_BUSY);
    reply.resize(REPLY_LEN, 0);
    w.write_all(&reply)
}

fn read_exact_or_closed<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), ProtoError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtoError::Closed
        } else {
            ProtoError::from(e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    const ENC: Protection = Protection::Encrypted;

    fn key(s: &str) -> ClusterKey {
        ClusterKey::from_file_contents(s.as_bytes()).unwrap()
    }

    type Ends = (Result<Channel, ProtoError>, Result<Channel, ProtoError>);

    fn run_with(client_key: &str, cp: Protection, server_key: &str, sp: Protection) -> Ends {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let sk = key(server_key);
        let server = std::thread::spawn(move || server_handshake(&mut b, &sk, sp));
        let c = client_handshake(&mut a, &key(client_key), cp);
        drop(a);
        (c, server.join().unwrap())
    }

    fn run(client_key: &str, server_key: &str) -> Ends {
        run_with(client_key, ENC, server_key, ENC)
    }

    #[test]
    fn same_key_authenticates_both_ways() {
        let (c, s) = run("0123456789abcdef-key", "0123456789abcdef-key");
        c.unwrap();
        s.unwrap();
    }

    #[test]
    fn wrong_key_fails_on_both_sides() {
        let (c, s) = run("0123456789abcdef-key", "0123456789abcdef-other");
        assert!(matches!(c, Err(ProtoError::AuthFailed(_))), "{:?}", c.err());
        assert!(matches!(s, Err(ProtoError::AuthFailed(_))), "{:?}", s.err());
    }

    #[test]
    fn different_protection_is_told_clearly() {
        let (c, s) = run_with("0123456789abcdef-key", ENC, "0123456789abcdef-key", Protection::Integrity);
        let c = c.err().expect("refused");
        assert!(
            matches!(c, ProtoError::ProtectionMismatch { ours: Protection::Encrypted, theirs: Protection::Integrity }),
            "{c}"
        );
        assert!(matches!(s, Err(ProtoError::ProtectionMismatch { .. })));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(ClusterKey::from_file_contents(b"short\n").is_err());
    }

    #[test]
    fn garbage_hello_is_bad_magic() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&[0x47u8; 44]).unwrap();
        let err = server_handshake(&mut b, &key("0123456789abcdef-key"), ENC).err().unwrap();
        assert!(matches!(err, ProtoError::BadMagic));
    }

    /// A version-2 hello (magic, version, 32-byte nonce) gets the version
    /// status in the 77-byte layout that version 2 reads.
    #[test]
    fn other_version_is_told_clearly() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&2u32.to_le_bytes());
        hello.extend_from_slice(&[7u8; 32]);
        a.write_all(&hello).unwrap();
        let err = server_handshake(&mut b, &key("0123456789abcdef-key"), ENC).err().unwrap();
        assert!(matches!(err, ProtoError::VersionMismatch { theirs: 2, ours: PROTOCOL_VERSION }), "{err}");
        let mut ch = [0u8; 77];
        a.read_exact(&mut ch).unwrap();
        assert_eq!(&ch[..8], MAGIC);
        assert_eq!(u32::from_le_bytes(ch[8..12].try_into().unwrap()), PROTOCOL_VERSION);
        assert_eq!(ch[12], STATUS_VERSION);
    }

    /// What a version-2 server answers (77 bytes, version status) is read by
    /// this client as a version mismatch naming both versions.
    #[test]
    fn older_server_is_told_clearly() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let old = std::thread::spawn(move || {
            let mut hello = [0u8; 44];
            b.read_exact(&mut hello).unwrap();
            let mut ch = MAGIC.to_vec();
            ch.extend_from_slice(&2u32.to_le_bytes());
            ch.push(STATUS_VERSION);
            ch.extend_from_slice(&[0u8; 64]);
            b.write_all(&ch).unwrap();
        });
        let err = client_handshake(&mut a, &key("0123456789abcdef-key"), ENC).err().unwrap();
        old.join().unwrap();
        assert!(matches!(err, ProtoError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: 2 }), "{err}");
        assert_eq!(err.to_string(), format!("protocol version mismatch: we speak {PROTOCOL_VERSION}, peer speaks 2"));
    }

    #[test]
    fn a_busy_server_is_told_clearly() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        refuse_busy(&mut b).unwrap();
        let err = client_handshake(&mut a, &key("0123456789abcdef-key"), ENC).err().unwrap();
        assert!(matches!(err, ProtoError::Busy), "{err}");
    }
}
