//! Length-prefixed frames.
//!
//! ```text
//! +----------------+---------------------------+
//! | len: u32 (LE)  | payload: len bytes        |
//! +----------------+---------------------------+
//! ```
//! The payload is a postcard-encoded message. Bulk page data is sent as a raw
//! payload right after a header message that announces its length, so that the
//! receiver reads it straight into its destination buffer.

use std::io::{Read, Write};

use serde::{de::DeserializeOwned, Serialize};

use crate::ProtoError;

/// Largest control message a daemon accepts from anyone.
pub const MAX_CONTROL_FRAME: u64 = 1 << 20;
/// Largest control message a client accepts (a seed image with its eager pages).
pub const MAX_IMAGE_FRAME: u64 = 256 << 20;

/// Writes one message as a frame.
pub fn write_msg<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), ProtoError> {
    let body = postcard::to_stdvec(msg).map_err(|_| ProtoError::Decode { what: "encode" })?;
    let len = u32::try_from(body.len()).map_err(|_| ProtoError::FrameTooLarge {
        len: body.len() as u64,
        limit: u32::MAX as u64,
    })?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf)?;
    Ok(())
}

/// Reads one frame's payload, refusing frames longer than `limit`.
pub fn read_frame<R: Read>(r: &mut R, limit: u64) -> Result<Vec<u8>, ProtoError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ProtoError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len) as u64;
    if len > limit {
        return Err(ProtoError::FrameTooLarge { len, limit });
    }
    Ok(read_payload(r, len as usize, Vec::new())?)
}

/// First step of a payload buffer: small, so that a frame that announces much
/// and sends little costs little.
pub const PAYLOAD_STEP: usize = 4096;

/// Reads exactly `len` bytes after the `start` already received (`start` is
/// the payload's beginning; it may hold all of it). The buffer grows with the
/// bytes that actually arrived, doubling from [`PAYLOAD_STEP`], so it is never
/// more than twice what came (plus one step): the announced length alone,
/// sent by anyone, allocates nothing.
pub fn read_payload<R: Read>(r: &mut R, len: usize, start: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut body = start;
    let mut got = body.len().min(len);
    body.truncate(len);
    while got < len {
        if got == body.len() {
            let next = len.min(got.saturating_mul(2).max(PAYLOAD_STEP));
            body.resize(next, 0);
        }
        match r.read(&mut body[got..]) {
            Ok(0) => return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "frame cut short")),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(body)
}

/// Reads and decodes one message.
pub fn read_msg<R: Read, T: DeserializeOwned>(r: &mut R, limit: u64) -> Result<T, ProtoError> {
    let body = read_frame(r, limit)?;
    postcard::from_bytes(&body).map_err(|_| ProtoError::Decode { what: std::any::type_name::<T>() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Msg {
        a: u32,
        b: String,
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write_msg(&mut buf, &Msg { a: 7, b: "x".into() }).unwrap();
        let got: Msg = read_msg(&mut buf.as_slice(), 100).unwrap();
        assert_eq!(got, Msg { a: 7, b: "x".into() });
    }

    #[test]
    fn oversized_frame_is_refused_before_allocation() {
        let buf = u32::MAX.to_le_bytes();
        let err = read_frame(&mut buf.as_slice(), MAX_CONTROL_FRAME).unwrap_err();
        assert!(matches!(err, ProtoError::FrameTooLarge { .. }), "{err}");
    }

    #[test]
    fn garbage_payload_is_a_decode_error() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&3u32.to_le_bytes());
        buf.extend_from_slice(&[0xff, 0xff, 0xff]);
        let err = read_msg::<_, Msg>(&mut buf.as_slice(), 100).unwrap_err();
        assert!(matches!(err, ProtoError::Decode { .. }), "{err}");
    }

    /// Hands out `data`, then end of file, and records the size of every
    /// buffer it was asked to fill: what the reader had allocated.
    struct Recording<'a> {
        data: &'a [u8],
        asked: Vec<usize>,
    }

    impl Read for Recording<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.asked.push(buf.len());
            let n = buf.len().min(self.data.len()).min(1000);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn an_announced_length_alone_allocates_little() {
        // 1 MiB announced, 10 bytes sent, then the sender stops.
        let mut bytes = (1u32 << 20).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[7u8; 10]);
        let mut r = Recording { data: &bytes, asked: Vec::new() };
        let err = read_frame(&mut r, MAX_CONTROL_FRAME).unwrap_err();
        assert!(matches!(&err, ProtoError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof), "{err}");
        let most = r.asked.iter().copied().max().unwrap();
        assert!(most <= PAYLOAD_STEP, "a buffer of {most} bytes for 10 that came");
    }

    #[test]
    fn payload_buffer_grows_with_what_arrived() {
        let payload: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&payload);
        let mut r = Recording { data: &bytes, asked: Vec::new() };
        let body = read_frame(&mut r, MAX_CONTROL_FRAME).unwrap();
        assert_eq!(body, payload);
        // Every buffer offered was at most what had arrived before it, plus a step.
        let mut arrived = 0usize;
        for asked in r.asked.iter().skip(1) {
            assert!(*asked <= arrived.max(PAYLOAD_STEP), "{asked} bytes offered after {arrived} arrived");
            arrived += (*asked).min(1000);
        }
        // Part of the payload already received is kept.
        let mut rest: &[u8] = &payload[3..];
        let body = read_payload(&mut rest, payload.len(), payload[..3].to_vec()).unwrap();
        assert_eq!(body, payload);
    }

    #[test]
    fn eof_is_closed() {
        let err = read_frame(&mut [].as_slice(), 100).unwrap_err();
        assert!(matches!(err, ProtoError::Closed));
    }
}
