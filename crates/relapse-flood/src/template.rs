//! Request templates: a method, a path, headers and a body, each of which may hold placeholders
//! rendered per request.
//!
//! Placeholders: `{seq}` (the request number, from 0), `{rand.u32}`, `{rand.alnum:N}` (N random
//! letters and digits), `{source}` (the connection's source address). `{{` and `}}` are literal
//! braces. A template is split into parts once, so rendering is a walk over the parts into a
//! reused buffer.

use std::io::Write;
use std::net::IpAddr;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use hyper::{Method, Uri};
use rand::rngs::SmallRng;
use rand::Rng;

use crate::FloodError;

/// The longest `{rand.alnum:N}`: a guard against a typo that would render megabytes per request.
const MAX_ALNUM: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Bytes),
    Seq,
    RandU32,
    RandAlnum(usize),
    Source,
}

/// A string with placeholders, split into parts once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// What a template is rendered with.
pub(crate) struct RenderCtx<'a> {
    pub seq: u64,
    pub source: IpAddr,
    pub rng: &'a mut SmallRng,
}

impl Template {
    /// Parses a template; unknown placeholders and unbalanced braces are refused.
    pub fn parse(text: &str) -> Result<Template, FloodError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err(FloodError::Template(format!("unmatched '}}' in {text:?}")));
            }
            let end = tail
                .find('}')
                .ok_or_else(|| FloodError::Template(format!("unclosed '{{' in {text:?}")))?;
            let part = match &tail[1..end] {
                "seq" => Part::Seq,
                "rand.u32" => Part::RandU32,
                "source" => Part::Source,
                other => match other.strip_prefix("rand.alnum:").map(str::parse::<usize>) {
                    Some(Ok(n)) if n <= MAX_ALNUM => Part::RandAlnum(n),
                    _ => {
                        return Err(FloodError::Template(format!(
                            "unknown placeholder {{{other}}}: expected {{seq}}, {{rand.u32}}, \
                             {{rand.alnum:N}} (N ≤ {MAX_ALNUM}) or {{source}}"
                        )))
                    }
                },
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(Bytes::from(std::mem::take(&mut literal))));
            }
            parts.push(part);
            rest = &tail[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(Bytes::from(literal)));
        }
        Ok(Template { parts })
    }

    /// The rendered text if it has no placeholders.
    fn constant(&self) -> Option<Bytes> {
        match self.parts.as_slice() {
            [] => Some(Bytes::new()),
            [Part::Literal(b)] => Some(b.clone()),
            _ => None,
        }
    }

    /// Appends the rendering to `out`.
    pub(crate) fn render_into(&self, ctx: &mut RenderCtx<'_>, out: &mut Vec<u8>) {
        const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        for part in &self.parts {
            // Writing into a Vec cannot fail.
            let _ = match part {
                Part::Literal(b) => {
                    out.extend_from_slice(b);
                    Ok(())
                }
                Part::Seq => write!(out, "{}", ctx.seq),
                Part::RandU32 => write!(out, "{}", ctx.rng.random::<u32>()),
                Part::Source => write!(out, "{}", ctx.source),
                Part::RandAlnum(n) => {
                    out.extend((0..*n).map(|_| ALNUM[ctx.rng.random_range(0..ALNUM.len())]));
                    Ok(())
                }
            };
        }
    }

    /// Renders into a fresh string (tests, previews).
    pub fn render(&self, seq: u64, source: IpAddr, rng: &mut SmallRng) -> String {
        let mut out = Vec::new();
        self.render_into(&mut RenderCtx { seq, source, rng }, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// What each request of a flood looks like.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    pub method: Method,
    pub path: Template,
    pub headers: Vec<(HeaderName, Template)>,
    pub body: Template,
}

impl RequestTemplate {
    /// `METHOD path` with `body`; the method is checked here.
    pub fn new(method: &str, path: &str, body: &str) -> Result<RequestTemplate, FloodError> {
        Ok(RequestTemplate {
            method: Method::from_bytes(method.as_bytes())
                .map_err(|_| FloodError::Template(format!("invalid http method {method:?}")))?,
            path: Template::parse(path)?,
            headers: Vec::new(),
            body: Template::parse(body)?,
        })
    }

    /// `GET path`.
    pub fn get(path: &str) -> Result<RequestTemplate, FloodError> {
        Ok(RequestTemplate {
            method: Method::GET,
            path: Template::parse(path)?,
            headers: Vec::new(),
            body: Template::parse("")?,
        })
    }

    /// `POST path` with a form body, e.g. `user=u{rand.u32}&password={rand.alnum:12}`.
    pub fn post_form(path: &str, body: &str) -> Result<RequestTemplate, FloodError> {
        RequestTemplate {
            method: Method::POST,
            path: Template::parse(path)?,
            headers: Vec::new(),
            body: Template::parse(body)?,
        }
        .header("content-type", "application/x-www-form-urlencoded")
    }

    /// Adds a header whose value is a template.
    pub fn header(mut self, name: &str, value: &str) -> Result<RequestTemplate, FloodError> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| FloodError::Template(format!("invalid header name {name:?}")))?;
        self.headers.push((name, Template::parse(value)?));
        Ok(self)
    }
}

