//! Function instances: what a gateway asks of a worker's daemon, and how an
//! instance's requests and answers travel.
//!
//! A gateway opens one authenticated peer connection (see [`crate::auth`])
//! per instance and sends [`crate::peer::PeerRequest::StartInstance`]. The
//! daemon answers [`crate::peer::PeerResponse::InstanceStarted`] once the
//! instance's process runs, and from then on the connection carries only that
//! instance's traffic, as frames of [`InstanceCall`] (gateway to daemon) and
//! [`InstanceEvent`] (daemon to gateway):
//!
//! ```text
//! gateway                         worker daemon              instance (runtime)
//!   |-- StartInstance(spec) ---------->|-- exec or resume ------------>|
//!   |<-------------- InstanceStarted --|                               |
//!   |<---------- Phase(RuntimeReady) --|<------------- 'P' "runtime" --|
//!   |<-------------- Phase(InitDone) --|<---------------- 'P' "init" --|
//!   |<- Phase(Prepared{seed,gen}) -----|<-- 'P' "prepared:<id>:<gen>" -|  (cold start with prepare_as)
//!   |<----------------- Phase(Ready) --|<--------------- 'P' "ready" --|
//!   |-- Invoke{body} ----------------->|-- len + body ---------------->|
//!   |<--------------- Reply{ok,body} --|<----------- 'R'/'E' + body ---|
//!   |              ...                 |                               |
//!   |<------------------- Ended{...} --|   (the process ended)         |
//! ```
//! Closing the connection (or sending [`InstanceCall::Stop`]) ends the
//! instance: the daemon kills it and removes its container. An instance
//! serves one request at a time; the gateway sends the next `Invoke` only
//! after the previous `Reply`.
//!
//! # The runtime's pipe protocol
//! The daemon gives the instance's process a pipe as stdin and one as stdout
//! (its stderr goes to a third pipe, whose last [`STDERR_TAIL`] bytes the
//! daemon keeps for error messages). Every integer is little-endian.
//! - daemon to runtime, per request: `u32 len`, then `len` bytes of body;
//! - runtime to daemon: `u8 tag`, `u32 len`, `len` bytes, where the tag is
//!   [`TAG_PHASE`] (UTF-8 phase name: `runtime`, `init`,
//!   `prepared:<seed id>:<generation hex>`, `ready`), [`TAG_REPLY`] (the
//!   handler's answer) or [`TAG_ERROR`] (UTF-8 message: the handler raised).
//!
//! A runtime that writes anything else, or more than [`MAX_BODY`] bytes in
//! one frame, is killed, and the gateway gets `Ended` with the reason.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::frame::{read_msg, write_msg, MAX_CONTROL_FRAME};
use crate::local::ChildEnd;
use crate::peer::{PeerRequest, PeerResponse};
use crate::ProtoError;

/// Most bytes of one request or answer body.
pub const MAX_BODY: u64 = 6 << 20;
/// Most bytes of one instance frame on the peer connection (a body and its envelope).
pub const MAX_INSTANCE_FRAME: u64 = MAX_BODY + (64 << 10);
/// Bytes of an instance's stderr kept for error messages.
pub const STDERR_TAIL: usize = 4096;

/// Tag of a phase frame from the runtime.
pub const TAG_PHASE: u8 = b'P';
/// Tag of a handler's answer.
pub const TAG_REPLY: u8 = b'R';
/// Tag of a handler's failure (it raised).
pub const TAG_ERROR: u8 = b'E';

/// Most bytes of a function or instance name, a path or a seed id in a spec.
pub const MAX_NAME: usize = 256;
pub const MAX_PATH: usize = 4096;

/// What a gateway asks a worker to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// The gateway's name for the instance (logs, `mitosis ps`).
    pub name: String,
    /// The function's name.
    pub function: String,
    /// Absolute path, on the worker, of the function's directory (holding `function.py`).
    pub dir: String,
    /// How the instance starts.
    pub start: InstanceStart,
    /// Its container's memory limit; `None`: unlimited.
    pub memory_bytes: Option<u64>,
    /// Offload the instance's memory once it has been idle this many
    /// milliseconds (at least; see [`OffloadPolicy`]); `None`: the worker's
    /// default (`mitosis daemon --offload-idle-after`).
    pub offload_idle_after_ms: Option<u64>,
    /// How it is offloaded.
    pub offload_policy: OffloadPolicy,
}

