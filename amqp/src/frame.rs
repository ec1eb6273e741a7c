//! AMQP 1.0 framing (part 2, "Transport", §2.2 and §2.3; part 5, "Security", §5.3 for SASL):
//! the protocol headers, the frame header, and splitting a byte stream into frames.

use alloc::vec::Vec;

use crate::codec::Encoder;

/// The protocol header a client opens a SASL layer with (`AMQP` 3 1 0 0).
pub const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";

/// The protocol header of AMQP itself (`AMQP` 0 1 0 0).
pub const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";

/// The smallest max-frame-size a peer may declare (part 2, §2.7.1: 512).
pub const MIN_MAX_FRAME_SIZE: u32 = 512;

/// What a frame carries: AMQP performatives or the SASL exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// Type 0x00: an AMQP performative (and a transfer's payload), or nothing (a heartbeat).
    Amqp,
    /// Type 0x01: a SASL frame.
    Sasl,
}

impl FrameKind {
    fn code(self) -> u8 {
        match self {
            FrameKind::Amqp => 0x00,
            FrameKind::Sasl => 0x01,
        }
    }
}

/// One frame, borrowed from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// What it carries.
    pub kind: FrameKind,
    /// Its channel (AMQP frames; SASL frames ignore it).
    pub channel: u16,
    /// The frame body, after the header and any extended header: empty for a heartbeat.
    pub body: &'a [u8],
}

/// Why bytes cannot be a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A size larger than this side's max-frame-size.
    #[error("a frame of {size} bytes, over the {limit} agreed")]
    TooLarge {
        /// The frame's size.
        size: u32,
        /// The largest this side takes.
        limit: u32,
    },
    /// A size smaller than the header, or a data offset outside the frame.
    #[error("a frame header whose size or data offset is impossible")]
    BadHeader,
    /// A frame type other than AMQP (0) and SASL (1).
    #[error("frame type {0:#04x}")]
    UnknownType(u8),
}

/// The first frame at the start of `input` and the bytes it took, or `None` when `input` does
/// not hold all of it yet. A frame larger than `max_frame_size` is an error as soon as its
/// header is in, not once it has been read.
///
/// ```
/// use aliot_amqp::frame::{split_frame, FrameKind};
///
/// // A heartbeat: size 8, data offset 2, type AMQP, channel 0.
/// let heartbeat = [0, 0, 0, 8, 2, 0, 0, 0];
/// let (frame, used) = split_frame(&heartbeat, 512).unwrap().unwrap();
/// assert_eq!((frame.kind, frame.body.len(), used), (FrameKind::Amqp, 0, 8));
/// assert_eq!(split_frame(&heartbeat[..5], 512), Ok(None));
/// ```
pub fn split_frame(
    input: &[u8],
    max_frame_size: u32,
) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(header) = input.get(..8) else {
        return Ok(None);
    };
    let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let offset = usize::from(header[4]) * 4;
    if size > max_frame_size {
        return Err(FrameError::TooLarge {
            size,
            limit: max_frame_size,
        });
    }
    let size_bytes = usize::try_from(size).map_err(|_| FrameError::BadHeader)?;
    if size < 8 || offset < 8 || offset > size_bytes {
        return Err(FrameError::BadHeader);
    }
    let kind = match header[5] {
        0x00 => FrameKind::Amqp,
        0x01 => FrameKind::Sasl,
        other => return Err(FrameError::UnknownType(other)),
    };
    let Some(frame) = input.get(..size_bytes) else {
        return Ok(None);
    };
    let channel = u16::from_be_bytes([header[6], header[7]]);
    Ok(Some((
        Frame {
            kind,
            channel,
            body: &frame[offset..],
        },
        size_bytes,
    )))
}

/// Appends one frame to `out`: the header, then the body `body` writes.
pub fn write_frame(
    out: &mut Vec<u8>,
    kind: FrameKind,
    channel: u16,
    body: impl FnOnce(&mut Encoder<'_>),
) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, 2, kind.code()]);
    out.extend_from_slice(&channel.to_be_bytes());
    body(&mut Encoder::new(out));
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// Appends an empty AMQP frame: the heartbeat that keeps an idle connection open.
pub fn write_heartbeat(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0, 8, 2, 0, 0, 0]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_from_a_stream_one_at_a_time() {
        let mut stream = Vec::new();
        write_frame(&mut stream, FrameKind::Sasl, 0, |e| e.uint(7));
        write_heartbeat(&mut stream);
        write_frame(&mut stream, FrameKind::Amqp, 3, |e| e.string("x"));
        let (first, used) = split_frame(&stream, 512).unwrap().unwrap();
        assert_eq!(
            first,
            Frame {
                kind: FrameKind::Sasl,
                channel: 0,
                body: &[0x52, 7]
            }
        );
        let stream = &stream[used..];
        let (beat, used) = split_frame(stream, 512).unwrap().unwrap();
        assert!(beat.body.is_empty());
        let (last, used_last) = split_frame(&stream[used..], 512).unwrap().unwrap();
        assert_eq!(
            last,
            Frame {
                kind: FrameKind::Amqp,
                channel: 3,
                body: &[0xa1, 1, b'x']
            }
        );
        assert_eq!(used + used_last, stream.len());
    }

    #[test]
    fn an_extended_header_is_skipped() {
        // Data offset 3: four bytes of extended header before the body.
        let frame = [0, 0, 0, 13, 3, 0, 0, 1, 9, 9, 9, 9, 0x40];
        let (frame, _) = split_frame(&frame, 512).unwrap().unwrap();
        assert_eq!(frame.body, [0x40]);
        assert_eq!(frame.channel, 1);
    }

    #[test]
    fn impossible_or_oversized_headers_are_refused_before_the_body_is_in() {
        assert_eq!(
            split_frame(&[0, 0, 0, 7, 2, 0, 0, 0], 512),
            Err(FrameError::BadHeader)
        );
        assert_eq!(
            split_frame(&[0, 0, 0, 8, 1, 0, 0, 0], 512),
            Err(FrameError::BadHeader)
        );
        assert_eq!(
            split_frame(&[0, 0, 0, 8, 3, 0, 0, 0], 512),
            Err(FrameError::BadHeader)
        );
        assert_eq!(
            split_frame(&[0, 0, 0, 8, 2, 7, 0, 0], 512),
            Err(FrameError::UnknownType(7))
        );
        assert_eq!(
            split_frame(&[0, 1, 0, 0, 2, 0, 0, 0], 4096),
            Err(FrameError::TooLarge {
                size: 65_536,
                limit: 4096
            })
        );
        // A whole header whose body is still coming: wait.
        assert_eq!(split_frame(&[0, 0, 1, 0, 2, 0, 0, 0, 0x40], 4096), Ok(None));
    }
}
