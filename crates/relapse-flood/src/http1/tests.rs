use super::*;

/// Feeds `pieces` one after the other, as reads would deliver them, keeping unconsumed
/// bytes; then EOF if `eof`. Returns (status, reusable) or the error kind.
fn parse(pieces: &[&[u8]], head_request: bool, eof: bool) -> Result<(u16, bool), &'static str> {
    let mut p = ResponseParser::new(head_request);
    let mut pending: Vec<u8> = Vec::new();
    for piece in pieces {
        pending.extend_from_slice(piece);
        let n = p.advance(&pending)?;
        pending.drain(..n);
        if p.done() {
            return Ok((p.status(), p.reusable() && pending.is_empty()));
        }
    }
    if eof {
        p.eof()?;
        return Ok((p.status(), p.reusable()));
    }
    Err("incomplete")
}

/// Every split of `bytes` in two, and byte by byte: all must give `want`.
fn every_split(bytes: &[u8], head_request: bool, eof: bool, want: Result<(u16, bool), &str>) {
    assert_eq!(parse(&[bytes], head_request, eof), want, "whole");
    for i in 0..=bytes.len() {
        let (a, b) = bytes.split_at(i);
        assert_eq!(parse(&[a, b], head_request, eof), want, "split at {i}");
    }
    let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(parse(&bytewise, head_request, eof), want, "byte by byte");
}

#[test]
fn content_length() {
    every_split(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ndate: x\r\n\r\nok",
        false,
        false,
        Ok((200, true)),
    );
    // A HEAD's response announces a length but has no body.
    every_split(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
        true,
        false,
        Ok((200, true)),
    );
    every_split(
        b"HTTP/1.1 204 No Content\r\n\r\n",
        false,
        false,
        Ok((204, true)),
    );
    // Truncated body.
    assert_eq!(
        parse(
            &[b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nok"],
            false,
            true
        ),
        Err(BODY)
    );
    // Nothing at all: the server closed the connection.
    assert_eq!(parse(&[], false, true), Err(CLOSED));
    // Bytes after the response: not reusable.
    assert_eq!(
        parse(
            &[b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA"],
            false,
            false
        ),
        Ok((200, false))
    );
}

#[test]
fn chunked_at_every_split() {
    // As recorded from hyper (a streamed body), with an extension and a trailer added.
    let recorded: &[u8] = b"HTTP/1.1 200 OK\r\n\
        transfer-encoding: chunked\r\n\
        date: Mon, 23 Nov 2026 17:00:00 GMT\r\n\r\n\
        5\r\nhello\r\n\
        1;ext=1\r\n,\r\n\
        A\r\n world!!!!\r\n\
        0\r\n\
        x-trailer: yes\r\n\r\n";
    every_split(recorded, false, false, Ok((200, true)));
    // Chunked wins over a content-length.
    every_split(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        false,
        false,
        Ok((200, true)),
    );
    // Cut inside the chunks.
    assert_eq!(
        parse(&[&recorded[..recorded.len() - 10]], false, true),
        Err(BODY)
    );
    // A bad chunk size, a missing CRLF after data.
    for bad in [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokX\r\n",
    ] {
        assert_eq!(parse(&[bad], false, false), Err(HTTP));
    }
}

#[test]
fn no_length_reads_until_eof() {
    let resp: &[u8] = b"HTTP/1.1 200 OK\r\nserver: old\r\n\r\nsome body of unknown length";
    every_split(resp, false, true, Ok((200, false)));
    // HTTP/1.0 without keep-alive.
    every_split(
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        false,
        false,
        Ok((200, false)),
    );
    every_split(
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
        false,
        false,
        Ok((200, true)),
    );
}

#[test]
fn connection_close_is_not_reusable() {
    every_split(
        b"HTTP/1.1 503 Busy\r\nConnection: Close\r\ncontent-length: 0\r\n\r\n",
        false,
        false,
        Ok((503, false)),
    );
    every_split(
        b"HTTP/1.1 200 OK\r\nconnection: keep-alive, close\r\ncontent-length: 2\r\n\r\nok",
        false,
        false,
        Ok((200, false)),
    );
}

#[test]
fn interim_responses_are_skipped() {
    every_split(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
        false,
        false,
        Ok((201, true)),
    );
}

#[test]
fn malformed_is_an_http_error() {
    for bad in [
        &b"HTTP/1.1 2000 OK\r\n\r\n"[..],
        b"HTTP/2 200 OK\r\n\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
    ] {
        assert_eq!(
            parse(&[bad], false, false),
            Err(HTTP),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn oversized_head_is_an_http_error() {
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    while head.len() <= MAX_HEAD {
        head.extend_from_slice(b"x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    // Incomplete and already over the bound: refused without waiting for the end.
    assert_eq!(parse(&[&head], false, false), Err(HTTP));
    // Too many headers, though small.
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(parse(&[&many], false, false), Err(HTTP));
    // A chunk-size line that never ends.
    let mut endless = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1;".to_vec();
    endless.resize(endless.len() + MAX_HEAD, b'x');
    assert_eq!(parse(&[&endless], false, false), Err(HTTP));
}

/// The socket side: a response arriving in small pieces through a pipe, the buffer reused
/// across responses and growing for a large head.
#[tokio::test]
async fn exchange_over_a_pipe() {
    let (mut client, mut server) = tokio::io::duplex(64);
    let mut buf = RecvBuf::default();
    let big = format!(
        "HTTP/1.1 200 OK\r\nx-big: {}\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "y".repeat(20_000)
    );
    let serve = tokio::spawn(async move {
        let mut req = [0u8; 64];
        for resp in [
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_string(),
            big,
            "HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n".to_string(),
        ] {
            let n = server.read(&mut req).await.unwrap();
            assert_eq!(&req[..n], b"GET / HTTP/1.1\r\n\r\n");
            for piece in resp.as_bytes().chunks(7) {
                server.write_all(piece).await.unwrap();
            }
        }
    });
    let req = b"GET / HTTP/1.1\r\n\r\n";
    assert_eq!(
        exchange(&mut client, req, false, &mut buf).await,
        Ok((200, true))
    );
    assert_eq!(
        exchange(&mut client, req, false, &mut buf).await,
        Ok((200, true))
    );
    assert!(buf.buf.len() > INITIAL_BUFFER && buf.buf.len() <= MAX_HEAD);
    assert_eq!(
        exchange(&mut client, req, false, &mut buf).await,
        Ok((404, false))
    );
    serve.await.unwrap();
}
