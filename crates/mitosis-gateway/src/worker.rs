//! Talking to a worker's daemon: authenticated connections, instances started
//! on them, and the worker's own questions (`ListInstances`, `DropSeed`).
//!
//! Everything here is blocking (the daemons speak a blocking protocol); the
//! gateway calls it from blocking threads.

use std::io::BufReader;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use mitosis_proto::auth::{client_handshake, ClusterKey};
use mitosis_proto::frame::{read_msg, write_msg, MAX_CONTROL_FRAME};
use mitosis_proto::instance::{start_instance, InstanceSpec, WorkerUsage};
use mitosis_proto::peer::{PeerRequest, PeerResponse};
use mitosis_proto::secure::{Protection, SecureReader, SecureWriter};
use mitosis_proto::ProtoError;

/// How the gateway authenticates to workers.
#[derive(Debug, Clone)]
pub struct WorkerAuth {
    pub key: ClusterKey,
    pub protection: Protection,
    /// Connect and handshake deadline.
    pub connect_timeout: Duration,
}

/// An authenticated connection to one worker's daemon.
pub struct WorkerConn {
    pub(crate) reader: SecureReader<BufReader<TcpStream>>,
    pub(crate) writer: SecureWriter<TcpStream>,
    /// For deadlines and for cutting the connection from another thread.
    pub(crate) stream: TcpStream,
}

impl WorkerConn {
    /// Connects to the daemon at `addr` and authenticates both ways.
    pub fn connect(addr: &str, auth: &WorkerAuth) -> Result<WorkerConn, ProtoError> {
        let sa = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| ProtoError::Io(std::io::Error::other(format!("{addr} does not resolve"))))?;
        let stream = TcpStream::connect_timeout(&sa, auth.connect_timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(auth.connect_timeout))?;
        stream.set_write_timeout(Some(auth.connect_timeout))?;
        let mut s = stream.try_clone()?;
        let channel = client_handshake(&mut s, &auth.key, auth.protection)?;
        let (reader, writer) = channel.split(BufReader::with_capacity(64 << 10, stream.try_clone()?), stream.try_clone()?);
        Ok(WorkerConn { reader, writer, stream })
    }

    fn call(&mut self, request: &PeerRequest) -> Result<PeerResponse, ProtoError> {
        write_msg(&mut self.writer, request)?;
        std::io::Write::flush(&mut self.writer)?;
        match read_msg(&mut self.reader, MAX_CONTROL_FRAME)? {
            PeerResponse::Error(e) => Err(ProtoError::Remote(e)),
            other => Ok(other),
        }
    }

    /// The worker's instances and their memory.
    pub fn list_instances(&mut self) -> Result<WorkerUsage, ProtoError> {
        match self.call(&PeerRequest::ListInstances)? {
            PeerResponse::Instances(usage) => Ok(usage),
            _ => Err(ProtoError::Unexpected),
        }
    }

    /// Drops seed `id` on the worker.
    pub fn drop_seed(&mut self, id: &str) -> Result<(), ProtoError> {
        match self.call(&PeerRequest::DropSeed { id: id.to_string() })? {
            PeerResponse::Dropped => Ok(()),
            _ => Err(ProtoError::Unexpected),
        }
    }

    /// Starts an instance; the connection then belongs to it. `timeout`
    /// bounds the wait for the worker's answer (a remote fork's restore or a
    /// cold start's exec; not the instance's initialisation).
    pub fn start_instance(mut self, spec: &InstanceSpec, timeout: Duration) -> Result<(StartedOn, WorkerConn), ProtoError> {
        self.stream.set_read_timeout(Some(timeout))?;
        let (pid, container, start_us) = start_instance(&mut self.reader, &mut self.writer, spec)?;
        Ok((StartedOn { pid, container, start_us }, self))
    }
}

/// Where and how an instance's process started.
#[derive(Debug, Clone)]
pub struct StartedOn {
    pub pid: i32,
    pub container: Option<String>,
    /// The worker's time to start the process.
    pub start_us: u64,
}
