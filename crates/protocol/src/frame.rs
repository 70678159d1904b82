//! Length-prefixed framing: a 4-byte big-endian size followed by that many bytes.
//!
//! The size is validated before the read buffer grows, so a client claiming a 2 GiB
//! frame is refused while we still hold only the 4 bytes it sent.

use bytes::{Buf, Bytes, BytesMut};

use crate::ProtocolError;

/// Kafka's default `socket.request.max.bytes`.
pub const DEFAULT_MAX_FRAME: usize = 100 * 1024 * 1024;

/// Splits a byte stream into request frames.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame: usize,
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }

    /// Takes one complete frame off the front of `buf`, if there is one.
    ///
    /// Returns `Ok(None)` when more bytes are needed; `buf` is then reserved for at
    /// most the validated frame size.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, ProtocolError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let length = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if length < 0 || length as usize > self.max_frame {
            return Err(ProtocolError::FrameTooLarge {
                length: length.into(),
                max: self.max_frame,
            });
        }
        let length = length as usize;
        if buf.len() < 4 + length {
            buf.reserve(4 + length - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        Ok(Some(buf.split_to(length).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_whole_frame_then_splits() {
        let d = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 1, 2][..]);
        assert!(d.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&[3, 0, 0, 0, 0]);
        assert_eq!(&d.decode(&mut buf).unwrap().unwrap()[..], &[1, 2, 3]);
        assert_eq!(&d.decode(&mut buf).unwrap().unwrap()[..], &[] as &[u8]);
    }

    #[test]
    fn refuses_huge_and_negative_lengths_without_reserving() {
        let d = FrameDecoder::new(1024);
        for prefix in [[0x7fu8, 0xff, 0xff, 0xff], [0x80, 0, 0, 0], [0, 0, 4, 1]] {
            let mut buf = BytesMut::from(&prefix[..]);
            let cap = buf.capacity();
            assert!(matches!(
                d.decode(&mut buf),
                Err(ProtocolError::FrameTooLarge { .. })
            ));
            assert_eq!(buf.capacity(), cap);
        }
    }
}
