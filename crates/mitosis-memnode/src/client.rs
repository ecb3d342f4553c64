//! A connection to a memory node, for the daemon's offloader (puts, drops)
//! and its pager (gets, on faults): one request at a time.
//!
//! Every page put carries its digest ([`page_digest`]) and every page got is
//! checked against the digest the node returns with it, so a page of another
//! instance or address, or one the node mangled, is an error and never
//! reaches the caller as good; a page never put is the node's `NotFound`
//! error, never zeros. After an error that leaves the connection unusable
//! (see [`MemnodeError::connection_usable`]) every call fails with
//! [`MemnodeError::Broken`]: connect again.

use std::io::{BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use mitosis_proto::auth::{client_handshake, ClusterKey};
use mitosis_proto::frame::{read_msg, write_msg, MAX_CONTROL_FRAME};
use mitosis_proto::memnode::{
    page_digest, validate_instance, validate_runs, Compression, MemnodeRequest, MemnodeResponse, MemnodeStats, PageDigest,
    MEMNODE_MAGIC,
};
use mitosis_proto::secure::{Protection, SecureReader, SecureWriter};
use mitosis_proto::{ErrorKind, ProtoError};

use crate::codec::PAGE;
use crate::MemnodeError;

/// What a stored put left on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutReceipt {
    pub pages: u64,
    /// The instance's pages on the node now, and the bytes they count for.
    pub instance_pages: u64,
    pub instance_used_bytes: u64,
}

/// An authenticated connection to a memory node.
pub struct MemnodeClient {
    addr: String,
    reader: SecureReader<BufReader<TcpStream>>,
    writer: SecureWriter<TcpStream>,
    capacity: u64,
    compression: Compression,
    broken: bool,
}

impl MemnodeClient {
    /// Connects to the memory node at `addr`, authenticates both ways with
    /// `key` and checks that it is a memory node. `timeout` bounds the
    /// connect and every later read and write.
    pub fn connect(addr: &str, key: &ClusterKey, protection: Protection, timeout: Duration) -> Result<MemnodeClient, MemnodeError> {
        let fail = |source: ProtoError| MemnodeError::Connect { addr: addr.to_string(), source };
        let sa = addr
            .to_socket_addrs()
            .map_err(|e| fail(e.into()))?
            .next()
            .ok_or_else(|| fail(ProtoError::Io(std::io::Error::other(format!("{addr} does not resolve")))))?;
        let stream = TcpStream::connect_timeout(&sa, timeout).map_err(|e| fail(e.into()))?;
        stream.set_nodelay(true).map_err(|e| fail(e.into()))?;
        stream.set_read_timeout(Some(timeout)).map_err(|e| fail(e.into()))?;
        stream.set_write_timeout(Some(timeout)).map_err(|e| fail(e.into()))?;
        let mut s = stream.try_clone().map_err(|e| fail(e.into()))?;
        let channel = client_handshake(&mut s, key, protection).map_err(fail)?;
        // Small: a page answer's 64 KiB records then go from the socket
        // straight to the record buffer, not through this one first.
        let reader = BufReader::with_capacity(16 << 10, stream.try_clone().map_err(|e| fail(e.into()))?);
        let (reader, writer) = channel.split(reader, stream);
        let mut client = MemnodeClient {
            addr: addr.to_string(),
            reader,
            writer,
            capacity: 0,
            compression: Compression::None,
            broken: false,
        };
        let not_memnode = || MemnodeError::NotAMemnode { addr: addr.to_string() };
        write_msg(&mut client.writer, &MemnodeRequest::Hello { magic: MEMNODE_MAGIC })?;
        client.writer.flush().map_err(ProtoError::from)?;
        match read_msg(&mut client.reader, MAX_CONTROL_FRAME) {
            Ok(MemnodeResponse::Hello { capacity, compression }) => {
                client.capacity = capacity;
                client.compression = compression;
                Ok(client)
            }
            Ok(_) | Err(ProtoError::Decode { .. }) => Err(not_memnode()),
            Err(e) => Err(fail(e)),
        }
    }

