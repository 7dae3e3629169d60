//! The IMAP SLI probe: can a user log in, open a mailbox and read from it?
//!
//! Each check is one short session over plain TCP, the way a mail client starts one:
//!
//! ```text
//! S: * OK ... ready                                  (greeting)
//! C: a1 LOGIN user password                          (login)
//! C: a2 SELECT mailbox                               (select)
//! C: a3 FETCH 1 (BODY.PEEK[HEADER.FIELDS (NAME)])    (fetch: only with a header name, and only
//!                                                     when the mailbox holds a message)
//! C: a4 LOGOUT                                       (logout)
//! ```
//!
//! The responses are framed by a small parser written here rather than taken from a crate such
//! as `imap-proto`: the probe needs only the framing (lines, literals, tagged / untagged /
//! continuation) and the status of tagged responses, not the whole grammar, and a framer of its
//! own keeps its memory bound explicit and its split points testable. See [`ResponseParser`].

use std::fmt;
use std::io;
use std::time::Duration;

use relapse_core::fault::BoxFuture;
use relapse_core::sense::{Outcome, Probe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::tcp::check_address;
use crate::{short_detail, ProbeError};

/// The largest response the probe accepts, its lines and literals together. A header fetch
/// answers with a few hundred bytes; anything this large is a broken or hostile server, and the
/// probe reports it instead of buffering it.
pub(crate) const MAX_RESPONSE: usize = 1 << 20;

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;

/// An IMAP SLI probe: log in, select a mailbox, optionally fetch one header of its first message,
/// log out. Success iff every step is answered `OK` within the timeout.
pub struct ImapProbe {
    address: String,
    user: String,
    password: String,
    mailbox: String,
    fetch_header: Option<String>,
    timeout: Duration,
}

/// What one successful session saw; [`ImapProbe::session`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapSession {
    /// The number of messages SELECT reported (`* N EXISTS`).
    pub messages: u32,
    /// The raw header lines the FETCH returned for the first message (`Name: value\r\n\r\n`,
    /// or just `\r\n` when it has no such header); `None` when no FETCH was sent (no header name,
    /// or an empty mailbox) or the server answered without a literal.
    pub header: Option<Vec<u8>>,
}

/// The step a check is in; failures are named after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connect,
    Greeting,
    Login,
    Select,
    Fetch,
    Logout,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Connect => "connect",
            Step::Greeting => "greeting",
            Step::Login => "login",
            Step::Select => "select",
            Step::Fetch => "fetch",
            Step::Logout => "logout",
        })
    }
}

