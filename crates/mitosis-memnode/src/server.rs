//! `mitosis memnode`'s server: accepts peers, authenticates them as daemons
//! authenticate each other, and serves their requests on the [`Store`], a
//! thread per connection.
//!
//! Bad input never reaches the store: a connection that does not complete
//! the handshake within [`ServerConfig::handshake_timeout`] is dropped, and
//! one address holds at most [`ServerConfig::max_handshakes_per_ip`]
//! connections in their handshake at once (over it, or over
//! [`ServerConfig::max_connections`] in all, a peer is told "busy"); an
//! authenticated peer's undecodable or oversized frame, or a put out of
//! bounds (whose payload can then not be trusted), is answered with a
//! `BadRequest` error and its connection closed; other requests out of
//! bounds are answered with the error and the connection goes on. Other
//! connections never notice.

use std::io::{BufReader, Write};
use std::collections::HashMap;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mitosis_proto::auth::{refuse_busy, server_handshake, ClusterKey};
use mitosis_proto::frame::{read_frame, read_payload, write_msg, MAX_CONTROL_FRAME};
use mitosis_proto::memnode::{MemnodeRequest, MemnodeResponse};
use mitosis_proto::secure::{Protection, SecureWriter};
use mitosis_proto::{ErrorKind, ProtoError, RemoteError};

use crate::deadline::Deadline;
use crate::{Store, StoreError};

/// How the server admits peers.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The cluster key every peer must hold (the daemons' key file).
    pub key: ClusterKey,
    /// Record protection; peers must use the same (daemons' `--no-encrypt`).
    pub protection: Protection,
    /// Connections held at once; over it a peer is told "busy" and closed.
    pub max_connections: usize,
    /// Connections from one address still in their handshake at once (a
    /// member's many authenticated connections are not held against it).
    pub max_handshakes_per_ip: usize,
    /// How long a peer's whole handshake may take.
    pub handshake_timeout: Duration,
}

impl ServerConfig {
    pub fn new(key: ClusterKey, protection: Protection) -> ServerConfig {
        ServerConfig { key, protection, max_connections: 1024, max_handshakes_per_ip: 64, handshake_timeout: Duration::from_secs(5) }
    }
}

/// Silence after which an authenticated peer is probed, between probes, and
/// the probes left unanswered before its connection is dropped (as the
/// daemon's peer server: a peer whose host vanished does not hold a thread).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_PROBES: u32 = 5;

/// Serves `listener` until accepting fails for good (it never returns otherwise).
pub fn serve(listener: TcpListener, store: Arc<Store>, config: ServerConfig) -> std::io::Error {
    let config = Arc::new(config);
    let held = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::new(Handshakes::default());
    loop {
        let mut conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)) => {
                // Out of descriptors or memory: wait for some to close rather than spin.
                tracing::warn!(error = %e, "cannot accept a peer");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted || e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
            Err(e) => return e,
        };
        let Ok(peer) = conn.peer_addr() else { continue };
        let who = peer.to_string();
        let over_total = held.fetch_add(1, Ordering::AcqRel) >= config.max_connections;
        if over_total || !handshakes.admit(peer.ip(), config.max_handshakes_per_ip) {
            held.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(%who, "refused a peer: as many connections as allowed are held (in total, or in handshake from its address)");
            let _ = refuse_busy(&mut conn);
            let _ = conn.shutdown(std::net::Shutdown::Write);
            continue;
        }
        let (store, config, held, handshakes) = (store.clone(), config.clone(), held.clone(), handshakes.clone());
        let spawned = std::thread::Builder::new().name("memnode-peer".into()).spawn(move || {
            let mut in_handshake = Some(HandshakeSlot { table: &handshakes, ip: peer.ip() });
            match serve_peer(&store, &config, conn, &mut in_handshake) {
                Ok(()) | Err(ProtoError::Closed) => tracing::debug!(%who, "peer disconnected"),
                Err(e) => tracing::warn!(%who, error = %mitosis_proto::error_chain(&e), "peer dropped"),
            }
            held.fetch_sub(1, Ordering::AcqRel);
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a thread for a peer");
        }
    }
}

/// Answers a malformed request and counts it.
fn refuse(store: &Store, writer: &mut SecureWriter<TcpStream>, why: String) -> Result<(), ProtoError> {
    store.note_bad_request();
    write_msg(writer, &MemnodeResponse::Error(RemoteError::new(ErrorKind::BadRequest, why)))?;
    writer.flush()?;
    Ok(())
}

/// Connections in their handshake, per address.
#[derive(Default)]
struct Handshakes(Mutex<HashMap<IpAddr, usize>>);

impl Handshakes {
    /// Counts one more from `ip`, unless it already has `cap`.
    fn admit(&self, ip: IpAddr, cap: usize) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= cap {
            return false;
        }
        *n += 1;
        true
    }
}

