//! Opening handshake of daemon-to-daemon connections: version check and mutual
//! authentication with the shared cluster key.
//!
//! The layout of these first messages is fixed forever (no postcard), so that
//! any two versions of mitosis can tell each other apart with a clear message:
//!
//! ```text
//! client -> server  HELLO    magic "MITOSIS1" | version u32 LE | client nonce [32]
//! server -> client  CHALLENGE magic | version u32 LE | status u8 | server nonce [32] | server proof [32]
//! client -> server  PROOF    client proof [32]
//! server -> client  VERDICT  status u8
//! ```
//! Status 0 is OK, 1 another version, 2 a wrong key, 4 busy (3 is kept for
//! the protection-mode mismatch of the encrypted protocol; busy: the server holds
//! as many connections as it takes; sent at once, in the CHALLENGE's place).
//! `server proof = HMAC-SHA256(key, "mitosis-server" | client nonce | server nonce)` and
//! `client proof = HMAC-SHA256(key, "mitosis-client" | client nonce | server nonce)`.
//! Both sides prove they hold the key and neither proof can be replayed, since
//! each side picks a fresh nonce. The key never crosses the wire. Traffic after
//! the handshake is authenticated only by the connection (not encrypted): see
//! the README's security section.

use std::io::{Read, Write};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{ProtoError, PROTOCOL_VERSION};

const MAGIC: &[u8; 8] = b"MITOSIS1";
const STATUS_OK: u8 = 0;
const STATUS_VERSION: u8 = 1;
const STATUS_AUTH: u8 = 2;
const STATUS_BUSY: u8 = 4;

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

    fn proof(&self, role: &[u8], client_nonce: &[u8; 32], server_nonce: &[u8; 32]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("hmac takes any key length");
        mac.update(role);
        mac.update(client_nonce);
        mac.update(server_nonce);
        mac.finalize().into_bytes().into()
    }
}

fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    getrandom::getrandom(&mut n).expect("the kernel's random source is available");
    n
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs the client side of the handshake.
pub fn client_handshake<S: Read + Write>(s: &mut S, key: &ClusterKey) -> Result<(), ProtoError> {
    let cn = nonce();
    let mut hello = Vec::with_capacity(44);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    hello.extend_from_slice(&cn);
    s.write_all(&hello)?;

    let mut ch = [0u8; 8 + 4 + 1 + 32 + 32];
    read_exact_or_closed(s, &mut ch)?;
    if &ch[..8] != MAGIC {
        return Err(ProtoError::BadMagic);
    }
    let theirs = u32::from_le_bytes(ch[8..12].try_into().unwrap());
    match ch[12] {
        STATUS_OK => {}
        STATUS_VERSION => return Err(ProtoError::VersionMismatch { ours: PROTOCOL_VERSION, theirs }),
        STATUS_BUSY => return Err(ProtoError::Busy),
        _ => return Err(ProtoError::AuthFailed("server refused the hello")),
    }
    let sn: [u8; 32] = ch[13..45].try_into().unwrap();
    let sproof: [u8; 32] = ch[45..77].try_into().unwrap();
    if !ct_eq(&sproof, &key.proof(b"mitosis-server", &cn, &sn)) {
        return Err(ProtoError::AuthFailed("server does not hold our cluster key"));
    }
    s.write_all(&key.proof(b"mitosis-client", &cn, &sn))?;
    let mut verdict = [0u8; 1];
    read_exact_or_closed(s, &mut verdict)?;
    if verdict[0] != STATUS_OK {
        return Err(ProtoError::AuthFailed("server rejected our cluster key"));
    }
    Ok(())
}

/// Runs the server side of the handshake. On error the connection must be dropped;
/// the client has already been told why where the layout allows it.
pub fn server_handshake<S: Read + Write>(s: &mut S, key: &ClusterKey) -> Result<(), ProtoError> {
    let mut hello = [0u8; 44];
    read_exact_or_closed(s, &mut hello)?;
    if &hello[..8] != MAGIC {
        return Err(ProtoError::BadMagic);
    }
    let theirs = u32::from_le_bytes(hello[8..12].try_into().unwrap());
    let cn: [u8; 32] = hello[12..44].try_into().unwrap();
    let sn = nonce();
    let mut ch = Vec::with_capacity(77);
    ch.extend_from_slice(MAGIC);
    ch.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    if theirs != PROTOCOL_VERSION {
        ch.push(STATUS_VERSION);
        ch.extend_from_slice(&[0u8; 64]);
        s.write_all(&ch)?;
        return Err(ProtoError::VersionMismatch { ours: PROTOCOL_VERSION, theirs });
    }
    ch.push(STATUS_OK);
    ch.extend_from_slice(&sn);
    ch.extend_from_slice(&key.proof(b"mitosis-server", &cn, &sn));
    s.write_all(&ch)?;
    let mut cproof = [0u8; 32];
    read_exact_or_closed(s, &mut cproof)?;
    if !ct_eq(&cproof, &key.proof(b"mitosis-client", &cn, &sn)) {
        let _ = s.write_all(&[STATUS_AUTH]);
        return Err(ProtoError::AuthFailed("client does not hold our cluster key"));
    }
    s.write_all(&[STATUS_OK])?;
    Ok(())
}

/// Answers a connection the server will not serve (it holds as many as it
/// takes) in the CHALLENGE's place, without waiting for the HELLO: a client
/// of any version reads it as a refusal, ours as [`ProtoError::Busy`].
pub fn refuse_busy<W: Write>(w: &mut W) -> std::io::Result<()> {
    let mut ch = Vec::with_capacity(77);
    ch.extend_from_slice(MAGIC);
    ch.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    ch.push(STATUS_BUSY);
    ch.extend_from_slice(&[0u8; 64]);
    w.write_all(&ch)
}

fn read_exact_or_closed<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), ProtoError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtoError::Closed
        } else {
            ProtoError::Io(e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn key(s: &str) -> ClusterKey {
        ClusterKey::from_file_contents(s.as_bytes()).unwrap()
    }

    fn run(client_key: &str, server_key: &str) -> (Result<(), ProtoError>, Result<(), ProtoError>) {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let sk = key(server_key);
        let server = std::thread::spawn(move || server_handshake(&mut b, &sk));
        let c = client_handshake(&mut a, &key(client_key));
        drop(a);
        (c, server.join().unwrap())
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
        assert!(matches!(c, Err(ProtoError::AuthFailed(_))), "{c:?}");
        assert!(s.is_err());
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(ClusterKey::from_file_contents(b"short\n").is_err());
    }

    #[test]
    fn garbage_hello_is_bad_magic() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&[0x47u8; 44]).unwrap();
        let err = server_handshake(&mut b, &key("0123456789abcdef-key")).unwrap_err();
        assert!(matches!(err, ProtoError::BadMagic));
    }

    #[test]
    fn a_busy_server_is_told_clearly() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        refuse_busy(&mut b).unwrap();
        let err = client_handshake(&mut a, &key("0123456789abcdef-key")).unwrap_err();
        assert!(matches!(err, ProtoError::Busy), "{err}");
    }

    #[test]
    fn other_version_is_told_clearly() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&99u32.to_le_bytes());
        hello.extend_from_slice(&[0u8; 32]);
        a.write_all(&hello).unwrap();
        let err = server_handshake(&mut b, &key("0123456789abcdef-key")).unwrap_err();
        assert!(matches!(err, ProtoError::VersionMismatch { theirs: 99, .. }));
        let mut ch = [0u8; 77];
        a.read_exact(&mut ch).unwrap();
        assert_eq!(ch[12], STATUS_VERSION);
    }
}
