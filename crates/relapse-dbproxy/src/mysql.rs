//! MySQL/MariaDB client/server protocol: packet framing, the few payload fields the proxy reads,
//! and the ERR packet it writes itself.
//!
//! Every packet is `len u24 LE` + `seq u8` + payload. A payload of exactly 0xFFFFFF bytes
//! continues in the next packet (seq + 1); the message ends with the first shorter packet.
//! A command starts a new sequence at 0, so a client packet with seq 0 is a command and any
//! other client packet belongs to an exchange already under way (authentication, LOCAL INFILE
//! data). Compression (CLIENT_COMPRESS) is not supported: it would hide the packets.

use crate::FrameError;

pub const HEADER_LEN: usize = 4;
/// A packet with this payload length continues in the next packet.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;
/// The largest message (all its packets) the proxy frames: the server's max_allowed_packet cap.
pub const MAX_MESSAGE_LEN: usize = 1 << 30;

pub const COM_QUIT: u8 = 0x01;
pub const COM_QUERY: u8 = 0x03;
pub const COM_PING: u8 = 0x0e;
pub const COM_STMT_PREPARE: u8 = 0x16;
pub const COM_STMT_EXECUTE: u8 = 0x17;
pub const COM_STMT_CLOSE: u8 = 0x19;

/// The client would switch to TLS after its first handshake packet.
pub const CLIENT_SSL: u32 = 0x0800;
pub const CLIENT_PROTOCOL_41: u32 = 0x0200;

/// One packet's place in a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub payload_len: usize,
    pub seq: u8,
    /// This packet continues the previous one's message.
    pub continuation: bool,
}

impl Frame {
    /// Bytes the packet spans, header included.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Never true: a packet has at least its header. For clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The message goes on in the next packet.
    pub fn continues(&self) -> bool {
        self.payload_len == MAX_PAYLOAD
    }

    /// The payload of this packet within `buf` (which starts at the packet), as far as it goes.
    pub fn payload<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        let end = buf.len().min(self.len());
        buf.get(HEADER_LEN..end).unwrap_or(&[])
    }
}

/// Frames one direction of a connection, checking that continuation packets follow in sequence
/// and that a message stays under [`MAX_MESSAGE_LEN`].
#[derive(Debug, Clone, Default)]
pub struct PacketDecoder {
    /// While a message continues: the last packet's seq and the message's length so far.
    continuing: Option<(u8, usize)>,
}

impl PacketDecoder {
    pub fn new() -> PacketDecoder {
        PacketDecoder::default()
    }

    /// The header of the next packet; `buf` starts at a packet boundary.
    pub fn header(&self, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let payload_len =
            usize::from(buf[0]) | usize::from(buf[1]) << 8 | usize::from(buf[2]) << 16;
        let seq = buf[3];
        let continuation = match self.continuing {
            Some((last, so_far)) => {
                let expected = last.wrapping_add(1);
                if seq != expected {
                    return Err(FrameError::Sequence { expected, got: seq });
                }
                if so_far + payload_len > MAX_MESSAGE_LEN {
                    return Err(FrameError::Length((so_far + payload_len) as u64));
                }
                true
            }
            None => false,
        };
        Ok(Some(Frame {
            payload_len,
            seq,
            continuation,
        }))
    }

    /// Moves past `frame`, which [`PacketDecoder::header`] returned.
    pub fn consume(&mut self, frame: &Frame) {
        self.continuing = if frame.continues() {
            let so_far = self.continuing.map_or(0, |(_, n)| n);
            Some((frame.seq, so_far + frame.payload_len))
        } else {
            None
        };
    }

    /// The next complete packet in `buf`, consumed; `None` if `buf` does not hold all of it.
    pub fn next_frame(&mut self, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        match self.header(buf)? {
            Some(f) if f.len() <= buf.len() => {
                self.consume(&f);
                Ok(Some(f))
            }
            _ => Ok(None),
        }
    }
}