impl ImapProbe {
    /// Builds a probe that logs in to the IMAP server at `host:port` (plain TCP: TLS is out of
    /// scope) as `user` with `password`, selects `mailbox` and, when `fetch_header` names a
    /// header field such as `Subject`, fetches that header of the first message (without
    /// marking it seen). The whole session is bounded by `timeout`.
    ///
    /// Refused here: a malformed address; an empty user; a NUL in the user or password (IMAP
    /// cannot carry one); a mailbox name that is empty or not printable ASCII (a non-ASCII name
    /// must be given in IMAP's modified UTF-7, as it goes on the wire); a header name that is not
    /// a valid field name. No connection is made here.
    pub fn new(
        address: &str,
        user: &str,
        password: &str,
        mailbox: &str,
        fetch_header: Option<String>,
        timeout: Duration,
    ) -> Result<ImapProbe, ProbeError> {
        let address = check_address(address)?.to_owned();
        let invalid = |field, reason: String| ProbeError::InvalidImap { field, reason };
        if user.is_empty() {
            return Err(invalid("user", "empty".to_owned()));
        }
        if user.contains('\0') {
            return Err(invalid("user", format!("{user:?} contains NUL")));
        }
        if password.contains('\0') {
            return Err(invalid("password", "contains NUL".to_owned()));
        }
        if mailbox.is_empty() || !mailbox.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(invalid(
                "mailbox",
                format!("{mailbox:?}: expected printable ASCII (modified UTF-7 for other names)"),
            ));
        }
        if let Some(name) = &fetch_header {
            // RFC 5322 field names: printable ASCII except the colon.
            if name.is_empty() || !name.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b':') {
                return Err(invalid(
                    "header",
                    format!("{name:?}: expected a header field name such as Subject"),
                ));
            }
        }
        Ok(ImapProbe {
            address,
            user: user.to_owned(),
            password: password.to_owned(),
            mailbox: mailbox.to_owned(),
            fetch_header,
            timeout,
        })
    }

    /// Runs one session and returns what it saw, or the error a check would report (such as
    /// `select: NO Mailbox doesn't exist: Foo` or `login: timeout`).
    pub async fn session(&self) -> Result<ImapSession, String> {
        let mut step = Step::Connect;
        let result = tokio::time::timeout(self.timeout, self.run(&mut step)).await;
        match result {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(reason)) => Err(format!("{step}: {reason}")),
            Err(_elapsed) => Err(format!("{step}: timeout")),
        }
    }

    /// The session itself; `step` follows it so that a timeout can name where it hung.
    async fn run(&self, step: &mut Step) -> Result<ImapSession, String> {
        *step = Step::Connect;
        let stream = connect(&self.address).await?;
        let mut conn = Connection::new(stream);

        *step = Step::Greeting;
        conn.greeting().await?;

        *step = Step::Login;
        let mut login = Command::new("a1 LOGIN");
        login.arg(self.user.as_bytes());
        login.arg(self.password.as_bytes());
        conn.command(login, |_| {}).await?;

        *step = Step::Select;
        let mut select = Command::new("a2 SELECT");
        select.arg(self.mailbox.as_bytes());
        let mut messages = 0;
        conn.command(select, |response| {
            if let Some(count) = response.text.strip_suffix(" EXISTS") {
                if let Ok(count) = count.parse() {
                    messages = count;
                }
            }
        })
        .await?;

        let mut header = None;
        if let Some(name) = self.fetch_header.as_deref().filter(|_| messages > 0) {
            *step = Step::Fetch;
            // The name was checked to be printable ASCII without spaces; quote it anyway, so that
            // characters such as `(` cannot break the command.
            let fetch = Command::new(&format!(
                "a3 FETCH 1 (BODY.PEEK[HEADER.FIELDS ({})])",
                quoted(name.as_bytes())
            ));
            conn.command(fetch, |response| {
                let is_first = response
                    .text
                    .split_once(' ')
                    .is_some_and(|(n, rest)| n == "1" && rest.starts_with("FETCH"));
                if is_first && header.is_none() {
                    header = response.literals.first().cloned();
                }
            })
            .await?;
        }

        *step = Step::Logout;
        conn.command(Command::new("a4 LOGOUT"), |_| {}).await?;
        Ok(ImapSession { messages, header })
    }
}

impl Probe for ImapProbe {
    fn check(&self) -> BoxFuture<'_, Outcome> {
        Box::pin(async move {
            match self.session().await {
                Ok(_) => Outcome::Success { status: None },
                Err(error) => Outcome::Failure {
                    status: None,
                    error,
                },
            }
        })
    }
}

/// Resolves and connects, trying each address in turn; the error is a short reason (`refused`,
/// `dns`, ...) that the caller prefixes with the step.
async fn connect(address: &str) -> Result<TcpStream, String> {
    let addrs = tokio::net::lookup_host(address)
        .await
        .map_err(|_| "dns".to_owned())?;
    let mut last = "dns".to_owned();
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // Latency is what the probe measures; don't let Nagle add to it.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(error) => last = io_reason(error.kind()),
        }
    }
    Err(last)
}

