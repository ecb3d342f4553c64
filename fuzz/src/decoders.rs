//! What each fuzz target does with its input: decode arbitrary bytes through
//! the entry point a daemon or client uses on bytes from the wire, and check
//! what must hold for any input. A check that fails panics (the fuzzer saves
//! the input as a crash).
//!
//! This one file is both the body of the fuzz targets (`fuzz/fuzz_targets/*`,
//! through the `mitosis_fuzz` crate) and of the corpus replay test
//! (`crates/mitosis-proto/tests/fuzz_corpus.rs`, which includes it by path),
//! so that the normal test suite runs every corpus file through exactly what
//! the fuzzer ran. It uses nothing but `mitosis_proto`, `postcard`, `serde` and std.
//!
//! Every target checks, for any input:
//! - no panic (overflow checks are on in fuzz builds);
//! - frames longer than the reader's limit are refused before their payload
//!   is read, and nothing bigger than what arrived is allocated (the fuzz
//!   binaries cap the memory a run may hold, see `fuzz/src/lib.rs`);
//! - every message that decodes encodes again, and that encoding decodes to
//!   the same value (round trip);
//! - `validate()`, where the receiver calls it, returns instead of panicking.

use std::io::{self, Read, Write};

use mitosis_proto::auth::{client_handshake, refuse_busy, server_handshake, ClusterKey};
use mitosis_proto::frame::{read_frame, read_msg, read_payload, write_msg, MAX_CONTROL_FRAME, MAX_IMAGE_FRAME};
use mitosis_proto::image::SeedImage;
use mitosis_proto::instance::{
    parse_phase, phase_text, read_call, read_event, runtime_frame, InstanceEvent, RuntimeFrames, MAX_BODY,
    MAX_INSTANCE_FRAME, TAG_PHASE,
};
use mitosis_proto::local::{ChildEnd, ChildInfo, Envelope, LocalResponse, CHILD_MARKER};
use mitosis_proto::memnode::{MemnodeRequest, MemnodeResponse};
use mitosis_proto::peer::{check_checksummed, PeerRequest, PeerResponse};
use mitosis_proto::secure::{Channel, Protection, MAX_RECORD};
use mitosis_proto::{ProtoError, PROTOCOL_VERSION};
use serde::{de::DeserializeOwned, Serialize};

/// What a target does with one input.
pub type Target = fn(&[u8]);

/// The fuzz targets: name (the directory of its corpus and the binary's
/// name) and what it does with one input.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", frame),
    ("handshake", handshake),
    ("record", record),
    ("peer_request", peer_request),
    ("peer_response", peer_response),
    ("memnode_request", memnode_request),
    ("memnode_response", memnode_response),
    ("local_request", local_request),
    ("local_response", local_response),
    ("seed_image", seed_image),
    ("instance", instance),
    ("runtime_pipe", runtime_pipe),
];

/// The cluster key of the fuzzed handshakes (any key: the input never holds it).
pub const FUZZ_KEY: &[u8] = b"mitosis-fuzz-cluster-key";

/// `msg` encoded and decoded again must be `msg`, and encode to the same bytes.
fn assert_round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: &T) {
    let encoded = postcard::to_stdvec(msg).expect("a decoded message encodes");
    let again: T = postcard::from_bytes(&encoded).expect("an encoded message decodes");
    assert_eq!(&again, msg, "round trip changed the message");
    assert_eq!(postcard::to_stdvec(&again).unwrap(), encoded, "round trip changed the encoding");
    // And as a frame, through the reader's own entry point.
    let mut framed = Vec::new();
    write_msg(&mut framed, msg).expect("a decoded message frames");
    let back: T = read_msg(&mut framed.as_slice(), framed.len() as u64).expect("a framed message reads back");
    assert_eq!(&back, msg, "frame round trip changed the message");
}

/// Reads messages from `data` with `read` (whose frame limit is `limit`)
/// as one stream of frames, the way a server reads pipelined requests, until
/// the stream ends or fails; hands each to `check`. Every failure is one the
/// reader reports: the stream's end, an undecodable message, a frame over
/// the limit (refused by its header), or a frame cut short.
fn read_stream<T>(
    data: &[u8],
    limit: u64,
    read: impl Fn(&mut &[u8]) -> Result<T, ProtoError>,
    mut check: impl FnMut(T),
) {
    let mut r = data;
    loop {
        match read(&mut r) {
            Ok(msg) => check(msg),
            Err(ProtoError::Closed | ProtoError::Decode { .. }) => return,
            Err(ProtoError::FrameTooLarge { len, limit: l }) => {
                assert!(len > l && l == limit, "frame of {len} refused under the limit {l}");
                return;
            }
            Err(ProtoError::Io(e)) => {
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
                return;
            }
            Err(e) => panic!("a frame reader failed with {e:?}"),
        }
    }
}