/// One connection's place among its address's handshakes, given back on drop.
struct HandshakeSlot<'a> {
    table: &'a Handshakes,
    ip: IpAddr,
}

impl Drop for HandshakeSlot<'_> {
    fn drop(&mut self) {
        let mut m = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// `in_handshake` is given back (emptied) once the peer has authenticated.
fn serve_peer(store: &Store, config: &ServerConfig, conn: TcpStream, in_handshake: &mut Option<HandshakeSlot>) -> Result<(), ProtoError> {
    conn.set_nodelay(true)?;
    let channel = server_handshake(&mut Deadline::new(&conn, config.handshake_timeout), &config.key, config.protection)?;
    in_handshake.take();
    conn.set_read_timeout(None)?;
    conn.set_write_timeout(None)?;
    mitosis_sys::net::set_keepalive_timing(&conn, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES)
        .and_then(|()| mitosis_sys::net::set_keepalive(&conn, true))
        .map_err(|e| ProtoError::Io(std::io::Error::from_raw_os_error(e.errno)))?;
    let (mut reader, mut writer) = channel.split(BufReader::with_capacity(256 << 10, conn.try_clone()?), conn);
    let mut greeted = false;
    let mut payload = Vec::new();
    let mut pages = Vec::new();
    loop {
        let body = match read_frame(&mut reader, MAX_CONTROL_FRAME) {
            Ok(b) => b,
            Err(e @ ProtoError::FrameTooLarge { .. }) => {
                refuse(store, &mut writer, e.to_string())?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let req: MemnodeRequest = match postcard::from_bytes(&body) {
            Ok(r) => r,
            Err(_) => {
                let e = ProtoError::Decode { what: "MemnodeRequest" };
                refuse(store, &mut writer, e.to_string())?;
                return Err(e);
            }
        };
        if let Err(why) = req.validate() {
            let is_put = matches!(req, MemnodeRequest::Put { .. });
            refuse(store, &mut writer, why.clone())?;
            if is_put || !greeted {
                return Err(ProtoError::Remote(RemoteError::new(ErrorKind::BadRequest, why)));
            }
            continue;
        }
        if !greeted {
            if !matches!(req, MemnodeRequest::Hello { .. }) {
                let why = "the first request must be the memory node's hello".to_string();
                refuse(store, &mut writer, why.clone())?;
                return Err(ProtoError::Remote(RemoteError::new(ErrorKind::BadRequest, why)));
            }
            greeted = true;
        }
        let answer = match &req {
            MemnodeRequest::Hello { .. } => MemnodeResponse::Hello { capacity: store.capacity(), compression: store.compression() },
            MemnodeRequest::Put { instance, runs, digests } => {
                let len = usize::try_from(req.payload_len()).expect("bounded by validate");
                payload.clear();
                payload = read_payload(&mut reader, len, std::mem::take(&mut payload))?;
                match store.put(instance, runs, &payload, digests) {
                    Ok(s) => MemnodeResponse::Stored {
                        pages: s.pages,
                        instance_pages: s.instance_pages,
                        instance_used_bytes: s.instance_used_bytes,
                    },
                    Err(StoreError::Full { needed, used, capacity }) => {
                        tracing::info!(%instance, needed, used, capacity, "refused a put: the memory node is full");
                        MemnodeResponse::Full { needed, used, capacity }
                    }
                    Err(e) => MemnodeResponse::Error(e.to_remote()),
                }
            }
            MemnodeRequest::Get { instance, runs } => {
                let total = usize::try_from(runs.iter().map(|r| r.1).sum::<u64>()).expect("bounded by validate");
                pages.resize(total, 0);
                match store.get(instance, runs, &mut pages) {
                    Ok(got) => {
                        write_msg(&mut writer, &MemnodeResponse::Pages { len: total as u64, digests: got.digests })?;
                        writer.write_all(&pages)?;
                        writer.flush()?;
                        release_if_large(&mut pages);
                        continue;
                    }
                    Err(e) => MemnodeResponse::Error(e.to_remote()),
                }
            }
            MemnodeRequest::DropInstance { instance } => {
                let (pages, raw_bytes) = store.drop_instance(instance);
                tracing::debug!(%instance, pages, "instance dropped");
                MemnodeResponse::Dropped { pages, raw_bytes }
            }
            MemnodeRequest::Stats => MemnodeResponse::Stats(store.stats()),
        };
        write_msg(&mut writer, &answer)?;
        writer.flush()?;
        release_if_large(&mut payload);
        release_if_large(&mut pages);
    }
}

/// Buffers a connection keeps between requests; a larger one (a big batch)
/// is given back, so that idle connections do not each hold up to 64 MiB.
const KEPT_BUFFER: usize = 4 << 20;

fn release_if_large(buf: &mut Vec<u8>) {
    if buf.capacity() > KEPT_BUFFER {
        *buf = Vec::new();
    }
}
