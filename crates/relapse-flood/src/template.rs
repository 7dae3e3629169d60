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
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CONNECTION, HOST};
use hyper::{Method, Request, Uri};
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

/// A template prepared for one flood: constant parts are built once and cloned (a reference
/// count) per request; only placeholders are rendered.
#[derive(Debug)]
pub(crate) struct Prepared {
    method: Method,
    path: Result<Uri, Template>,
    headers: Vec<(HeaderName, Result<HeaderValue, Template>)>,
    body: Result<Bytes, Template>,
}

impl Prepared {
    /// Checks the constant parts now, so a bad path or header fails before any traffic.
    pub(crate) fn new(
        template: &RequestTemplate,
        host: &str,
        keep_alive: bool,
    ) -> Result<Prepared, FloodError> {
        let path = match template.path.constant() {
            Some(b) => Ok(Uri::from_maybe_shared(b)
                .map_err(|e| FloodError::Template(format!("path: {e}")))?),
            None => Err(template.path.clone()),
        };
        let mut headers = Vec::with_capacity(template.headers.len() + 2);
        // The client connection API does not add Host from an origin-form URI.
        if !template.headers.iter().any(|(n, _)| n == HOST) {
            headers.push((
                HOST,
                Ok(HeaderValue::from_str(host).expect("an address is a valid header")),
            ));
        }
        if !keep_alive {
            // The server closes first, so TIME_WAIT lands on its side, not on our ports.
            headers.push((CONNECTION, Ok(HeaderValue::from_static("close"))));
        }
        for (name, value) in &template.headers {
            let value = match value.constant() {
                Some(b) => Ok(HeaderValue::from_maybe_shared(b)
                    .map_err(|e| FloodError::Template(format!("header {name}: {e}")))?),
                None => Err(value.clone()),
            };
            headers.push((name.clone(), value));
        }
        Ok(Prepared {
            method: template.method.clone(),
            path,
            headers,
            body: template
                .body
                .constant()
                .ok_or_else(|| template.body.clone()),
        })
    }

    /// Builds one request. `scratch` is reused between requests. Fails only when a rendered
    /// placeholder makes an invalid URI or header value.
    pub(crate) fn build(
        &self,
        ctx: &mut RenderCtx<'_>,
        scratch: &mut Vec<u8>,
    ) -> Result<Request<Full<Bytes>>, ()> {
        let mut render = |t: &Template, ctx: &mut RenderCtx<'_>| {
            scratch.clear();
            t.render_into(ctx, scratch);
            Bytes::copy_from_slice(scratch)
        };
        let body = match &self.body {
            Ok(b) => b.clone(),
            Err(t) => render(t, ctx),
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = match &self.path {
            Ok(uri) => uri.clone(),
            Err(t) => Uri::from_maybe_shared(render(t, ctx)).map_err(|_| ())?,
        };
        let headers = req.headers_mut();
        headers.reserve(self.headers.len());
        for (name, value) in &self.headers {
            let value = match value {
                Ok(v) => v.clone(),
                Err(t) => HeaderValue::from_maybe_shared(render(t, ctx)).map_err(|_| ())?,
            };
            headers.append(name.clone(), value);
        }
        Ok(req)
    }
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
}