/// How an instance gives its memory back: FaaSMem's mechanisms, built in
/// user space, and what a remote fork adds to them. Named `mitosis` or
/// `faasmem`, each optionally followed by `-no-packets`, `-no-semi-warm`
/// and (for `mitosis`) `-no-prefetch`: the ablations. Or `tmo`, FaaSMem's
/// other baseline: none of these, the kernel's own reclaim instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OffloadPolicy {
    /// Offload by packet: the pages of the runtime's start after the first
    /// request, and periodically every page not touched in the last two
    /// phases (FaaSMem's rollback).
    pub packets: bool,
    /// Once idle (the P99 of the function's reuse intervals, at least the
    /// instance's idle setting), drain gradually: the worker's rate, by
    /// default 1% of what the instance holds a second, down to 8 MiB.
    pub semi_warm: bool,
    /// Pages unchanged since they came from the seed are dropped at no
    /// transfer (`false`: every page goes to the memory node, as FaaSMem,
    /// which has no seed, must).
    pub seed_backed: bool,
    /// A reused instance's recent packets are prefetched back.
    pub prefetch: bool,
    /// TMO-like: a controller has the kernel reclaim a little of the
    /// instance's memory at a time, to swap, while its memory pressure stays
    /// low (every other field is off).
    pub tmo: bool,
}

impl OffloadPolicy {
    /// Everything: the default.
    pub const MITOSIS: OffloadPolicy = OffloadPolicy { packets: true, semi_warm: true, seed_backed: true, prefetch: true, tmo: false };
    /// FaaSMem as published: packets and semi-warm, every page to the node, no prefetch.
    pub const FAASMEM: OffloadPolicy = OffloadPolicy { packets: true, semi_warm: true, seed_backed: false, prefetch: false, tmo: false };
    /// The kernel's reclaim under a pressure-driven controller, to swap.
    pub const TMO: OffloadPolicy = OffloadPolicy { packets: false, semi_warm: false, seed_backed: false, prefetch: false, tmo: true };

    /// Its name: the base and the ablations that turn parts off.
    pub fn name(self) -> String {
        if self.tmo {
            return "tmo".into();
        }
        let base = OffloadPolicy { packets: true, semi_warm: true, ..self };
        let mut name = String::from(if base == OffloadPolicy::FAASMEM { "faasmem" } else { "mitosis" });
        let mitosis = OffloadPolicy { packets: true, semi_warm: true, prefetch: true, ..self } == OffloadPolicy::MITOSIS;
        if !self.packets {
            name.push_str("-no-packets");
        }
        if !self.semi_warm {
            name.push_str("-no-semi-warm");
        }
        if mitosis && !self.prefetch {
            name.push_str("-no-prefetch");
        }
        name
    }
}

impl Default for OffloadPolicy {
    fn default() -> Self {
        OffloadPolicy::MITOSIS
    }
}

impl std::str::FromStr for OffloadPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || format!("unknown offload policy {s:?} (tmo, or mitosis or faasmem, then any of -no-packets, -no-semi-warm, -no-prefetch)");
        if s == "tmo" {
            return Ok(OffloadPolicy::TMO);
        }
        let (mut policy, mut rest) = if let Some(r) = s.strip_prefix("mitosis") {
            (OffloadPolicy::MITOSIS, r)
        } else if let Some(r) = s.strip_prefix("faasmem") {
            (OffloadPolicy::FAASMEM, r)
        } else {
            return Err(unknown());
        };
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("-no-packets") {
                policy.packets = false;
                rest = r;
            } else if let Some(r) = rest.strip_prefix("-no-semi-warm") {
                policy.semi_warm = false;
                rest = r;
            } else if let (Some(r), true) = (rest.strip_prefix("-no-prefetch"), policy.prefetch) {
                policy.prefetch = false;
                rest = r;
            } else {
                return Err(unknown());
            }
        }
        Ok(policy)
    }
}

impl TryFrom<String> for OffloadPolicy {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<OffloadPolicy> for String {
    fn from(p: OffloadPolicy) -> String {
        p.name()
    }
}

/// How an instance starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceStart {
    /// A new runtime process (a cold start). With `prepare_as`, the runtime
    /// prepares itself as seed `prepare_as` on this worker once its
    /// initialisation is done (and reports `Prepared`), then serves.
    Cold { prepare_as: Option<String> },
    /// A remote fork: a child of seed `seed_id` at the daemon `seed_host`.
    Fork { seed_host: String, seed_id: String },
}