/// Maps an I/O error kind to a short reason.
fn io_reason(kind: io::ErrorKind) -> String {
    match kind {
        io::ErrorKind::ConnectionRefused => "refused".to_owned(),
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => "reset".to_owned(),
        io::ErrorKind::TimedOut => "timeout".to_owned(),
        io::ErrorKind::UnexpectedEof => "closed".to_owned(),
        kind => kind.to_string(),
    }
}

/// A command to send, cut where the server must answer a literal's `{N}` with `+` before the
/// literal's bytes may follow: every segment but the last ends with `{N}\r\n`, and the one after
/// it starts with those N bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Command {
    segments: Vec<Vec<u8>>,
}

impl Command {
    /// Starts a command with its tag and name, e.g. `a1 LOGIN`.
    fn new(head: &str) -> Command {
        Command {
            segments: vec![head.as_bytes().to_vec()],
        }
    }

    /// Appends a space and `value` as an IMAP string: quoted when it is 7-bit text, a literal
    /// when it holds CR, LF or 8-bit bytes (which a quoted string cannot carry).
    fn arg(&mut self, value: &[u8]) {
        let last = self.segments.last_mut().expect("a command has a segment");
        last.push(b' ');
        if value
            .iter()
            .all(|&b| b != b'\r' && b != b'\n' && b.is_ascii())
        {
            last.extend_from_slice(quoted(value).as_bytes());
        } else {
            last.extend_from_slice(format!("{{{}}}\r\n", value.len()).as_bytes());
            self.segments.push(value.to_vec());
        }
    }

    /// The segments, the last one terminated with CRLF.
    fn finish(mut self) -> Vec<Vec<u8>> {
        self.segments
            .last_mut()
            .expect("a command has a segment")
            .extend_from_slice(b"\r\n");
        self.segments
    }

    /// The tag: the first word of the first segment.
    fn tag(&self) -> String {
        let head = &self.segments[0];
        let end = head.iter().position(|&b| b == b' ').unwrap_or(head.len());
        String::from_utf8_lossy(&head[..end]).into_owned()
    }
}

/// `value` as an IMAP quoted string; the caller makes sure it is 7-bit without CR or LF.
fn quoted(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for &b in value {
        if b == b'"' || b == b'\\' {
            out.push('\\');
        }
        out.push(char::from(b));
    }
    out.push('"');
    out
}

/// An untagged response handed to a command's observer.
struct Untagged {
    /// The response after `* `, literals replaced by their `{N}` markers.
    text: String,
    literals: Vec<Vec<u8>>,
}

/// One IMAP connection: the socket and the framer reading it.
struct Connection {
    stream: TcpStream,
    parser: ResponseParser,
    /// The text of an untagged BYE, so that the close that follows it can say why.
    bye: Option<String>,
}

impl Connection {
    fn new(stream: TcpStream) -> Connection {
        Connection {
            stream,
            parser: ResponseParser::new(),
            bye: None,
        }
    }