/// Length-prefixed frames (`frame::read_frame`, `read_payload`) under the
/// daemon's limit, the client's and a tiny one: a frame that reads is
/// exactly the bytes announced, and the same when part of its payload had
/// already arrived; a frame over the limit is refused by its header.
pub fn frame(data: &[u8]) {
    for limit in [MAX_CONTROL_FRAME, MAX_IMAGE_FRAME, 16] {
        let mut r = data;
        match read_frame(&mut r, limit) {
            Ok(body) => {
                let len = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
                assert!(body.len() as u64 <= limit);
                assert_eq!(body.len(), len);
                assert_eq!(body, &data[4..4 + len]);
                // Re-encoded, the frame is the bytes that came.
                let mut again = (len as u32).to_le_bytes().to_vec();
                again.extend_from_slice(&body);
                assert_eq!(again, &data[..4 + len]);
                // The same payload, some of it received before.
                let split = (data.get(4).copied().unwrap_or(0) as usize).min(len);
                let mut rest = &data[4 + split..];
                let joined = read_payload(&mut rest, len, data[4..4 + split].to_vec()).expect("the payload is all there");
                assert_eq!(joined, body);
            }
            Err(ProtoError::Closed) => assert!(data.len() < 4),
            Err(ProtoError::FrameTooLarge { len, .. }) => assert!(len > limit),
            Err(ProtoError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}"),
            Err(e) => panic!("read_frame failed with {e:?}"),
        }
    }
}

/// One side of a handshake whose peer's bytes are `incoming`; what our side
/// sends is kept.
struct Scripted<'a> {
    incoming: &'a [u8],
    sent: Vec<u8>,
}

impl Read for Scripted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.incoming.read(buf)
    }
}

impl Write for Scripted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sent.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const MAGIC: &[u8] = b"MITOSIS1";
const HELLO_LEN: usize = 44;
const REPLY_LEN: usize = 77;

/// The opening handshake (`auth`): a server reading a client's bytes, a
/// client reading a server's, a client told "busy", and the key file
/// parser. Nobody without the cluster key gets a channel whose records they
/// can make (a replayed client handshake gets one, whose records it cannot
/// make); each side sends only the fixed layouts (HELLO, REPLY, a status
/// byte, a short Noise message).
pub fn handshake(data: &[u8]) {
    let key = ClusterKey::from_file_contents(FUZZ_KEY).unwrap();
    for protection in [Protection::Encrypted, Protection::Integrity] {
        // Server side: the input is what a client sent.
        let mut s = Scripted { incoming: data, sent: Vec::new() };
        match server_handshake(&mut s, &key, protection) {
            // Only a first Noise message made with the key gets here: one
            // replayed from a real client (a seed of the corpus is one).
            // The session's keys are new all the same (the server's
            // ephemeral key is), so no record that follows is accepted.
            Ok(channel) => {
                assert_eq!(s.sent.len(), REPLY_LEN + 1 + 2 + 48, "server sent {} bytes", s.sent.len());
                let (mut reader, _) = channel.split(s.incoming, io::sink());
                let mut delivered = Vec::new();
                let end = reader.read_to_end(&mut delivered);
                assert!(delivered.is_empty(), "a replayed handshake's records were accepted");
                assert!(end.is_err() || s.incoming.is_empty(), "records after a replayed handshake were not refused");
            }
            Err(e) => assert!(
                matches!(
                    e,
                    ProtoError::Closed
                        | ProtoError::BadMagic
                        | ProtoError::VersionMismatch { .. }
                        | ProtoError::ProtectionMismatch { .. }
                        | ProtoError::Decode { .. }
                        | ProtoError::FrameTooLarge { .. }
                        | ProtoError::AuthFailed(_)
                ),
                "server: {e:?}"
            ),
        }
        // Nothing, a REPLY, a REPLY and the AUTH status, or (a replay) all of the server's handshake.
        assert!(
            [0, REPLY_LEN, REPLY_LEN + 1, REPLY_LEN + 1 + 2 + 48].contains(&s.sent.len()),
            "server sent {} bytes",
            s.sent.len()
        );
        if !s.sent.is_empty() {
            assert_eq!(&s.sent[..8], MAGIC);
            assert_eq!(u32::from_le_bytes(s.sent[8..12].try_into().unwrap()), PROTOCOL_VERSION);
        }

        // Client side: the input is what a server answered.
        let mut c = Scripted { incoming: data, sent: Vec::new() };
        match client_handshake(&mut c, &key, protection) {
            Ok(_) => panic!("a client handshake succeeded against a server without the cluster key"),
            Err(e) => assert!(
                matches!(
                    e,
                    ProtoError::Closed
                        | ProtoError::BadMagic
                        | ProtoError::VersionMismatch { .. }
                        | ProtoError::ProtectionMismatch { .. }
                        | ProtoError::Busy
                        | ProtoError::Unexpected
                        | ProtoError::FrameTooLarge { .. }
                        | ProtoError::AuthFailed(_)
                ),
                "client: {e:?}"
            ),
        }
        // The HELLO, then perhaps the first Noise message (u16 length and 48 bytes).
        assert!(c.sent.len() == HELLO_LEN || c.sent.len() == HELLO_LEN + 2 + 48, "client sent {} bytes", c.sent.len());
        assert_eq!(&c.sent[..8], MAGIC);

        // A busy server's answer, whatever follows it, is "busy".
        let mut busy = Vec::new();
        refuse_busy(&mut busy).unwrap();
        assert_eq!(busy.len(), REPLY_LEN);
        busy.extend_from_slice(data);
        let mut c = Scripted { incoming: &busy, sent: Vec::new() };
        assert!(matches!(client_handshake(&mut c, &key, protection), Err(ProtoError::Busy)));
    }
    // Key files: refused under 16 bytes of text, taken otherwise.
    let long_enough = data.trim_ascii().len() >= 16;
    assert_eq!(ClusterKey::from_file_contents(data).is_ok(), long_enough);
}

