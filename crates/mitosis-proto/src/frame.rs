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
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
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

    #[test]
    fn eof_is_closed() {
        let err = read_frame(&mut [].as_slice(), 100).unwrap_err();
        assert!(matches!(err, ProtoError::Closed));
    }
}
