//! MySQL packet framing on arbitrary bytes, with the greeting rewrite and the write classifier
//! on the payloads: no panic, and the packets never claim more than the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use relapse_dbproxy::classify::{is_write, Dialect};
use relapse_dbproxy::mysql::{self, PacketDecoder};

fuzz_target!(|data: &[u8]| {
    let mut decoder = PacketDecoder::new();
    let mut pos = 0;
    let mut first = true;
    while let Ok(Some(f)) = decoder.next_frame(&data[pos..]) {
        let payload = f.payload(&data[pos..]);
        assert_eq!(payload.len(), f.payload_len);
        if first {
            let mut greeting = payload.to_vec();
            mysql::clear_ssl_capability(&mut greeting);
            assert_eq!(greeting.len(), payload.len());
            first = false;
        }
        if !f.continuation {
            match payload.first().copied() {
                Some(mysql::COM_QUERY | mysql::COM_STMT_PREPARE) => {
                    is_write(&payload[1..], Dialect::Mysql);
                }
                Some(_) => {
                    mysql::statement_id(payload);
                    mysql::prepare_ok_id(payload);
                }
                None => {}
            }
        }
        pos += f.len();
        assert!(pos <= data.len(), "packets sum past the input");
    }
    is_write(data, Dialect::Mysql);
});