/// A sink shared by the fuzz input's writer and its tampering.
#[derive(Clone, Default)]
struct SharedWire(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl Write for SharedWire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Both ends of a real handshake (client, server), over a socket pair.
fn channels(protection: Protection) -> (Channel, Channel) {
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    std::thread::scope(|scope| {
        let server = scope.spawn(move || {
            server_handshake(&mut b, &ClusterKey::from_file_contents(FUZZ_KEY).unwrap(), protection).expect("server handshake")
        });
        let client =
            client_handshake(&mut a, &ClusterKey::from_file_contents(FUZZ_KEY).unwrap(), protection).expect("client handshake");
        (client, server.join().expect("the server side ran"))
    })
}

/// Takes the next `n` bytes of the input (fewer at its end).
fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, rest) = data.split_at(n.min(data.len()));
    *data = rest;
    head
}

fn take_u16(data: &mut &[u8]) -> usize {
    let b = take(data, 2);
    b.iter().rev().fold(0usize, |acc, &x| (acc << 8) | x as usize)
}

/// The record layer (`secure`) after a real handshake: the input is a
/// script of what reaches the reader. Op 0 sends a payload through the real
/// writer (valid records), 1 appends raw bytes, 2 flips a bit of what was
/// sent so far, 3 cuts bytes off its end. The reader then reads it all with
/// buffers of the sizes the input picks. It must hand out only bytes that
/// were sent, in order, each checked before it is handed out: what it
/// delivers is a prefix of the payloads sent, all of them when nothing was
/// tampered with; and once it refused a record it refuses everything after.
pub fn record(data: &[u8]) {
    let mut script = data;
    let Some(&first) = take(&mut script, 1).first() else { return };
    let protection = if first & 1 == 0 { Protection::Encrypted } else { Protection::Integrity };
    let read_sizes: &[usize] = match (first >> 1) & 3 {
        0 => &[1, 7, 4096],
        1 => &[MAX_RECORD + 2],
        2 => &[3, 100_000, 17],
        _ => &[16, 65519],
    };
    let (client, server) = channels(protection);
    let wire = SharedWire::default();
    let (_, mut writer) = client.split(io::empty(), wire.clone());
    let mut sent = Vec::new();
    let mut tampered = false;
    // At most 16 ops: a short script is enough for every path.
    for _ in 0..16 {
        let Some(&op) = take(&mut script, 1).first() else { break };
        match op % 4 {
            0 => {
                // A payload of up to 2 records, filled from a byte of the input.
                let len = take_u16(&mut script);
                let fill = take(&mut script, 1).first().copied().unwrap_or(0);
                let payload: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
                writer.write_all(&payload).unwrap();
                writer.flush().unwrap();
                sent.extend_from_slice(&payload);
            }
            1 => {
                let n = take(&mut script, 1).first().copied().unwrap_or(0) as usize;
                let raw = take(&mut script, n);
                tampered |= !raw.is_empty();
                wire.0.borrow_mut().extend_from_slice(raw);
            }
            2 => {
                let at = take_u16(&mut script);
                let mut w = wire.0.borrow_mut();
                if let Some(len) = std::num::NonZeroUsize::new(w.len()) {
                    w[at % len] ^= 1 << (op >> 5);
                    tampered = true;
                }
            }
            _ => {
                let cut = take(&mut script, 1).first().copied().unwrap_or(0) as usize;
                let mut w = wire.0.borrow_mut();
                let keep = w.len().saturating_sub(cut);
                tampered |= keep < w.len();
                w.truncate(keep);
            }
        }
    }
    let bytes = wire.0.borrow().clone();
    let (mut reader, _) = server.split(bytes.as_slice(), io::sink());
    let mut delivered = Vec::new();
    let mut buf = vec![0u8; *read_sizes.iter().max().unwrap()];
    let mut end = Ok(());
    'reading: for round in 0.. {
        let size = read_sizes[round % read_sizes.len()];
        match reader.read(&mut buf[..size]) {
            Ok(0) => break 'reading,
            Ok(n) => delivered.extend_from_slice(&buf[..n]),
            Err(e) => {
                end = Err(e);
                break 'reading;
            }
        }
        assert!(delivered.len() <= sent.len(), "more bytes delivered than were sent");
    }
    assert!(sent.starts_with(&delivered), "the reader delivered bytes that were not sent");
    match end {
        Ok(()) if !tampered => assert_eq!(delivered.len(), sent.len(), "payloads lost"),
        Ok(()) => {}
        Err(e) => {
            assert!(tampered, "untouched records refused: {e}");
            if matches!(ProtoError::from(e), ProtoError::Tampered) {
                let mut more = [0u8; 64];
                assert!(reader.read(&mut more).is_err(), "a reader that refused a record went on");
            }
        }
    }
}

