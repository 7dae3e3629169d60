//! The scenario parser on arbitrary input: it must return a scenario or an error with a place in
//! the file, and never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use relapse_core::scenario::{parse, ScenarioError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(std::path::Path::new("fuzz.toml"), text) {
        Ok(_) => {}
        Err(ScenarioError::Invalid { line, column, .. }) => {
            // The place must exist in the text (a line past the end is allowed only for errors
            // at the end of the input).
            assert!(line >= 1 && column >= 1);
            assert!(line <= text.lines().count() + 1, "line {line} beyond the input");
        }
        Err(ScenarioError::Read { .. }) => unreachable!("parse reads no file"),
    }
});