/// What a rendered piece of the request must look like to go on the wire as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// A request target: visible ASCII only (a space or a line break would change the request
    /// line).
    Path,
    /// A header value: no control characters but tab (a line break would inject a header).
    HeaderValue,
}

impl Check {
    fn ok(self, bytes: &[u8]) -> bool {
        match self {
            Check::Path => !bytes.is_empty() && bytes.iter().all(|b| (0x21..=0x7e).contains(b)),
            Check::HeaderValue => bytes
                .iter()
                .all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t'),
        }
    }
}

/// A piece of the request head: bytes as they go on the wire, or a template rendered per
/// request and checked.
#[derive(Debug)]
enum Piece {
    Literal(Vec<u8>),
    Rendered(Template, Check),
}

/// A template prepared for one flood, as HTTP/1.1 bytes. Without placeholders the whole request
/// is built once and written as is; otherwise the head is a list of pieces, literal ones
/// pre-joined, rendered per request into a reused buffer.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The whole request, when nothing in it varies.
    constant: Option<Vec<u8>>,
    /// The request line and headers, up to (excluding) `content-length` and the blank line.
    head: Vec<Piece>,
    body: Result<Bytes, Template>,
    /// Send `content-length` even for an empty body: methods that define a meaning for a body
    /// should say it is empty (RFC 9110 §8.6). Off when the template sets its own.
    length_always: bool,
    /// Send no `content-length`: the template has its own.
    length_given: bool,
    head_request: bool,
}

impl Prepared {
    /// Checks the constant parts now, so a bad path or header fails before any traffic.
    pub(crate) fn new(
        template: &RequestTemplate,
        host: &str,
        keep_alive: bool,
    ) -> Result<Prepared, FloodError> {
        let mut head = Vec::new();
        let literal = |head: &mut Vec<Piece>, bytes: &[u8]| match head.last_mut() {
            Some(Piece::Literal(l)) => l.extend_from_slice(bytes),
            _ => head.push(Piece::Literal(bytes.to_vec())),
        };
        literal(&mut head, template.method.as_str().as_bytes());
        literal(&mut head, b" ");
        match template.path.constant() {
            Some(b) => {
                // Parsed as a URI for its error message; written as given.
                Uri::from_maybe_shared(b.clone())
                    .map_err(|e| FloodError::Template(format!("path: {e}")))?;
                if !Check::Path.ok(&b) {
                    return Err(FloodError::Template(format!("path: invalid {b:?}")));
                }
                literal(&mut head, &b);
            }
            None => head.push(Piece::Rendered(template.path.clone(), Check::Path)),
        }
        literal(&mut head, b" HTTP/1.1\r\n");
        let header = |head: &mut Vec<Piece>, name: &HeaderName, value: Piece| {
            literal(head, name.as_str().as_bytes());
            literal(head, b": ");
            match value {
                Piece::Literal(v) => literal(head, &v),
                rendered => head.push(rendered),
            }
            literal(head, b"\r\n");
        };
        if !template.headers.iter().any(|(n, _)| n == HOST) {
            header(&mut head, &HOST, Piece::Literal(host.as_bytes().to_vec()));
        }
        if !keep_alive {
            // The server closes first, so TIME_WAIT lands on its side, not on our ports.
            header(&mut head, &CONNECTION, Piece::Literal(b"close".to_vec()));
        }
        for (name, value) in &template.headers {
            let value = match value.constant() {
                Some(b) => {
                    HeaderValue::from_maybe_shared(b.clone())
                        .map_err(|e| FloodError::Template(format!("header {name}: {e}")))?;
                    Piece::Literal(b.to_vec())
                }
                None => Piece::Rendered(value.clone(), Check::HeaderValue),
            };
            header(&mut head, name, value);
        }
        let length_given = template
            .headers
            .iter()
            .any(|(n, _)| n == CONTENT_LENGTH || n == TRANSFER_ENCODING);
        let length_always =
            !length_given && [Method::POST, Method::PUT, Method::PATCH].contains(&template.method);
        let mut prepared = Prepared {
            constant: None,
            head,
            body: template
                .body
                .constant()
                .ok_or_else(|| template.body.clone()),
            length_always,
            length_given,
            head_request: template.method == Method::HEAD,
        };
        if let (Ok(body), [Piece::Literal(head)]) = (&prepared.body, prepared.head.as_slice()) {
            let mut wire = head.clone();
            prepared.finish(&mut wire, body);
            prepared.constant = Some(wire);
        }
        Ok(prepared)
    }

    /// Whether the request is a HEAD, whose response has no body whatever its headers say.
    pub(crate) fn head_request(&self) -> bool {
        self.head_request
    }