/// The statement id of a COM_STMT_EXECUTE or COM_STMT_CLOSE payload.
pub fn statement_id(payload: &[u8]) -> Option<u32> {
    let b = payload.get(1..5)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The statement id of a COM_STMT_PREPARE_OK payload, or `None` for any other response.
pub fn prepare_ok_id(payload: &[u8]) -> Option<u32> {
    if payload.first() != Some(&0) {
        return None;
    }
    statement_id(payload)
}

/// Clears CLIENT_SSL in a server's initial handshake (protocol 10) payload, so a client never
/// starts TLS the proxy could not frame. Returns whether the bit was set. Leaves anything else
/// (an ERR packet such as "too many connections", a payload cut short) alone.
pub fn clear_ssl_capability(payload: &mut [u8]) -> bool {
    if payload.first() != Some(&10) {
        return false;
    }
    // protocol version, server version (NUL-terminated), connection id (4), auth data (8),
    // filler (1), then the low 16 bits of the capabilities.
    let Some(nul) = payload[1..].iter().position(|&b| b == 0) else {
        return false;
    };
    let at = 1 + nul + 1 + 4 + 8 + 1;
    let Some(low) = payload.get_mut(at..at + 2) else {
        return false;
    };
    let caps = u16::from_le_bytes([low[0], low[1]]);
    let ssl = CLIENT_SSL as u16;
    low.copy_from_slice(&(caps & !ssl).to_le_bytes());
    caps & ssl != 0
}

/// An ERR packet (CLIENT_PROTOCOL_41 layout) with sequence id `seq`.
pub fn err_packet(seq: u8, code: u16, sqlstate: &[u8; 5], message: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(9 + message.len());
    payload.push(0xff);
    payload.extend(code.to_le_bytes());
    payload.push(b'#');
    payload.extend(sqlstate);
    payload.extend(message.as_bytes());
    let len = payload.len().min(MAX_PAYLOAD - 1) as u32;
    let mut packet = len.to_le_bytes()[..3].to_vec();
    packet.push(seq);
    packet.extend(&payload[..len as usize]);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        p.push(seq);
        p.extend(payload);
        p
    }

    fn client_stream() -> (Vec<u8>, Vec<Frame>) {
        let big = vec![b'x'; MAX_PAYLOAD];
        let mut query = vec![COM_QUERY];
        query.extend(b"SELECT 1");
        let packets: Vec<(u8, Vec<u8>)> = vec![
            (1, b"\x8d\xa6\x0f\x00\0\0\0\x01\x21root\0\0".to_vec()),
            (0, query),
            (0, big.clone()),
            (1, b"tail".to_vec()),
            (0, vec![COM_QUIT]),
        ];
        let mut stream = Vec::new();
        let mut frames = Vec::new();
        let mut continuing = false;
        for (seq, payload) in packets {
            frames.push(Frame {
                payload_len: payload.len(),
                seq,
                continuation: continuing,
            });
            continuing = payload.len() == MAX_PAYLOAD;
            stream.extend(packet(seq, &payload));
        }
        (stream, frames)
    }

    #[test]
    fn every_split_reassembles_the_same_frames() {
        let (stream, expected) = client_stream();
        // Every split in the small packets, and a sample through the 16 MiB one.
        let splits = (0..200)
            .chain((200..stream.len() - 200).step_by(65_521))
            .chain(stream.len() - 200..=stream.len());
        for at in splits {
            let mut decoder = PacketDecoder::new();
            let mut buf = Vec::new();
            let mut frames = Vec::new();
            for piece in [&stream[..at], &stream[at..]] {
                buf.extend_from_slice(piece);
                let mut pos = 0;
                while let Some(f) = decoder.next_frame(&buf[pos..]).unwrap() {
                    pos += f.len();
                    frames.push(f);
                }
                buf.drain(..pos);
            }
            assert!(buf.is_empty());
            assert_eq!(frames, expected, "split at {at}");
        }
    }

    #[test]
    fn a_continuation_out_of_sequence_is_an_error() {
        let mut stream = packet(0, &vec![0; MAX_PAYLOAD]);
        stream.extend(packet(5, b"x"));
        let mut decoder = PacketDecoder::new();
        let first = decoder.next_frame(&stream).unwrap().unwrap();
        assert_eq!(
            decoder.next_frame(&stream[first.len()..]),
            Err(FrameError::Sequence {
                expected: 1,
                got: 5
            })
        );
    }

    #[test]
    fn handshake_loses_its_ssl_bit() {
        let mut greeting = vec![10];
        greeting.extend(b"10.11.19-MariaDB\0");
        greeting.extend([1, 0, 0, 0]);
        greeting.extend([b'a'; 8]);
        greeting.push(0);
        greeting.extend(((CLIENT_SSL | CLIENT_PROTOCOL_41) as u16).to_le_bytes());
        greeting.extend([0; 10]);
        assert!(clear_ssl_capability(&mut greeting));
        assert!(!clear_ssl_capability(&mut greeting));
        let at = greeting.len() - 12;
        assert_eq!(
            u16::from_le_bytes([greeting[at], greeting[at + 1]]),
            CLIENT_PROTOCOL_41 as u16
        );
        assert!(!clear_ssl_capability(&mut [10, b'x']));
        assert!(!clear_ssl_capability(&mut [0xff, 0x10, 0x04]));
    }

    #[test]
    fn err_packets_frame() {
        let p = err_packet(1, 1205, b"HY000", "lock wait timeout exceeded");
        let f = PacketDecoder::new().next_frame(&p).unwrap().unwrap();
        assert_eq!((f.seq, f.len()), (1, p.len()));
        assert_eq!(&p[4..7], &[0xff, 0xb5, 0x04]);
        assert_eq!(&p[7..13], b"#HY000");
        assert_eq!(prepare_ok_id(&[0, 7, 0, 0, 0]), Some(7));
        assert_eq!(prepare_ok_id(&[0xff, 7, 0, 0, 0]), None);
        assert_eq!(statement_id(&[COM_STMT_EXECUTE, 1]), None);
    }
}