    /// The node's address as given to [`MemnodeClient::connect`].
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The node's capacity in bytes, as it said when connected.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// How the node stores pages.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Runs one request; an error that leaves the stream in an unknown state
    /// closes this connection for good.
    fn call<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, MemnodeError>) -> Result<T, MemnodeError> {
        if self.broken {
            return Err(MemnodeError::Broken);
        }
        let r = f(self);
        if let Err(e) = &r {
            if !e.connection_usable() {
                self.broken = true;
            }
        }
        r
    }

    /// Stores `runs` (address, bytes; page aligned, whole pages, not
    /// overlapping) of `instance`, replacing pages stored at those addresses.
    /// All or nothing: [`MemnodeError::Full`] stores none of them.
    pub fn put(&mut self, instance: &str, runs: &[(u64, &[u8])]) -> Result<PutReceipt, MemnodeError> {
        validate_instance(instance).map_err(MemnodeError::BadRequest)?;
        let ranges: Vec<(u64, u64)> = runs.iter().map(|(a, d)| (*a, d.len() as u64)).collect();
        validate_runs(&ranges).map_err(MemnodeError::BadRequest)?;
        let mut digests: Vec<PageDigest> = Vec::with_capacity(ranges.iter().map(|r| r.1 as usize / PAGE).sum());
        for (addr, data) in runs {
            for (i, page) in data.chunks_exact(PAGE).enumerate() {
                digests.push(page_digest(instance, addr + (i * PAGE) as u64, page));
            }
        }
        self.call(|c| {
            write_msg(&mut c.writer, &MemnodeRequest::Put { instance: instance.to_string(), runs: ranges, digests })?;
            for (_, data) in runs {
                c.writer.write_all(data).map_err(ProtoError::from)?;
            }
            c.writer.flush().map_err(ProtoError::from)?;
            match read_msg(&mut c.reader, MAX_CONTROL_FRAME)? {
                MemnodeResponse::Stored { pages, instance_pages, instance_used_bytes } => {
                    Ok(PutReceipt { pages, instance_pages, instance_used_bytes })
                }
                MemnodeResponse::Full { needed, used, capacity } => Err(MemnodeError::Full { needed, used, capacity }),
                MemnodeResponse::Error(e) => Err(remote(e)),
                _ => Err(ProtoError::Unexpected.into()),
            }
        })
    }

    /// Gets the pages of `runs` (page aligned, not overlapping) of
    /// `instance` into `out` (exactly their bytes, back to back), each
    /// checked against its digest. On error `out` holds nothing usable.
    pub fn get(&mut self, instance: &str, runs: &[(u64, u64)], out: &mut [u8]) -> Result<(), MemnodeError> {
        self.ask_get(instance, runs)?;
        self.take_get(instance, runs, out)
    }

    /// Sends a get of `runs` of `instance` without waiting for its answer,
    /// which [`MemnodeClient::take_get`] takes: answers come in the order
    /// asked, so the node works on the next while the last one is taken in.
    pub fn ask_get(&mut self, instance: &str, runs: &[(u64, u64)]) -> Result<(), MemnodeError> {
        validate_instance(instance).map_err(MemnodeError::BadRequest)?;
        validate_runs(runs).map_err(MemnodeError::BadRequest)?;
        self.call(|c| {
            write_msg(&mut c.writer, &MemnodeRequest::Get { instance: instance.to_string(), runs: runs.to_vec() })?;
            c.writer.flush().map_err(ProtoError::from)?;
            Ok(())
        })
    }

    /// Takes the answer to the oldest [`MemnodeClient::ask_get`], which
    /// asked for `runs` of `instance`, into `out`, as [`MemnodeClient::get`].
    pub fn take_get(&mut self, instance: &str, runs: &[(u64, u64)], out: &mut [u8]) -> Result<(), MemnodeError> {
        let total = validate_runs(runs).map_err(MemnodeError::BadRequest)?;
        if total != out.len() as u64 {
            // The answer is left unread: the stream is out of step.
            self.broken = true;
            return Err(MemnodeError::BadRequest(format!("{} bytes of room for runs of {total} bytes", out.len())));
        }
        self.call(|c| {
            let digests = match read_msg(&mut c.reader, MAX_CONTROL_FRAME)? {
                MemnodeResponse::Pages { len, digests } if len == total && digests.len() as u64 * PAGE as u64 == total => digests,
                MemnodeResponse::Error(e) => return Err(remote(e)),
                _ => return Err(ProtoError::Unexpected.into()),
            };
            c.reader.read_exact(out).map_err(ProtoError::from)?;
            let addrs = runs.iter().flat_map(|&(a, l)| (a..a + l).step_by(PAGE));
            for ((addr, page), digest) in addrs.zip(out.chunks_exact(PAGE)).zip(&digests) {
                if page_digest(instance, addr, page) != *digest {
                    return Err(MemnodeError::WrongPage { instance: instance.to_string(), addr });
                }
            }
            Ok(())
        })
    }

    /// Forgets every page of `instance` on the node; returns the pages and
    /// raw bytes it held (0 if none).
    pub fn drop_instance(&mut self, instance: &str) -> Result<(u64, u64), MemnodeError> {
        validate_instance(instance).map_err(MemnodeError::BadRequest)?;
        self.call(|c| {
            write_msg(&mut c.writer, &MemnodeRequest::DropInstance { instance: instance.to_string() })?;
            c.writer.flush().map_err(ProtoError::from)?;
            match read_msg(&mut c.reader, MAX_CONTROL_FRAME)? {
                MemnodeResponse::Dropped { pages, raw_bytes } => Ok((pages, raw_bytes)),
                MemnodeResponse::Error(e) => Err(remote(e)),
                _ => Err(ProtoError::Unexpected.into()),
            }
        })
    }

    /// The node's counters.
    pub fn stats(&mut self) -> Result<MemnodeStats, MemnodeError> {
        self.call(|c| {
            write_msg(&mut c.writer, &MemnodeRequest::Stats)?;
            c.writer.flush().map_err(ProtoError::from)?;
            match read_msg(&mut c.reader, MAX_CONTROL_FRAME)? {
                MemnodeResponse::Stats(s) => Ok(s),
                MemnodeResponse::Error(e) => Err(remote(e)),
                _ => Err(ProtoError::Unexpected.into()),
            }
        })
    }
}

/// A node's error answer; a request it could not parse is a bug on our side
/// or a stream out of step, so it is not "usable".
fn remote(e: mitosis_proto::RemoteError) -> MemnodeError {
    if e.kind == ErrorKind::BadRequest {
        MemnodeError::Proto(ProtoError::Remote(e))
    } else {
        MemnodeError::Remote(e)
    }
}