/// A phase boundary an instance reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// The runtime is up, before the function's module is imported.
    RuntimeReady,
    /// The function's module is imported (its initialisation ran).
    InitDone,
    /// The runtime prepared itself as this seed.
    Prepared { seed_id: String, generation: u64 },
    /// It waits for requests. A forked child reports only this.
    Ready,
}

/// Gateway to daemon, after `InstanceStarted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceCall {
    /// Run the handler with this argument.
    Invoke { body: Vec<u8> },
    /// End the instance.
    Stop,
}

/// Daemon to gateway, after `InstanceStarted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceEvent {
    Phase(Phase),
    /// The answer to the last `Invoke`: `ok` false when the handler raised
    /// (then `body` is its message, UTF-8).
    Reply { ok: bool, body: Vec<u8> },
    /// The instance's process ended (or was killed, `reason` says why); the
    /// connection closes after this.
    Ended { end: Option<ChildEnd>, reason: String, stderr_tail: String },
}

/// One instance as a worker lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceUsage {
    pub name: String,
    pub function: String,
    pub pid: i32,
    /// Its container's memory usage (the memory cgroup's `usage_in_bytes`).
    pub memory_bytes: u64,
}

/// A seed on a worker and the memory only it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedUsage {
    pub id: String,
    /// Bytes of the seed's memory that the daemon holds as its own copy
    /// (`prepare --copy`), which no container's usage counts (0 for a
    /// copy-on-write snapshot, whose pages its container's usage counts),
    /// or, for another host's seed, the bytes of its pages in this host's
    /// page cache (the copy its children here share, charged to the daemon).
    pub bytes: u64,
}

/// What a worker reports of itself (`ListInstances`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerUsage {
    pub instances: Vec<InstanceUsage>,
    pub seeds: Vec<SeedUsage>,
}