/// What a daemon does with the requests of a peer connection: frames within
/// `MAX_CONTROL_FRAME`, decoded as `PeerRequest`, then `validate()`.
pub fn peer_request(data: &[u8]) {
    read_stream(data, MAX_CONTROL_FRAME, |r| read_msg::<_, PeerRequest>(r, MAX_CONTROL_FRAME), |req| {
        let _ = req.validate();
        assert_round_trip(&req);
    });
}

/// What a resuming host does with a seed host's answers: the `Seed` answer
/// within `MAX_IMAGE_FRAME` (`get_seed`), the others within
/// `MAX_CONTROL_FRAME`; a `Checksummed` answer is checked.
pub fn peer_response(data: &[u8]) {
    for limit in [MAX_IMAGE_FRAME, MAX_CONTROL_FRAME] {
        read_stream(data, limit, |r| read_msg::<_, PeerResponse>(r, limit), |resp| {
            if let PeerResponse::Checksummed { seq, .. } = &resp {
                let _ = check_checksummed(*seq, &resp);
            }
            if let PeerResponse::Seed { image, .. } = &resp {
                let _ = image.validate();
            }
            assert_round_trip(&resp);
        });
    }
}

/// What a memory node does with a peer's requests (`mitosis_memnode::server`):
/// a frame within `MAX_CONTROL_FRAME`, decoded, validated; a put's payload
/// length is what its runs announce, bounded once it validates.
pub fn memnode_request(data: &[u8]) {
    read_stream(data, MAX_CONTROL_FRAME, |r| read_msg::<_, MemnodeRequest>(r, MAX_CONTROL_FRAME), |req| {
        if req.validate().is_ok() {
            assert!(req.payload_len() <= mitosis_proto::memnode::MAX_BATCH_BYTES, "a valid request announces too much");
        }
        assert_round_trip(&req);
    });
}

/// What a memory node's client (`mitosis_memnode::client`) does with its answers.
pub fn memnode_response(data: &[u8]) {
    read_stream(data, MAX_CONTROL_FRAME, |r| read_msg::<_, MemnodeResponse>(r, MAX_CONTROL_FRAME), |resp| {
        assert_round_trip(&resp);
    });
}

/// What a daemon does with a local client's requests: a frame within
/// `MAX_CONTROL_FRAME`, an `Envelope`, its version compared.
pub fn local_request(data: &[u8]) {
    read_stream(data, MAX_CONTROL_FRAME, |r| read_msg::<_, Envelope>(r, MAX_CONTROL_FRAME), |env| {
        assert_round_trip(&env);
    });
}

