//! A lean HTTP/1.1 client exchange: write prebuilt request bytes, read the response into a
//! reused buffer, parse its head with `httparse` and skip its body.
//!
//! Why not hyper's client: per request it costs a dispatch channel, a response oneshot, a
//! `Request` and two `HeaderMap`s; a flood only needs the status and the end of the body. Here
//! a request is one write and, usually, one read, with no allocation once the buffers have
//! grown.
//!
//! The parser is sans-I/O ([`ResponseParser`]), so it is tested on byte sequences split
//! anywhere; [`exchange`] drives it over a socket.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest response head (status line and headers, or a chunk-size line, or trailers)
/// accepted: a guard against a target that streams headers forever.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// The most headers in a response (as hyper's default).
const MAX_HEADERS: usize = 100;

/// What the receive buffer starts at (as hyper and wrk): one read holds most responses.
const INITIAL_BUFFER: usize = 8 * 1024;

/// Error kinds, as reported in `LoadReport::errors_by_kind`.
/// The response is not valid HTTP/1.x (head, framing, or size bounds).
pub(crate) const HTTP: &str = "http";
/// The connection ended (or broke) before any of the response's body.
pub(crate) const CLOSED: &str = "closed";
/// The connection ended (or broke) inside the body.
pub(crate) const BODY: &str = "body";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many data bytes left in the chunk.
    Data(u64),
    /// Expecting the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until a blank line.
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    /// This many body bytes left.
    Length(u64),
    Chunked(Chunk),
    /// No length: the body ends when the connection does.
    UntilEof,
    Done,
}

/// Parses one response, incrementally. Feed it with [`advance`](Self::advance) until
/// [`done`](Self::done); call [`eof`](Self::eof) when the connection ends first.
#[derive(Debug)]
pub(crate) struct ResponseParser {
    state: State,
    head_request: bool,
    status: u16,
    keep_alive: bool,
}

impl ResponseParser {
    /// For the response to a request; `head_request` if it was a HEAD (no body follows).
    pub(crate) fn new(head_request: bool) -> ResponseParser {
        ResponseParser {
            state: State::Head,
            head_request,
            status: 0,
            keep_alive: false,
        }
    }

    pub(crate) fn done(&self) -> bool {
        self.state == State::Done
    }

    /// The final status (once the head is parsed).
    pub(crate) fn status(&self) -> u16 {
        self.status
    }

    /// Whether the connection may carry another request after this response.
    pub(crate) fn reusable(&self) -> bool {
        self.done() && self.keep_alive
    }

    /// Whether the parser is waiting for a whole line or head, which must fit in the buffer
    /// (unlike body data, which is consumed as it comes).
    fn needs_whole(&self) -> bool {
        matches!(
            self.state,
            State::Head | State::Chunked(Chunk::Size | Chunk::DataEnd | Chunk::Trailers)
        )
    }

