//! PostgreSQL framing on arbitrary bytes, as a client stream and as a server stream, with the
//! write classifier on every body: no panic, and the frames never claim more than the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use relapse_dbproxy::classify::{is_write, Dialect};
use relapse_dbproxy::pg::{self, FrameKind, FrontendDecoder};

fuzz_target!(|data: &[u8]| {
    let mut decoder = FrontendDecoder::new();
    let mut pos = 0;
    while let Ok(Some(f)) = decoder.next_frame(&data[pos..]) {
        assert!(f.len >= f.header_len(), "frame shorter than its header");
        let body = f.body(&data[pos..]);
        match f.kind {
            FrameKind::Message(b'Q') => {
                is_write(pg::query_sql(body), Dialect::Postgres);
            }
            FrameKind::Message(b'P') => {
                is_write(pg::parse_fields(body).1, Dialect::Postgres);
            }
            FrameKind::Message(b'B') => {
                pg::bind_names(body);
            }
            FrameKind::Message(b'C') => {
                pg::close_target(body);
            }
            _ => {}
        }
        pos += f.len;
        assert!(pos <= data.len(), "frames sum past the input");
    }
    let mut pos = 0;
    while let Ok(Some(f)) = pg::next_backend_frame(&data[pos..]) {
        pos += f.len;
        assert!(pos <= data.len(), "frames sum past the input");
    }
    is_write(data, Dialect::Postgres);
});