/// What a client does with a daemon's answers (`MAX_IMAGE_FRAME`), the exit
/// status and message it makes of a child's end, and a self-prepared
/// child's answer (`CHILD_MARKER` and a `ChildInfo`).
pub fn local_response(data: &[u8]) {
    read_stream(data, MAX_IMAGE_FRAME, |r| read_msg::<_, LocalResponse>(r, MAX_IMAGE_FRAME), |resp| {
        if let LocalResponse::Exited { end, .. } = &resp {
            // What `mitosis resume` exits with: the child's own code, else a
            // status a shell can tell (no overflow, also in release builds).
            let status = end.exit_status();
            if !matches!(end, ChildEnd::Exited(_)) {
                assert!((1..=255).contains(&status), "exit status {status} for {end:?}");
            }
            let _ = end.to_string();
        }
        assert_round_trip(&resp);
    });
    if let Some(rest) = data.strip_prefix(CHILD_MARKER.as_slice()) {
        if let Ok(info) = postcard::from_bytes::<ChildInfo>(rest) {
            assert_round_trip(&info);
        }
    }
}

/// A seed image as it arrives in a `Seed` answer's payload, decoded and
/// checked with `SeedImage::validate()`; a valid image's sizes are computed.
pub fn seed_image(data: &[u8]) {
    if let Ok(image) = postcard::from_bytes::<SeedImage>(data) {
        if image.validate().is_ok() {
            // The sizes of a valid image need no wrapping arithmetic (also
            // checked in release builds, where overflow would wrap).
            let exact = image.vmas.iter().try_fold(0u64, |sum, v| sum.checked_add(v.end.checked_sub(v.start)?));
            assert_eq!(exact, Some(image.mapped_bytes()), "a valid image's mappings do not add up");
            for v in &image.vmas {
                let _ = (v.len(), v.pages(), v.is_stack(), v.prot.bits());
            }
        }
        assert_round_trip(&image);
    }
}

/// The instance protocol on a peer connection: calls as a worker reads them
/// (`read_call`, then `validate()`) and events as a gateway reads them
/// (`read_event`), both within `MAX_INSTANCE_FRAME`.
pub fn instance(data: &[u8]) {
    read_stream(data, MAX_INSTANCE_FRAME, |r| read_call(r), |call| {
        let _ = call.validate();
        assert_round_trip(&call);
    });
    read_stream(data, MAX_INSTANCE_FRAME, |r| read_event(r), |event| assert_round_trip(&event));
}

/// The runtime's pipe protocol as the worker's daemon reads it
/// (`RuntimeFrames`), the input cut into reads of the sizes it picks. Each
/// event that decodes is the frame it came from (encoded again, the same
/// bytes); no frame over `MAX_BODY` is waited for; decoding stops at the
/// first refused frame, as the daemon kills the runtime then.
pub fn runtime_pipe(data: &[u8]) {
    let Some((&step, stream)) = data.split_first() else { return };
    let step = step as usize + 1;
    let mut frames = RuntimeFrames::default();
    let mut taken = 0usize;
    for chunk in stream.chunks(step) {
        frames.push(chunk);
        loop {
            match frames.next_event() {
                None => break,
                Some(Ok(event)) => {
                    let frame = match &event {
                        InstanceEvent::Phase(phase) => {
                            let text = phase_text(phase);
                            assert_eq!(parse_phase(&text).as_ref(), Some(phase));
                            runtime_frame(TAG_PHASE, text.as_bytes())
                        }
                        InstanceEvent::Reply { ok, body } => {
                            runtime_frame(if *ok { b'R' } else { b'E' }, body)
                        }
                        InstanceEvent::Ended { .. } => panic!("the runtime's pipe made an Ended event"),
                    };
                    // A phase's text may be spelled otherwise (hex digits' case, leading zeros).
                    if !matches!(event, InstanceEvent::Phase(_)) {
                        assert_eq!(frame, &stream[taken..taken + frame.len()], "an event is not the frame it came from");
                        taken += frame.len();
                    } else {
                        let len = u32::from_le_bytes(stream[taken + 1..taken + 5].try_into().unwrap()) as usize;
                        taken += 5 + len;
                    }
                    assert_round_trip(&event);
                }
                Some(Err(_)) => return,
            }
        }
        // Whatever is held is one frame not yet whole, at most MAX_BODY and its header.
        assert!(frames.buffered() as u64 <= MAX_BODY + 5);
    }
    assert_eq!(frames.buffered(), stream.len() - taken, "bytes lost or made up");
}
