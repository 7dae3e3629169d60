//! PostgreSQL wire protocol (v3): framing, the few payload fields the proxy reads, and the
//! messages it writes itself.
//!
//! A frontend (client) stream starts with untagged startup-phase messages, each a `len i32` and a
//! `code i32` and a body: SSLRequest and GSSENCRequest, which the proxy answers `N` so the client
//! continues in plaintext, CancelRequest, and the StartupMessage. After that every message in
//! both directions is a `type u8` and a `len i32` (the length counts itself, not the type byte).

use crate::FrameError;

/// The largest message the proxy frames (PostgreSQL's own limit for most messages is 1 GiB).
pub const MAX_MESSAGE_LEN: usize = 1 << 30;
/// PostgreSQL rejects startup packets longer than this (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_LEN: usize = 10_000;
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// Protocol major version 3, in the high 16 bits of a StartupMessage's code.
const PROTOCOL_3: u32 = 3;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    SslRequest,
    GssEncRequest,
    CancelRequest,
    /// The StartupMessage, after which the stream is tagged messages.
    Startup,
    /// A tagged message, by its type byte.
    Message(u8),
}

/// One message's place in a stream: what it is and how many bytes it spans, header included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub len: usize,
}

impl Frame {
    /// Bytes before the body: `len` (and `code`) for startup messages, `type` + `len` otherwise.
    pub fn header_len(&self) -> usize {
        match self.kind {
            FrameKind::Message(_) => 5,
            _ => 8,
        }
    }

    /// The body of this frame within `buf` (which starts at the frame), as far as `buf` has it.
    pub fn body<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        let end = buf.len().min(self.len);
        buf.get(self.header_len()..end).unwrap_or(&[])
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The header of a startup-phase message at the start of `buf`; `None` until 8 bytes are there.
pub fn startup_header(buf: &[u8]) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = be_u32(buf) as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(FrameError::Length(len as u64));
    }
    let code = be_u32(&buf[4..]);
    let kind = match code {
        SSL_REQUEST_CODE => FrameKind::SslRequest,
        GSSENC_REQUEST_CODE => FrameKind::GssEncRequest,
        CANCEL_REQUEST_CODE => FrameKind::CancelRequest,
        c if c >> 16 == PROTOCOL_3 => FrameKind::Startup,
        c => return Err(FrameError::StartupCode(c)),
    };
    Ok(Some(Frame { kind, len }))
}

/// The header of a tagged message at the start of `buf`; `None` until 5 bytes are there.
pub fn message_header(buf: &[u8]) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = be_u32(&buf[1..]) as usize;
    if !(4..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(FrameError::Length(len as u64));
    }
    Ok(Some(Frame {
        kind: FrameKind::Message(buf[0]),
        len: len + 1,
    }))
}

/// Frames a client's stream: startup-phase messages until the StartupMessage, then tagged ones.
#[derive(Debug, Clone, Default)]
pub struct FrontendDecoder {
    started: bool,
}

impl FrontendDecoder {
    pub fn new() -> FrontendDecoder {
        FrontendDecoder::default()
    }

    /// The header of the next frame; `buf` starts at a frame boundary.
    pub fn header(&self, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        if self.started {
            message_header(buf)
        } else {
            startup_header(buf)
        }
    }

    /// Moves past `frame`, which [`FrontendDecoder::header`] returned.
    pub fn consume(&mut self, frame: &Frame) {
        if frame.kind == FrameKind::Startup {
            self.started = true;
        }
    }

    /// The next complete frame in `buf`, consumed; `None` if `buf` does not hold all of it.
    pub fn next_frame(&mut self, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        match self.header(buf)? {
            Some(f) if f.len <= buf.len() => {
                self.consume(&f);
                Ok(Some(f))
            }
            _ => Ok(None),
        }
    }
}

/// The next complete backend (server) message in `buf`.
pub fn next_backend_frame(buf: &[u8]) -> Result<Option<Frame>, FrameError> {
    Ok(message_header(buf)?.filter(|f| f.len <= buf.len()))
}

/// Splits a NUL-terminated string off the front of `b`; without a NUL, all of `b` (a prefix that
/// was cut short) and nothing after it.
pub fn cstr(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&c| c == 0) {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &[]),
    }
}

/// The SQL of a Query (`Q`) body.
pub fn query_sql(body: &[u8]) -> &[u8] {
    cstr(body).0
}

/// The statement name and SQL of a Parse (`P`) body.
pub fn parse_fields(body: &[u8]) -> (&[u8], &[u8]) {
    let (name, rest) = cstr(body);
    (name, cstr(rest).0)
}

/// The portal and statement names of a Bind (`B`) body.
pub fn bind_names(body: &[u8]) -> (&[u8], &[u8]) {
    let (portal, rest) = cstr(body);
    (portal, cstr(rest).0)
}

/// The portal name of an Execute (`E`) body.
pub fn execute_portal(body: &[u8]) -> &[u8] {
    cstr(body).0
}

/// What a Close (`C`) body closes: `b'S'` statement or `b'P'` portal, and its name.
pub fn close_target(body: &[u8]) -> Option<(u8, &[u8])> {
    let (&what, rest) = body.split_first()?;
    Some((what, cstr(rest).0))
}

