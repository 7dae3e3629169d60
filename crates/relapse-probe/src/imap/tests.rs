use super::*;

/// A transcript with every kind of response and the framing traps: literals holding CRLFs,
/// a fake tagged line and a fake `{N}`; an empty literal; two literals in one response; a
/// bare LF; lowercase status words.
fn transcript() -> (Vec<u8>, Vec<Response>) {
    let trap = b"Subject: a3 OK {5}\r\na3 NO fake\r\n\r\n";
    let mut wire = Vec::new();
    wire.extend_from_slice(b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n");
    wire.extend_from_slice(b"+ Ready for literal data\r\n");
    wire.extend_from_slice(b"+\r\n");
    wire.extend_from_slice(b"* 2 EXISTS\n");
    wire.extend_from_slice(
        format!(
            "* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {{{}}}\r\n",
            trap.len()
        )
        .as_bytes(),
    );
    wire.extend_from_slice(trap);
    wire.extend_from_slice(b")\r\n");
    wire.extend_from_slice(b"* 2 FETCH (BODY[1] {0}\r\n BODY[2] {3}\r\nx\r\n)\r\n");
    wire.extend_from_slice(b"a3 ok Fetch completed.\r\n");
    wire.extend_from_slice(b"a4 BAD [PARSE] no\r\n");
    wire.extend_from_slice(b"a5 NO\r\n");
    let expected = vec![
        Response::Untagged {
            text: "OK [CAPABILITY IMAP4rev1] Dovecot ready.".into(),
            literals: vec![],
        },
        Response::Continuation {
            text: "Ready for literal data".into(),
        },
        Response::Continuation { text: "".into() },
        Response::Untagged {
            text: "2 EXISTS".into(),
            literals: vec![],
        },
        Response::Untagged {
            text: format!("1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {{{}}})", trap.len()),
            literals: vec![trap.to_vec()],
        },
        Response::Untagged {
            text: "2 FETCH (BODY[1] {0} BODY[2] {3})".into(),
            literals: vec![vec![], b"x\r\n".to_vec()],
        },
        Response::Tagged {
            tag: "a3".into(),
            status: Status::Ok,
            text: "Fetch completed.".into(),
        },
        Response::Tagged {
            tag: "a4".into(),
            status: Status::Bad,
            text: "[PARSE] no".into(),
        },
        Response::Tagged {
            tag: "a5".into(),
            status: Status::No,
            text: "".into(),
        },
    ];
    (wire, expected)
}

/// Feeds `chunks` one after the other, taking every response as soon as it is complete.
fn frame(parser: &mut ResponseParser, chunks: &[&[u8]]) -> Result<Vec<Response>, FrameError> {
    let mut out = Vec::new();
    for chunk in chunks {
        parser.feed(chunk);
        while let Some(response) = parser.next()? {
            out.push(response);
        }
    }
    Ok(out)
}

#[test]
fn frames_a_transcript_in_one_piece() {
    let (wire, expected) = transcript();
    let mut parser = ResponseParser::new();
    assert_eq!(frame(&mut parser, &[&wire]).unwrap(), expected);
    assert_eq!(parser.pending(), 0);
}

#[test]
fn frames_the_same_at_every_split_point() {
    let (wire, expected) = transcript();
    for cut in 0..=wire.len() {
        let mut parser = ResponseParser::new();
        let got = frame(&mut parser, &[&wire[..cut], &wire[cut..]]).unwrap();
        assert_eq!(got, expected, "split at {cut}");
        assert_eq!(parser.pending(), 0, "split at {cut}");
    }
}

#[test]
fn frames_the_same_byte_by_byte_and_in_odd_chunks() {
    let (wire, expected) = transcript();
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    let mut parser = ResponseParser::new();
    assert_eq!(frame(&mut parser, &bytes).unwrap(), expected);
    assert_eq!(parser.pending(), 0);

    // Chunk sizes from a small linear congruential generator: arbitrary, but reproducible.
    for seed in 1..=50u32 {
        let mut state = seed;
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let len = 1 + (state >> 16) as usize % 17;
            let end = (at + len).min(wire.len());
            chunks.push(&wire[at..end]);
            at = end;
        }
        let mut parser = ResponseParser::new();
        assert_eq!(
            frame(&mut parser, &chunks).unwrap(),
            expected,
            "seed {seed}"
        );
    }
}

#[test]
fn waits_for_the_whole_literal() {
    let mut parser = ResponseParser::new();
    parser.feed(b"* 1 FETCH (BODY[] {10}\r\n0123456789");
    assert_eq!(parser.next().unwrap(), None, "the closing line is missing");
    parser.feed(b")\r\n");
    let Some(Response::Untagged { literals, .. }) = parser.next().unwrap() else {
        panic!("expected an untagged response");
    };
    assert_eq!(literals, vec![b"0123456789".to_vec()]);
}