    /// Parses as much of `input` as it can; returns the bytes consumed. Unconsumed bytes must
    /// be offered again, with more after them.
    pub(crate) fn advance(&mut self, input: &[u8]) -> Result<usize, &'static str> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            let used = match self.state {
                State::Done => return Ok(at),
                State::Head => match self.head(rest)? {
                    Some(n) => n,
                    None => return Ok(at),
                },
                State::Length(left) => {
                    let n = left.min(rest.len() as u64);
                    self.state = if n == left {
                        State::Done
                    } else {
                        State::Length(left - n)
                    };
                    if n == 0 && !self.done() {
                        return Ok(at);
                    }
                    n as usize
                }
                State::UntilEof => rest.len(),
                State::Chunked(chunk) => match self.chunk(chunk, rest)? {
                    Some(n) => n,
                    None => return Ok(at),
                },
            };
            at += used;
            if self.state == State::UntilEof {
                return Ok(input.len());
            }
        }
    }

    /// The connection ended: completes a body that runs to EOF, fails anything else.
    pub(crate) fn eof(&mut self) -> Result<(), &'static str> {
        match self.state {
            State::Done => Ok(()),
            State::UntilEof => {
                self.state = State::Done;
                self.keep_alive = false;
                Ok(())
            }
            State::Head => Err(CLOSED),
            State::Length(_) | State::Chunked(_) => Err(BODY),
        }
    }

    /// The connection failed with an I/O error: which error kind that is, here.
    fn io_error(&self) -> &'static str {
        match self.state {
            State::Head => CLOSED,
            _ => BODY,
        }
    }

    /// Parses a head from `input`: `None` if incomplete, else the bytes it took.
    fn head(&mut self, input: &[u8]) -> Result<Option<usize>, &'static str> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let n = match response.parse(input) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if input.len() >= MAX_HEAD => return Err(HTTP),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(HTTP),
        };
        if n > MAX_HEAD {
            return Err(HTTP);
        }
        let status = response.code.ok_or(HTTP)?;
        // An interim response (100 Continue, 103 Early Hints): the final one follows.
        // 101 ends HTTP on this connection, so it counts as final.
        if (100..200).contains(&status) && status != 101 {
            return Ok(Some(n));
        }
        self.status = status;
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut encoded = false;
        let (mut close, mut keep_alive_asked) = (false, false);
        for h in response.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let v = parse_length(h.value).ok_or(HTTP)?;
                // Differing lengths: the framing is ambiguous (RFC 9112 §6.3).
                if length.is_some_and(|l| l != v) {
                    return Err(HTTP);
                }
                length = Some(v);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                encoded = true;
                // Chunked counts only as the last coding (RFC 9112 §6.3).
                chunked = last_token(h.value).is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive_asked |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
        }
        // HTTP/1.1 keeps the connection by default, HTTP/1.0 only when asked; a close wins.
        self.keep_alive = !close && (response.version == Some(1) || keep_alive_asked);
        self.state = if self.head_request || status == 204 || status == 304 {
            State::Done
        } else if status == 101 {
            // The connection now speaks another protocol: done with it.
            self.keep_alive = false;
            State::Done
        } else if encoded {
            // Transfer-Encoding overrides Content-Length; without chunked last, the body runs
            // to EOF.
            if chunked {
                State::Chunked(Chunk::Size)
            } else {
                State::UntilEof
            }
        } else {
            match length {
                Some(0) => State::Done,
                Some(l) => State::Length(l),
                None => State::UntilEof,
            }
        };
        if self.state == State::UntilEof {
            self.keep_alive = false;
        }
        Ok(Some(n))
    }

    /// One step of chunked decoding: `None` if `input` is too short for it.
    fn chunk(&mut self, chunk: Chunk, input: &[u8]) -> Result<Option<usize>, &'static str> {
        match chunk {
            Chunk::Size => {
                let Some((line, n)) = line(input)? else {
                    return Ok(None);
                };
                // Extensions (`;name=value`) are ignored.
                let digits = line.split(|&b| b == b';').next().unwrap_or_default();
                let size = parse_hex(digits.trim_ascii()).ok_or(HTTP)?;
                self.state = State::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
                Ok(Some(n))
            }
            Chunk::Data(left) => {
                if input.is_empty() {
                    return Ok(None);
                }
                let n = left.min(input.len() as u64);
                self.state = State::Chunked(if n == left {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left - n)
                });
                Ok(Some(n as usize))
            }
            Chunk::DataEnd => match input {
                [b'\r', b'\n', ..] => {
                    self.state = State::Chunked(Chunk::Size);
                    Ok(Some(2))
                }
                [] | [b'\r'] => Ok(None),
                _ => Err(HTTP),
            },
            Chunk::Trailers => {
                let Some((line, n)) = line(input)? else {
                    return Ok(None);
                };
                if line.is_empty() {
                    self.state = State::Done;
                }
                Ok(Some(n))
            }
        }
    }
}

/// A CRLF-terminated line at the start of `input`: the line without its ending, and the bytes
/// it takes with it; `None` if incomplete.
fn line(input: &[u8]) -> Result<Option<(&[u8], usize)>, &'static str> {
    match input.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let line = input[..i].strip_suffix(b"\r").ok_or(HTTP)?;
            Ok(Some((line, i + 1)))
        }
        None if input.len() >= MAX_HEAD => Err(HTTP),
        None => Ok(None),
    }
}

fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    // 15 hex digits: at most 2^60 bytes, far beyond any real chunk, and no overflow.
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let v = (d as char).to_digit(16)?;
        Some(n << 4 | u64::from(v))
    })
}

fn last_token(value: &[u8]) -> Option<&[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .rfind(|t| !t.is_empty())
}

/// A worker's receive buffer, reused from one response to the next. Bytes in
/// `buf[start..end]` are received but not yet parsed.
#[derive(Debug, Default)]
pub(crate) struct RecvBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl RecvBuf {
    /// Makes room to read more: moves unparsed bytes to the front, or grows the buffer when a
    /// head or line does not fit yet (up to [`MAX_HEAD`]; the parser fails beyond).
    fn make_room(&mut self) {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).clamp(INITIAL_BUFFER, MAX_HEAD);
            self.buf.resize(grown, 0);
        }
    }
}

/// Writes `request` on `stream` and reads its whole response; returns the final status and
/// whether the connection may carry another request.
pub(crate) async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
    head_request: bool,
    buf: &mut RecvBuf,
) -> Result<(u16, bool), &'static str> {
    // Anything left from an earlier response was not asked for: the connection would not
    // have been reused (see below), so start clean.
    (buf.start, buf.end) = (0, 0);
    stream.write_all(request).await.map_err(|_| CLOSED)?;
    let mut parser = ResponseParser::new(head_request);
    loop {
        buf.start += parser.advance(&buf.buf[buf.start..buf.end])?;
        if parser.done() {
            break;
        }
        buf.make_room();
        if parser.needs_whole() && buf.end == buf.buf.len() {
            // The buffer is at its bound and the head or line is still incomplete: the parser
            // has refused it already; this is a backstop.
            return Err(HTTP);
        }
        match stream.read(&mut buf.buf[buf.end..]).await {
            Ok(0) => {
                parser.eof()?;
                break;
            }
            Ok(n) => buf.end += n,
            Err(_) => return Err(parser.io_error()),
        }
    }
    // Bytes after the response were not asked for (no pipelining): the connection's framing
    // cannot be trusted for another request.
    let reusable = parser.reusable() && buf.start == buf.end;
    Ok((parser.status(), reusable))
}

#[cfg(test)]
mod tests;
