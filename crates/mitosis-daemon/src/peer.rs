//! Daemon-to-daemon traffic: the server that serves this host's seeds (and
//! hands connections that start a function instance to [`crate::instance`]),
//! and [`RemoteSource`], the client side used by resumes and pagers (whose
//! reads notice a seed host that stopped answering: [`crate::liveness`]).

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mitosis_proto::auth::{client_handshake, refuse_busy, server_handshake};
use mitosis_proto::frame::{read_frame, read_msg, write_msg, MAX_CONTROL_FRAME, MAX_IMAGE_FRAME};
use mitosis_proto::image::SeedImage;
use mitosis_proto::peer::{PeerRequest, PeerResponse};
use mitosis_proto::secure::{SecureReader, SecureWriter};
use mitosis_proto::{ErrorKind, ProtoError, RemoteError};

use crate::limits::{ConnLimiter, Deadline, Permit, PeerIp};
use crate::liveness::{Stall, WatchedStream};
use crate::{Daemon, WireKey};

/// Accepts peers, one thread each, within the caps: connections in total, and
/// per address those that have not authenticated yet (a cluster member's
/// many authenticated connections are not held against it). A connection
/// over a cap is told "busy" in the handshake's place and closed at once, by
/// this thread.
pub fn serve(daemon: Arc<Daemon>, listener: TcpListener) {
    let caps = daemon.config.limits;
    let total: Arc<ConnLimiter<PeerIp>> = ConnLimiter::new(usize::MAX, caps.peer_total);
    let handshakes: Arc<ConnLimiter<PeerIp>> = ConnLimiter::new(caps.handshakes_per_ip, usize::MAX);
    let mut refused = crate::limits::RefusalLog::default();
    for conn in listener.incoming() {
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors or memory: wait rather than spin.
                tracing::warn!(error = %e, "cannot accept a peer");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let Ok(addr) = conn.peer_addr() else { continue };
        let permits = total.admit(None).and_then(|t| Ok((t, handshakes.admit(Some(PeerIp::of(addr.ip())))?)));
        let (held, handshake) = match permits {
            Ok(p) => p,
            Err(why) => {
                refused.note(&why);
                // 77 bytes into an empty socket buffer: this does not block.
                let _ = refuse_busy(&mut conn);
                // Closing with an unread HELLO would reset the connection,
                // which may discard the answer before the peer reads it.
                let _ = conn.set_nonblocking(true);
                // (A few reads at most: a flood must not hold this thread.)
                let mut hello = [0u8; 64];
                for _ in 0..4 {
                    if !matches!(conn.read(&mut hello), Ok(n) if n > 0) {
                        break;
                    }
                }
                let _ = conn.shutdown(std::net::Shutdown::Write);
                continue;
            }
        };
        let d = daemon.clone();
        let spawned = std::thread::Builder::new().name("peer".into()).spawn(move || {
            let _held = held;
            match serve_peer(&d, conn, handshake) {
                Ok(()) | Err(ProtoError::Closed) => tracing::debug!(who = %addr, "peer disconnected"),
                Err(e) => tracing::warn!(who = %addr, error = %e, "peer dropped"),
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a thread for a peer");
        }
    }
}

/// Silence after which an authenticated client is probed, between probes,
/// and the probes left unanswered before its connection is dropped (about
/// 20 s in all; an idle client costs a probe every 10 s).
const SERVER_KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const SERVER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const SERVER_KEEPALIVE_PROBES: u32 = 5;

/// `handshake`: this connection's place among its address's handshakes,
/// given back once it has authenticated.
fn serve_peer(daemon: &Daemon, conn: TcpStream, handshake: Permit<PeerIp>) -> Result<(), ProtoError> {
    let t0 = std::time::Instant::now();
    conn.set_nodelay(true)?;
    // The whole handshake within the deadline, however slowly it comes.
    let mut stream = Deadline::new(conn.try_clone()?, daemon.config.limits.handshake);
    let channel = server_handshake(&mut stream, &daemon.config.key.current(), daemon.config.key.protection())?;
    drop(handshake);
    tracing::debug!(handshake_us = t0.elapsed().as_micros() as u64, "peer authenticated");
    conn.set_read_timeout(None)?;
    conn.set_write_timeout(None)?;
    // A client whose host went away without closing (a cut link) would hold
    // this thread forever: the kernel gives the connection up once its
    // keepalive probes go unanswered. A live client's kernel answers them,
    // however long the connection is idle.
    mitosis_sys::net::set_keepalive_timing(&conn, SERVER_KEEPALIVE_IDLE, SERVER_KEEPALIVE_INTERVAL, SERVER_KEEPALIVE_PROBES)
        .and_then(|()| mitosis_sys::net::set_keepalive(&conn, true))
        .map_err(|e| ProtoError::Io(std::io::Error::from_raw_os_error(e.errno)))?;
    // Records are sealed on flush, after each answer (a full record is sent at once).
    let (mut reader, mut writer) = channel.split(BufReader::with_capacity(64 << 10, conn.try_clone()?), conn);
    let mut buf = Vec::new();
    loop {
        let req: PeerRequest = match read_msg(&mut reader, MAX_CONTROL_FRAME) {
            Ok(r) => r,
            Err(e @ (ProtoError::Decode { .. } | ProtoError::FrameTooLarge { .. })) => {
                let _ = write_msg(&mut writer, &PeerResponse::Error(RemoteError::new(ErrorKind::BadRequest, e.to_string())));
                let _ = writer.flush();
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if let Err(why) = req.validate() {
            write_msg(&mut writer, &PeerResponse::Error(RemoteError::new(ErrorKind::BadRequest, why)))?;
            writer.flush()?;
            continue;
        }
        // Only these small answers wait for the next request's: a pager's
        // pipelined `ReadPages` are faults waiting, each for its own answer.
        let may_wait = matches!(req, PeerRequest::Ping | PeerRequest::Checksummed { .. });
        match req {
            PeerRequest::GetSeed { id } => {
                let resp = match daemon.seeds.get(&id) {
                    Some(seed) => {
                        seed.children_served.fetch_add(1, Ordering::Relaxed);
                        let working_set = seed.working_set.lock().unwrap().to_vec();
                        PeerResponse::Seed { image: Box::new((*seed.image).clone()), working_set }
                    }
                    None => PeerResponse::Error(RemoteError::new(ErrorKind::NotFound, format!("no seed {id:?} on this host"))),
                };
                write_msg(&mut writer, &resp)?;
            }
            PeerRequest::ReadPages { id, generation, ranges } => match read_pages(daemon, &id, generation, &ranges, &mut buf) {
                Ok(()) => {
                    write_msg(&mut writer, &PeerResponse::Pages { len: buf.len() as u64 })?;
                    writer.write_all(&buf)?;
                }
                Err(message) => write_msg(&mut writer, &PeerResponse::Error(RemoteError::new(ErrorKind::SeedGone, message)))?,
            },
            PeerRequest::RecordWorkingSet { id, generation, ranges } => {
                let resp = match daemon.seeds.get(&id) {
                    Some(seed) if seed.image.generation == generation => {
                        let pages: u64 = ranges.iter().map(|r| r.1 / mitosis_sys::PAGE).sum();
                        if seed.record_working_set(ranges) {
                            tracing::info!(%id, pages, "working set recorded");
                        }
                        PeerResponse::Recorded
                    }
                    _ => PeerResponse::Error(RemoteError::new(ErrorKind::NotFound, format!("no seed {id:?} of generation {generation:#x}"))),
                };
                write_msg(&mut writer, &resp)?;
            }
            PeerRequest::StartInstance(spec) => {
                // The connection belongs to the instance once it has started.
                if crate::instance::serve(daemon, spec, &mut reader, &mut writer)? {
                    return Ok(());
                }
            }
            PeerRequest::ListInstances => {
                write_msg(&mut writer, &PeerResponse::Instances(crate::instance::worker_usage(daemon)))?;
            }
            PeerRequest::DropSeed { id } => write_msg(&mut writer, &crate::instance::drop_seed(daemon, &id))?,
            PeerRequest::Ping => write_msg(&mut writer, &PeerResponse::Pong)?,
            PeerRequest::Checksummed { seq } => write_msg(&mut writer, &checksummed(seq))?,
        }
        // A pipelining client has sent more already: its answers go out
        // together, in one record, once every request that came is answered.
        if !(may_wait && more_buffered(&reader)) {
            writer.flush()?;
        }
    }
}

/// Whether bytes of a further request are already here (opened, or
/// received and not yet opened). A partial record is the rest of a write the
/// client has made, so waiting for it before flushing cannot deadlock.
fn more_buffered(reader: &SecureReader<BufReader<TcpStream>>) -> bool {
    reader.opened_unread() > 0 || !reader.get_ref().buffer().is_empty()
}

/// The answer to `Checksummed { seq }`: a fresh random payload and its checksum.
fn checksummed(seq: u64) -> PeerResponse {
    let mut payload = vec![0u8; mitosis_proto::peer::CHECKSUMMED_PAYLOAD];
    match getrandom::getrandom(&mut payload) {
        Ok(()) => PeerResponse::checksummed(seq, payload),
        Err(e) => PeerResponse::Error(RemoteError::new(ErrorKind::Internal, format!("no random bytes: {e}"))),
    }
}

/// Reads `ranges` of seed `id` at `generation` into `buf` (resized to fit).
fn read_pages(daemon: &Daemon, id: &str, generation: u64, ranges: &[(u64, u64)], buf: &mut Vec<u8>) -> Result<(), String> {
    let seed = match daemon.seeds.get(id) {
        Some(s) if s.image.generation == generation => s,
        Some(_) => return Err(format!("seed {id:?} was prepared again; generation {generation:#x} is gone")),
        None => return Err(format!("seed {id:?} was dropped")),
    };
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    buf.resize(total as usize, 0);
    seed.memory.read(ranges, buf).map_err(|e| format!("seed {id:?}: {e}"))?;
    seed.pages_served.fetch_add(total / mitosis_sys::PAGE, Ordering::Relaxed);
    seed.bytes_served.fetch_add(total, Ordering::Relaxed);
    Ok(())
}

/// A seed's image and recorded working set as fetched from its host, and
/// the size of the answer.
pub struct FetchedSeed {
    pub image: SeedImage,
    pub working_set: Vec<(u64, u64)>,
    pub bytes: u64,
}

/// An authenticated connection to another daemon; every byte after the
/// handshake in authenticated (by default encrypted) records. Its reads are
/// watched for a peer that stopped answering ([`crate::liveness`]): they fail
/// within about [`crate::liveness::SILENCE`] of a cut link, and after the
/// connection's timeout for a peer whose kernel answers but whose daemon does not.
pub struct PeerConn {
    reader: SecureReader<BufReader<WatchedStream>>,
    writer: SecureWriter<TcpStream>,
}

impl PeerConn {
    /// Connects to `addr` and authenticates both ways with `key`'s current key.
    pub fn connect(addr: &str, key: &WireKey, timeout: Duration) -> Result<PeerConn, ProtoError> {
        let sa = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| ProtoError::Io(std::io::Error::other(format!("{addr} does not resolve"))))?;
        let stream = TcpStream::connect_timeout(&sa, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut s = stream.try_clone()?;
        let channel = client_handshake(&mut s, &key.current(), key.protection())?;
        // From here on the watch decides how long a read may wait (the
        // socket's own timeout would cut a slow record in half).
        stream.set_read_timeout(None)?;
        let watched = WatchedStream::new(stream.try_clone()?, timeout)?;
        let (reader, writer) = channel.split(BufReader::with_capacity(256 << 10, watched), stream);
        Ok(PeerConn { reader, writer })
    }

    /// Fetches seed `id`'s image and recorded working set; also returns the
    /// answer's encoded size.
    pub fn get_seed(&mut self, id: &str) -> Result<FetchedSeed, ProtoError> {
        write_msg(&mut self.writer, &PeerRequest::GetSeed { id: id.to_string() })?;
        self.writer.flush()?;
        let body = read_frame(&mut self.reader, MAX_IMAGE_FRAME)?;
        match postcard::from_bytes(&body).map_err(|_| ProtoError::Decode { what: "PeerResponse" })? {
            PeerResponse::Seed { image, working_set } => {
                image.validate().map_err(ProtoError::InvalidImage)?;
                Ok(FetchedSeed { image: *image, working_set, bytes: body.len() as u64 })
            }
            PeerResponse::Error(e) => Err(ProtoError::Remote(e)),
            _ => Err(ProtoError::Unexpected),
        }
    }

    /// Reports the working set of a child of seed `id` at `generation`.
    pub fn record_working_set(&mut self, id: &str, generation: u64, ranges: Vec<(u64, u64)>) -> Result<(), ProtoError> {
        write_msg(&mut self.writer, &PeerRequest::RecordWorkingSet { id: id.to_string(), generation, ranges })?;
        self.writer.flush()?;
        match read_msg(&mut self.reader, MAX_CONTROL_FRAME)? {
            PeerResponse::Recorded => Ok(()),
            PeerResponse::Error(e) => Err(ProtoError::Remote(e)),
            _ => Err(ProtoError::Unexpected),
        }
    }

    /// Sends a `ReadPages` without waiting for its answer (answers come in order).
    pub fn send_read_pages(&mut self, id: &str, generation: u64, ranges: &[(u64, u64)]) -> Result<(), ProtoError> {
        write_msg(&mut self.writer, &PeerRequest::ReadPages { id: id.to_string(), generation, ranges: ranges.to_vec() })?;
        self.writer.flush()?;
        Ok(())
    }

    /// Takes the answer to the oldest outstanding `ReadPages` into `out`.
    pub fn receive_pages(&mut self, out: &mut [u8]) -> Result<(), ProtoError> {
        match read_msg(&mut self.reader, MAX_CONTROL_FRAME)? {
            PeerResponse::Pages { len } if len == out.len() as u64 => {
                self.reader.read_exact(out)?;
                Ok(())
            }
            PeerResponse::Error(e) => Err(ProtoError::Remote(e)),
            _ => Err(ProtoError::Unexpected),
        }
    }
}

/// Pages of one seed generation on another host: the pager's [`PageSource`](mitosis_pager::PageSource).
pub struct RemoteSource {
    pub addr: String,
    pub key: WireKey,
    pub id: String,
    pub generation: u64,
    pub timeout: Duration,
    pub conn: PeerConn,
}

impl RemoteSource {
    /// The same source on a new connection (for a forked child's pager).
    pub fn duplicate_remote(&self) -> Result<RemoteSource, String> {
        let conn = PeerConn::connect(&self.addr, &self.key, self.timeout).map_err(|e| e.to_string())?;
        Ok(RemoteSource {
            addr: self.addr.clone(),
            key: self.key.clone(),
            id: self.id.clone(),
            generation: self.generation,
            timeout: self.timeout,
            conn,
        })
    }

    fn explain(&self, e: ProtoError) -> String {
        match e {
            ProtoError::Io(io) if Stall::of(&io).is_some() => format!("seed host {} {io}", self.addr),
            ProtoError::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock || io.kind() == std::io::ErrorKind::TimedOut => {
                format!("seed host {} did not answer within {:?}", self.addr, self.timeout)
            }
            ProtoError::Io(io) => format!("connection to seed host {} failed: {io}", self.addr),
            ProtoError::Closed => format!("seed host {} closed the connection", self.addr),
            other => format!("seed host {}: {other}", self.addr),
        }
    }
}

impl mitosis_pager::PageSource for RemoteSource {
    fn request(&mut self, ranges: &[(u64, u64)]) -> Result<(), String> {
        self.conn.send_read_pages(&self.id, self.generation, ranges).map_err(|e| self.explain(e))
    }

    fn receive(&mut self, out: &mut [u8]) -> Result<(), mitosis_pager::FetchError> {
        self.conn.receive_pages(out).map_err(|e| match e {
            // An answer: the seed host goes on answering the next requests.
            ProtoError::Remote(_) => mitosis_pager::FetchError::Refused(self.explain(e)),
            e => mitosis_pager::FetchError::Broken(self.explain(e)),
        })
    }

    fn duplicate(&self) -> Result<Box<dyn mitosis_pager::PageSource>, String> {
        Ok(Box::new(self.duplicate_remote()?))
    }
}