/// An ErrorResponse with severity ERROR, the given SQLSTATE and message.
pub fn error_response(sqlstate: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + message.len());
    for (field, value) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', sqlstate),
        (b'M', message),
    ] {
        body.push(field);
        body.extend(value.bytes().filter(|&b| b != 0));
        body.push(0);
    }
    body.push(0);
    let mut msg = Vec::with_capacity(5 + body.len());
    msg.push(b'E');
    msg.extend(((body.len() + 4) as u32).to_be_bytes());
    msg.extend(body);
    msg
}

/// ReadyForQuery with a transaction status: `I` idle, `T` in a transaction, `E` failed.
pub fn ready_for_query(status: u8) -> [u8; 6] {
    [b'Z', 0, 0, 0, 5, status]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend(((body.len() + 4) as u32).to_be_bytes());
        m.extend(body);
        m
    }

    fn startup() -> Vec<u8> {
        let body = b"user\0postgres\0database\0test\0\0";
        let mut m = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        m.extend(196_608u32.to_be_bytes());
        m.extend(body);
        m
    }

    fn ssl_request() -> Vec<u8> {
        let mut m = 8u32.to_be_bytes().to_vec();
        m.extend(SSL_REQUEST_CODE.to_be_bytes());
        m
    }

    /// A client stream: SSLRequest, startup, a simple query, a Parse/Bind/Execute/Sync group.
    fn client_stream() -> (Vec<u8>, Vec<Frame>) {
        let parts: Vec<(FrameKind, Vec<u8>)> = vec![
            (FrameKind::SslRequest, ssl_request()),
            (FrameKind::Startup, startup()),
            (FrameKind::Message(b'Q'), message(b'Q', b"SELECT 1\0")),
            (
                FrameKind::Message(b'P'),
                message(b'P', b"s1\0INSERT INTO t VALUES ($1)\0\0\0"),
            ),
            (
                FrameKind::Message(b'B'),
                message(b'B', b"\0s1\0\0\0\0\0\0\0"),
            ),
            (FrameKind::Message(b'E'), message(b'E', b"\0\0\0\0\0")),
            (FrameKind::Message(b'S'), message(b'S', b"")),
            (FrameKind::Message(b'X'), message(b'X', b"")),
        ];
        let mut stream = Vec::new();
        let mut frames = Vec::new();
        for (kind, bytes) in parts {
            frames.push(Frame {
                kind,
                len: bytes.len(),
            });
            stream.extend(bytes);
        }
        (stream, frames)
    }

    /// Feeds `stream` in two pieces split at `at`, like two reads, and collects whole frames.
    fn reassemble(stream: &[u8], at: usize) -> Vec<Frame> {
        let mut decoder = FrontendDecoder::new();
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        for piece in [&stream[..at], &stream[at..]] {
            buf.extend_from_slice(piece);
            let mut pos = 0;
            while let Some(f) = decoder.next_frame(&buf[pos..]).unwrap() {
                pos += f.len;
                frames.push(f);
            }
            buf.drain(..pos);
        }
        assert!(buf.is_empty());
        frames
    }

    #[test]
    fn every_split_reassembles_the_same_frames() {
        let (stream, expected) = client_stream();
        for at in 0..=stream.len() {
            assert_eq!(reassemble(&stream, at), expected, "split at {at}");
        }
    }

    #[test]
    fn fields_are_read_from_bodies() {
        let (stream, frames) = client_stream();
        let mut pos = 0;
        for f in frames {
            let body = f.body(&stream[pos..]);
            match f.kind {
                FrameKind::Message(b'Q') => assert_eq!(query_sql(body), b"SELECT 1"),
                FrameKind::Message(b'P') => {
                    assert_eq!(
                        parse_fields(body),
                        (&b"s1"[..], &b"INSERT INTO t VALUES ($1)"[..])
                    )
                }
                FrameKind::Message(b'B') => assert_eq!(bind_names(body), (&b""[..], &b"s1"[..])),
                FrameKind::Message(b'E') => assert_eq!(execute_portal(body), b""),
                _ => {}
            }
            pos += f.len;
        }
    }

    #[test]
    fn malformed_headers_are_errors() {
        assert_eq!(message_header(b"Q\0\0\0\x03"), Err(FrameError::Length(3)));
        assert_eq!(
            message_header(b"Q\x40\0\0\x01"),
            Err(FrameError::Length((1 << 30) + 1))
        );
        assert_eq!(
            message_header(b"Q\xff\xff\xff\xff"),
            Err(FrameError::Length(u32::MAX as u64))
        );
        assert_eq!(
            startup_header(b"\0\0\0\x04\0\0\0\0"),
            Err(FrameError::Length(4))
        );
        assert_eq!(
            startup_header(b"\0\0\0\x08\0\x02\0\0"),
            Err(FrameError::StartupCode(2 << 16))
        );
        assert_eq!(
            startup_header(b"\0\0\x27\x11\0\x03\0\0"),
            Err(FrameError::Length(10_001))
        );
        assert_eq!(message_header(b"Q\0\0"), Ok(None));
        assert_eq!(cstr(b"abc"), (&b"abc"[..], &b""[..]));
        assert_eq!(close_target(b""), None);
    }

    #[test]
    fn built_messages_frame() {
        let e = error_response("55P03", "lock not available");
        let f = next_backend_frame(&e).unwrap().unwrap();
        assert_eq!((f.kind, f.len), (FrameKind::Message(b'E'), e.len()));
        assert!(e.windows(6).any(|w| w == b"C55P03"));
        let z = ready_for_query(b'I');
        assert_eq!(next_backend_frame(&z).unwrap().unwrap().len, 6);
    }
}