#[test]
fn an_overlong_line_is_refused_before_it_ends() {
    let mut parser = ResponseParser::with_limit(100);
    parser.feed(&[b'x'; 100]);
    assert_eq!(parser.next().unwrap(), None, "100 bytes fit the limit");
    parser.feed(b"x");
    assert_eq!(parser.next(), Err(FrameError::TooLong { limit: 100 }));

    // The real limit, fed in chunks as a socket would.
    let mut parser = ResponseParser::new();
    let chunk = vec![b'y'; READ_CHUNK];
    let mut fed = 0;
    let error = loop {
        parser.feed(&chunk);
        fed += chunk.len();
        match parser.next() {
            Ok(None) => assert!(fed <= MAX_RESPONSE, "not refused after {fed} bytes"),
            Ok(Some(response)) => panic!("unexpected {response}"),
            Err(error) => break error,
        }
    };
    assert_eq!(
        error,
        FrameError::TooLong {
            limit: MAX_RESPONSE
        }
    );
    assert_eq!(error.to_string(), "response longer than 1048576 bytes");
    assert!(fed <= MAX_RESPONSE + READ_CHUNK);
}

#[test]
fn an_overlong_literal_is_refused_when_announced() {
    let mut parser = ResponseParser::new();
    parser.feed(b"* 1 FETCH (BODY[] {1048577}\r\n");
    assert_eq!(
        parser.next(),
        Err(FrameError::TooLong {
            limit: MAX_RESPONSE
        })
    );
    let mut parser = ResponseParser::new();
    parser.feed(b"* 1 FETCH (BODY[] {99999999999999999999999}\r\n");
    assert!(matches!(parser.next(), Err(FrameError::TooLong { .. })));

    // The limit counts the whole response: lines and literals together.
    // 20 bytes so far (two lines and the first literal), 7 more announced: 27 > 26.
    let mut parser = ResponseParser::with_limit(26);
    parser.feed(b"* X {5}\r\n12345 {7}\r\n");
    assert_eq!(parser.next(), Err(FrameError::TooLong { limit: 26 }));
    // Exactly 26 bytes in all: accepted.
    let mut parser = ResponseParser::with_limit(26);
    parser.feed(b"* X {5}\r\n12345 {4}\r\n1234\r\n");
    assert!(matches!(parser.next(), Ok(Some(Response::Untagged { .. }))));
}

#[test]
fn refuses_malformed_lines() {
    for bad in [&b"a1\r\n"[..], b"a1 MAYBE done\r\n", b" OK x\r\n", b"*\r\n"] {
        let mut parser = ResponseParser::new();
        parser.feed(bad);
        assert!(
            matches!(parser.next(), Err(FrameError::Malformed(_))),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // `{x}` is no literal: the line is plain text.
    let mut parser = ResponseParser::new();
    parser.feed(b"* OK {x}\r\n");
    assert_eq!(
        parser.next().unwrap(),
        Some(Response::Untagged {
            text: "OK {x}".into(),
            literals: vec![]
        })
    );
}

#[test]
fn commands_quote_or_use_literals() {
    let mut command = Command::new("a1 LOGIN");
    command.arg(b"alice");
    command.arg(br#"p"a\ss"#);
    assert_eq!(command.tag(), "a1");
    assert_eq!(
        command.finish(),
        vec![b"a1 LOGIN \"alice\" \"p\\\"a\\\\ss\"\r\n".to_vec()]
    );

    let mut command = Command::new("a1 LOGIN");
    command.arg("jürgen".as_bytes());
    command.arg(b"two\r\nlines");
    command.arg(b"");
    assert_eq!(
        command.finish(),
        vec![
            b"a1 LOGIN {7}\r\n".to_vec(),
            "jürgen {10}\r\n".as_bytes().to_vec(),
            b"two\r\nlines \"\"\r\n".to_vec(),
        ]
    );
}

#[test]
fn validates_its_arguments() {
    let t = Duration::from_secs(1);
    let new = |user: &str, password: &str, mailbox: &str, header: Option<&str>| {
        ImapProbe::new(
            "127.0.0.1:143",
            user,
            password,
            mailbox,
            header.map(str::to_owned),
            t,
        )
        .err()
        .map(|error| error.to_string())
    };
    assert_eq!(new("alice", "", "INBOX", Some("Subject")), None);
    assert_eq!(new("alice", "pw", "Archive/2024 Q1", None), None);
    assert_eq!(
        new("", "pw", "INBOX", None).as_deref(),
        Some("invalid imap user: empty")
    );
    assert_eq!(
        new("alice", "se\0cret", "INBOX", None).as_deref(),
        Some("invalid imap password: contains NUL")
    );
    assert_eq!(
        new("alice", "pw", "Entwürfe", None).as_deref(),
        Some(
            "invalid imap mailbox: \"Entwürfe\": expected printable ASCII \
             (modified UTF-7 for other names)"
        )
    );
    assert!(new("alice", "pw", "", None).is_some());
    assert!(new("alice", "pw", "INBOX", Some("Sub ject")).is_some());
    assert!(new("alice", "pw", "INBOX", Some("Subject:")).is_some());
    assert!(new("alice", "pw", "INBOX", Some("")).is_some());
    assert!(ImapProbe::new("localhost", "a", "b", "INBOX", None, t).is_err());
}

#[test]
fn reads_status_words() {
    assert!(starts_with_word("OK [CAPABILITY x] ready", "OK"));
    assert!(starts_with_word("ok", "OK"));
    assert!(starts_with_word("BYE Logging out", "BYE"));
    assert!(!starts_with_word("OKAY", "OK"));
    assert!(!starts_with_word("O", "OK"));
    assert!(!starts_with_word("é", "OK"));
}