    /// Appends the length header, the blank line and the body to a head.
    fn finish(&self, out: &mut Vec<u8>, body: &[u8]) {
        if !self.length_given && (self.length_always || !body.is_empty()) {
            // Writing into a Vec cannot fail.
            let _ = write!(out, "content-length: {}\r\n", body.len());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
    }

    /// The bytes of one request. `scratch` is reused between requests, so a templated request
    /// costs no allocation once it has grown. Fails only when a rendered placeholder makes an
    /// invalid request target or header value.
    pub(crate) fn build<'a>(
        &'a self,
        ctx: &mut RenderCtx<'_>,
        scratch: &'a mut Scratch,
    ) -> Result<&'a [u8], ()> {
        if let Some(wire) = &self.constant {
            return Ok(wire);
        }
        let Scratch { out, body } = scratch;
        out.clear();
        for piece in &self.head {
            match piece {
                Piece::Literal(b) => out.extend_from_slice(b),
                Piece::Rendered(t, check) => {
                    let from = out.len();
                    t.render_into(ctx, out);
                    if !check.ok(&out[from..]) {
                        return Err(());
                    }
                }
            }
        }
        match &self.body {
            Ok(b) => self.finish(out, b),
            Err(t) => {
                body.clear();
                t.render_into(ctx, body);
                self.finish(out, body);
            }
        }
        Ok(out)
    }
}

/// A worker's buffers for rendering requests, reused from one request to the next.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    out: Vec<u8>,
    body: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn placeholders_render_per_request() {
        let mut rng = SmallRng::seed_from_u64(1);
        let t =
            Template::parse("user=u{rand.u32}&password={rand.alnum:12}&n={seq}&s={source}{{x}}")
                .unwrap();
        let out = t.render(41, "127.0.0.9".parse().unwrap(), &mut rng);
        let fields: Vec<&str> = out.split('&').collect();
        assert!(
            fields[0]
                .strip_prefix("user=u")
                .unwrap()
                .parse::<u32>()
                .is_ok(),
            "{out}"
        );
        let pw = fields[1].strip_prefix("password=").unwrap();
        assert_eq!(pw.len(), 12);
        assert!(pw.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(fields[2], "n=41");
        assert_eq!(fields[3], "s=127.0.0.9{x}");
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(Template::parse("{nope}").is_err());
        assert!(Template::parse("{seq").is_err());
        assert!(Template::parse("a}b").is_err());
        assert!(Template::parse("{rand.alnum:x}").is_err());
        assert_eq!(
            Template::parse("plain").unwrap().constant().unwrap(),
            "plain"
        );
    }

    fn wire(template: &RequestTemplate, keep_alive: bool, seq: u64) -> Result<String, ()> {
        let prepared = Prepared::new(template, "127.0.0.1:8080", keep_alive).unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let mut ctx = RenderCtx {
            seq,
            source: "127.0.0.9".parse().unwrap(),
            rng: &mut rng,
        };
        let mut scratch = Scratch::default();
        let bytes = prepared.build(&mut ctx, &mut scratch)?;
        Ok(String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[test]
    fn constant_requests_are_prebuilt() {
        let get = RequestTemplate::get("/a?b=1").unwrap();
        let prepared = Prepared::new(&get, "127.0.0.1:8080", true).unwrap();
        assert!(prepared.constant.is_some());
        assert_eq!(
            wire(&get, true, 0).unwrap(),
            "GET /a?b=1 HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\r\n"
        );
        // Without keep-alive the server is asked to close; an empty POST says its length.
        let post = RequestTemplate::new("POST", "/", "").unwrap();
        assert_eq!(
            wire(&post, false, 0).unwrap(),
            "POST / HTTP/1.1\r\nhost: 127.0.0.1:8080\r\nconnection: close\r\n\
             content-length: 0\r\n\r\n"
        );
        // A template's own Host replaces ours.
        let host = RequestTemplate::get("/")
            .unwrap()
            .header("Host", "example")
            .unwrap();
        assert_eq!(
            wire(&host, true, 0).unwrap(),
            "GET / HTTP/1.1\r\nhost: example\r\n\r\n"
        );
    }

    #[test]
    fn templated_requests_render_into_the_wire_format() {
        let t = RequestTemplate::post_form("/login?n={seq}", "user=u{seq}")
            .unwrap()
            .header("x-seq", "{seq}")
            .unwrap();
        let prepared = Prepared::new(&t, "h", true).unwrap();
        assert!(prepared.constant.is_none());
        assert_eq!(
            wire(&t, true, 1234).unwrap(),
            "POST /login?n=1234 HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\
             content-type: application/x-www-form-urlencoded\r\nx-seq: 1234\r\n\
             content-length: 10\r\n\r\nuser=u1234"
        );
        // A literal that would break the request line with a rendered part is refused per
        // request, as before (a constant one is refused at once).
        let spaced = RequestTemplate::get("/a b{seq}").unwrap();
        assert_eq!(wire(&spaced, true, 0), Err(()));
        assert!(Prepared::new(&RequestTemplate::get("/a b").unwrap(), "h", true).is_err());
    }
}