    /// The next complete response, reading as much as it takes.
    async fn response(&mut self) -> Result<Response, String> {
        let mut chunk = [0; READ_CHUNK];
        loop {
            if let Some(response) = self.parser.next().map_err(|error| error.to_string())? {
                return Ok(response);
            }
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|error| io_reason(error.kind()))?;
            if n == 0 {
                return Err(match self.bye.take() {
                    Some(text) => short_detail(&format!("BYE {text}")),
                    None => "closed".to_owned(),
                });
            }
            self.parser.feed(&chunk[..n]);
        }
    }

    /// Reads the greeting: `* OK` to go on; `* BYE` (the server refuses the connection) and
    /// anything else, `* PREAUTH` included (the probe is there to test the login), fail.
    async fn greeting(&mut self) -> Result<(), String> {
        match self.response().await? {
            Response::Untagged { text, .. } if starts_with_word(&text, "OK") => Ok(()),
            Response::Untagged { text, .. } => Err(short_detail(&text)),
            other => Err(short_detail(&format!("unexpected {other}"))),
        }
    }

    /// Sends `command` and reads up to its tagged answer, handing each untagged response to
    /// `observe`. `Ok` iff the answer is OK; otherwise the error is the answer (`NO ...`).
    async fn command(
        &mut self,
        command: Command,
        mut observe: impl FnMut(Untagged),
    ) -> Result<(), String> {
        let tag = command.tag();
        let mut segments = command.finish().into_iter().peekable();
        let mut send = true;
        loop {
            if send {
                let segment = segments.next().expect("sent only while segments remain");
                self.stream
                    .write_all(&segment)
                    .await
                    .map_err(|error| io_reason(error.kind()))?;
                send = false;
            }
            // A literal's bytes wait for the server's go-ahead.
            let awaiting_continuation = segments.peek().is_some();
            match self.response().await? {
                Response::Continuation { .. } if awaiting_continuation => send = true,
                Response::Continuation { text } => {
                    return Err(short_detail(&format!("unexpected continuation {text}")));
                }
                Response::Untagged { text, literals } => {
                    if starts_with_word(&text, "BYE") {
                        self.bye = Some(text[3..].trim_start().to_owned());
                    }
                    observe(Untagged { text, literals });
                }
                Response::Tagged {
                    tag: answered,
                    status,
                    text,
                } if answered == tag => {
                    return match status {
                        // An OK before the literal was sent would be a confused server.
                        Status::Ok if !awaiting_continuation => Ok(()),
                        status => Err(short_detail(&format!("{status} {text}"))),
                    };
                }
                Response::Tagged { tag, .. } => {
                    return Err(short_detail(&format!("unexpected tag {tag}")));
                }
            }
        }
    }
}

/// Whether `text` starts with the word `word`, in any case (`OK`, `ok [ALERT]`, ...).
fn starts_with_word(text: &str, word: &str) -> bool {
    text.get(..word.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(word))
        && text[word.len()..].chars().next().is_none_or(|c| c == ' ')
}

// ---------------------------------------------------------------------------------------------
// Framing

/// The status of a tagged response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    No,
    Bad,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
        })
    }
}

/// One complete server response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Response {
    /// `a1 OK text`: the end of the command tagged `a1`.
    Tagged {
        tag: String,
        status: Status,
        text: String,
    },
    /// `* text`: data or a status the server sends on its own. The text is the response after
    /// `* `, its lines joined, each literal replaced by its `{N}` marker; the literals' bytes are
    /// in `literals`, in order.
    Untagged {
        text: String,
        literals: Vec<Vec<u8>>,
    },
    /// `+ text`: go ahead with the literal.
    Continuation { text: String },
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Tagged { tag, status, text } => write!(f, "{tag} {status} {text}"),
            Response::Untagged { text, .. } => write!(f, "* {text}"),
            Response::Continuation { text } => write!(f, "+ {text}"),
        }
    }
}

/// Why the framer gave up; the connection is not usable after it.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// A response (its lines and literals together) past the limit, or a literal announced
    /// past it.
    #[error("response longer than {limit} bytes")]
    TooLong { limit: usize },
    /// A line that is neither tagged, untagged nor a continuation, or a tagged one without a
    /// status.
    #[error("malformed response {0:?}")]
    Malformed(String),
}

/// An incremental framer of IMAP server responses: [`feed`](Self::feed) it bytes as they
/// arrive, in chunks of any size, and take complete responses with [`next`](Self::next).
///
/// A response is a line ending in CRLF, unless the line ends with a literal's `{N}`: then N bytes
/// follow, whatever they contain (CRLFs, text that looks like a tagged response, another `{M}`),
/// and the response goes on with the next line. Literals are read by length, never scanned.
///
/// Memory is bounded: a response whose lines and literals together pass the limit is an error,
/// raised as soon as the buffered part of an unterminated line or an announced literal passes
/// it, without waiting for the rest.
pub(crate) struct ResponseParser {
    limit: usize,
    /// Received bytes not yet framed.
    buf: Vec<u8>,
    /// How far `buf` is known to hold no LF, so that a line arriving byte by byte is scanned once.
    scanned: usize,
    /// The current response's lines so far, CRLFs dropped.
    text: Vec<u8>,
    literals: Vec<Vec<u8>>,
    /// The length of the literal being received, when the last line announced one.
    literal: Option<usize>,
    /// Bytes of the current response consumed so far, CRLFs and literals included.
    size: usize,
}

