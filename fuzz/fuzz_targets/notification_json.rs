//! FastNetMon's JSON notification (web callback body, JSON notify-script stdin).
#![no_main]

use fnm_escalator::fastnetmon::notification::parse_json;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let first = parse_json(data);
    common::check_result(&first);
    // Pure: the same bytes give the same answer.
    assert_eq!(first, parse_json(data));
});