fn valid_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_NAME {
        return Err(format!("{what} must be 1 to {MAX_NAME} bytes"));
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(format!("{what} {s:?} may hold only letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

impl InstanceSpec {
    /// Checks a spec before any work is done for it.
    pub fn validate(&self) -> Result<(), String> {
        valid_name("an instance name", &self.name)?;
        valid_name("a function name", &self.function)?;
        if !self.dir.starts_with('/') || self.dir.len() > MAX_PATH || self.dir.contains('\0') {
            return Err(format!("the function directory {:?} is not an absolute path", self.dir));
        }
        match &self.start {
            InstanceStart::Cold { prepare_as: Some(id) } => valid_name("a seed id", id)?,
            InstanceStart::Cold { prepare_as: None } => {}
            InstanceStart::Fork { seed_host, seed_id } => {
                valid_name("a seed id", seed_id)?;
                if seed_host.is_empty() || seed_host.len() > MAX_NAME {
                    return Err("the seed host must be addr:port".into());
                }
            }
        }
        if self.memory_bytes.is_some_and(|m| m < (4 << 20)) {
            return Err("a memory limit under 4 MiB cannot run a runtime".into());
        }
        if self.offload_idle_after_ms == Some(0) {
            return Err("an instance cannot be offloaded after 0 ms of idleness".into());
        }
        Ok(())
    }
}

impl InstanceCall {
    pub fn validate(&self) -> Result<(), String> {
        match self {
            InstanceCall::Invoke { body } if body.len() as u64 > MAX_BODY => {
                Err(format!("a request body of {} bytes exceeds the limit of {MAX_BODY}", body.len()))
            }
            _ => Ok(()),
        }
    }
}

/// Client side, over an authenticated stream: asks for an instance and
/// waits for it to run. `Ok` carries the pid, container and start time;
/// the stream then carries [`InstanceCall`]s and [`InstanceEvent`]s.
pub fn start_instance<R: Read, W: Write>(
    reader: &mut R,
    writer: &mut W,
    spec: &InstanceSpec,
) -> Result<(i32, Option<String>, u64), ProtoError> {
    write_msg(writer, &PeerRequest::StartInstance(spec.clone()))?;
    writer.flush()?;
    match read_msg(reader, MAX_CONTROL_FRAME)? {
        PeerResponse::InstanceStarted { pid, container, start_us } => Ok((pid, container, start_us)),
        PeerResponse::Error(e) => Err(ProtoError::Remote(e)),
        _ => Err(ProtoError::Unexpected),
    }
}

/// Sends one call to an instance (and flushes it).
pub fn send_call<W: Write>(writer: &mut W, call: &InstanceCall) -> Result<(), ProtoError> {
    write_msg(writer, call)?;
    writer.flush()?;
    Ok(())
}

/// Reads the next event of an instance.
pub fn read_event<R: Read>(reader: &mut R) -> Result<InstanceEvent, ProtoError> {
    read_msg(reader, MAX_INSTANCE_FRAME)
}

/// Reads the next call to an instance (daemon side), within the frame limit.
pub fn read_call<R: Read>(reader: &mut R) -> Result<InstanceCall, ProtoError> {
    read_msg(reader, MAX_INSTANCE_FRAME)
}

/// Sends one event (daemon side, and flushes it).
pub fn send_event<W: Write>(writer: &mut W, event: &InstanceEvent) -> Result<(), ProtoError> {
    write_msg(writer, event)?;
    writer.flush()?;
    Ok(())
}

/// Parses a phase frame's text (see the module doc).
pub fn parse_phase(text: &str) -> Option<Phase> {
    match text {
        "runtime" => Some(Phase::RuntimeReady),
        "init" => Some(Phase::InitDone),
        "ready" => Some(Phase::Ready),
        _ => {
            let rest = text.strip_prefix("prepared:")?;
            let (id, generation) = rest.rsplit_once(':')?;
            let generation = u64::from_str_radix(generation, 16).ok()?;
            valid_name("a seed id", id).ok()?;
            Some(Phase::Prepared { seed_id: id.to_string(), generation })
        }
    }
}

/// The runtime's frames on its stdout (`u8 tag, u32 len, bytes`, see the
/// module doc), decoded as the bytes come: the daemon pushes what each read
/// of the pipe gave and takes the events out. It holds at most one frame of
/// [`MAX_BODY`] bytes plus what came after it in the same read.
#[derive(Debug, Default)]
pub struct RuntimeFrames {
    buf: Vec<u8>,
}

impl RuntimeFrames {
    /// Appends bytes read from the runtime's stdout.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame as an event, `Err` for a frame the protocol
    /// does not allow (as soon as its header shows it: the runtime is then
    /// killed, so nothing is read after it), `None` for not yet.
    pub fn next_event(&mut self) -> Option<Result<InstanceEvent, String>> {
        let &tag = self.buf.first()?;
        if ![TAG_PHASE, TAG_REPLY, TAG_ERROR].contains(&tag) {
            return Some(Err(format!("the instance wrote a frame with the unknown tag {tag:#04x} on its stdout")));
        }
        let len = u32::from_le_bytes(self.buf.get(1..5)?.try_into().ok()?) as u64;
        if len > MAX_BODY {
            return Some(Err(format!("the instance wrote a frame of {len} bytes (the limit is {MAX_BODY})")));
        }
        let end = 5 + len as usize;
        if self.buf.len() < end {
            return None;
        }
        let body = self.buf[5..end].to_vec();
        self.buf.drain(..end);
        Some(match tag {
            TAG_PHASE => match std::str::from_utf8(&body).ok().and_then(parse_phase) {
                Some(phase) => Ok(InstanceEvent::Phase(phase)),
                None => Err(format!("the instance reported an unknown phase {:?}", String::from_utf8_lossy(&body))),
            },
            TAG_REPLY => Ok(InstanceEvent::Reply { ok: true, body }),
            _ => Ok(InstanceEvent::Reply { ok: false, body }),
        })
    }

    /// Bytes pushed and not yet taken as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// One frame of the runtime's pipe protocol: `tag`, `u32` length, `body`
/// (what a runtime writes on its stdout, and the inverse of [`RuntimeFrames`]).
pub fn runtime_frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + body.len());
    f.push(tag);
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(body);
    f
}

/// The text of a phase frame (the inverse of [`parse_phase`]).
pub fn phase_text(phase: &Phase) -> String {
    match phase {
        Phase::RuntimeReady => "runtime".into(),
        Phase::InitDone => "init".into(),
        Phase::Ready => "ready".into(),
        Phase::Prepared { seed_id, generation } => format!("prepared:{seed_id}:{generation:x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InstanceSpec {
        InstanceSpec {
            name: "hello-1".into(),
            function: "hello".into(),
            dir: "/srv/fn/hello".into(),
            start: InstanceStart::Cold { prepare_as: Some("fn-hello-1".into()) },
            memory_bytes: Some(256 << 20),
            offload_idle_after_ms: None,
            offload_policy: OffloadPolicy::default(),
        }
    }

    #[test]
    fn offload_policies_are_named_by_their_ablations() {
        for name in ["mitosis", "faasmem", "tmo", "mitosis-no-packets", "mitosis-no-semi-warm", "mitosis-no-prefetch", "faasmem-no-packets-no-semi-warm"] {
            let p: OffloadPolicy = name.parse().unwrap();
            assert_eq!(p.name(), name);
        }
        assert_eq!("mitosis".parse::<OffloadPolicy>(), Ok(OffloadPolicy::MITOSIS));
        assert!(!"faasmem".parse::<OffloadPolicy>().unwrap().seed_backed);
        assert_eq!("tmo".parse::<OffloadPolicy>(), Ok(OffloadPolicy::TMO));
        for bad in ["", "tmo-no-packets", "mitosis-no", "faasmem-no-prefetch", "mitosisx"] {
            assert!(bad.parse::<OffloadPolicy>().is_err(), "{bad}");
        }
        let wire = postcard::to_stdvec(&OffloadPolicy::FAASMEM).unwrap();
        assert_eq!(postcard::from_bytes::<OffloadPolicy>(&wire), Ok(OffloadPolicy::FAASMEM));
        let bad = postcard::to_stdvec("nope").unwrap();
        assert!(postcard::from_bytes::<OffloadPolicy>(&bad).is_err(), "an unknown name does not decode");
    }

    #[test]
    fn specs_are_checked() {
        assert!(spec().validate().is_ok());
        let mut s = spec();
        s.dir = "relative/dir".into();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.function = "../etc".into();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.memory_bytes = Some(1 << 20);
        assert!(s.validate().is_err());
        let mut s = spec();
        s.start = InstanceStart::Fork { seed_host: String::new(), seed_id: "x".into() };
        assert!(s.validate().is_err());
    }

    #[test]
    fn oversized_bodies_are_refused() {
        assert!(InstanceCall::Invoke { body: vec![0; MAX_BODY as usize] }.validate().is_ok());
        assert!(InstanceCall::Invoke { body: vec![0; MAX_BODY as usize + 1] }.validate().is_err());
    }

    #[test]
    fn phases_parse() {
        assert_eq!(parse_phase("init"), Some(Phase::InitDone));
        assert_eq!(parse_phase("prepared:fn-a:1f"), Some(Phase::Prepared { seed_id: "fn-a".into(), generation: 0x1f }));
        assert_eq!(parse_phase("prepared:fn a:1f"), None);
        assert_eq!(parse_phase("prepared:x:zz"), None);
        assert_eq!(parse_phase("bogus"), None);
    }

    #[test]
    fn runtime_frames_are_decoded_as_they_come() {
        let mut frames = RuntimeFrames::default();
        let mut all = runtime_frame(TAG_PHASE, b"init");
        all.extend(runtime_frame(TAG_REPLY, b"{\"result\": 1}"));
        all.extend(runtime_frame(TAG_ERROR, b"ValueError: no"));
        // Byte by byte: nothing before a frame is whole.
        let mut events = Vec::new();
        for b in &all {
            frames.push(std::slice::from_ref(b));
            while let Some(e) = frames.next_event() {
                events.push(e.unwrap());
            }
        }
        assert_eq!(events, vec![
            InstanceEvent::Phase(Phase::InitDone),
            InstanceEvent::Reply { ok: true, body: b"{\"result\": 1}".to_vec() },
            InstanceEvent::Reply { ok: false, body: b"ValueError: no".to_vec() },
        ]);
        assert_eq!(frames.buffered(), 0);
    }

    #[test]
    fn bad_runtime_frames_are_refused_at_their_header() {
        let mut frames = RuntimeFrames::default();
        frames.push(b"X");
        assert!(frames.next_event().unwrap().unwrap_err().contains("unknown tag 0x58"));
        let mut frames = RuntimeFrames::default();
        frames.push(&[TAG_REPLY, 0xff, 0xff, 0xff, 0x7f]);
        assert!(frames.next_event().unwrap().unwrap_err().contains("limit"));
        let mut frames = RuntimeFrames::default();
        frames.push(&runtime_frame(TAG_PHASE, b"warming"));
        assert!(frames.next_event().unwrap().unwrap_err().contains("unknown phase"));
    }

    #[test]
    fn phase_texts_parse_back() {
        for phase in [
            Phase::RuntimeReady,
            Phase::InitDone,
            Phase::Ready,
            Phase::Prepared { seed_id: "fn-a".into(), generation: 0x1f },
        ] {
            assert_eq!(parse_phase(&phase_text(&phase)), Some(phase));
        }
    }
}