impl ResponseParser {
    pub(crate) fn new() -> ResponseParser {
        ResponseParser::with_limit(MAX_RESPONSE)
    }

    pub(crate) fn with_limit(limit: usize) -> ResponseParser {
        ResponseParser {
            limit,
            buf: Vec::new(),
            scanned: 0,
            text: Vec::new(),
            literals: Vec::new(),
            literal: None,
            size: 0,
        }
    }

    /// Adds received bytes.
    pub(crate) fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete response, `None` until one has arrived in full.
    pub(crate) fn next(&mut self) -> Result<Option<Response>, FrameError> {
        loop {
            if let Some(len) = self.literal {
                if self.buf.len() < len {
                    return Ok(None);
                }
                let rest = self.buf.split_off(len);
                self.literals.push(std::mem::replace(&mut self.buf, rest));
                self.size += len;
                self.literal = None;
                continue;
            }
            let Some(at) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buf.len();
                if self.size + self.buf.len() > self.limit {
                    return Err(FrameError::TooLong { limit: self.limit });
                }
                return Ok(None);
            };
            let end = self.scanned + at + 1;
            self.scanned = 0;
            self.size += end;
            if self.size > self.limit {
                return Err(FrameError::TooLong { limit: self.limit });
            }
            let rest = self.buf.split_off(end);
            let mut line = std::mem::replace(&mut self.buf, rest);
            line.pop();
            // CRLF is the rule; a bare LF is taken as well.
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let literal = literal_len(&line);
            self.text.extend_from_slice(&line);
            if let Some(len) = literal {
                if len > (self.limit - self.size) as u64 {
                    return Err(FrameError::TooLong { limit: self.limit });
                }
                self.literal = Some(len as usize);
                continue;
            }
            self.size = 0;
            let text = std::mem::take(&mut self.text);
            let literals = std::mem::take(&mut self.literals);
            return classify(&text, literals).map(Some);
        }
    }

    /// Bytes buffered but not yet part of a returned response.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.buf.len() + self.text.len() + self.literals.iter().map(Vec::len).sum::<usize>()
    }
}

/// The length a line's trailing `{N}` announces; a number too large for `u64` saturates, so that
/// it is refused as too long rather than misread as text.
fn literal_len(line: &[u8]) -> Option<u64> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let digits = std::str::from_utf8(digits).expect("ASCII digits");
    Some(digits.parse().unwrap_or(u64::MAX))
}

/// Sorts a complete response by its first word.
fn classify(text: &[u8], literals: Vec<Vec<u8>>) -> Result<Response, FrameError> {
    let text = String::from_utf8_lossy(text);
    if let Some(rest) = text.strip_prefix('+') {
        return Ok(Response::Continuation {
            text: rest.strip_prefix(' ').unwrap_or(rest).to_owned(),
        });
    }
    if let Some(rest) = text.strip_prefix("* ") {
        return Ok(Response::Untagged {
            text: rest.to_owned(),
            literals,
        });
    }
    let malformed = || FrameError::Malformed(short_detail(&text));
    let (tag, rest) = text.split_once(' ').ok_or_else(malformed)?;
    if tag.is_empty() || tag == "*" {
        return Err(malformed());
    }
    let (word, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let status = match word.to_ascii_uppercase().as_str() {
        "OK" => Status::Ok,
        "NO" => Status::No,
        "BAD" => Status::Bad,
        _ => return Err(malformed()),
    };
    Ok(Response::Tagged {
        tag: tag.to_owned(),
        status,
        text: rest.to_owned(),
    })
}

#[cfg(test)]
mod tests;
