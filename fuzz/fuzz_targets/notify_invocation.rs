//! The notify command's argv + stdin (Community text convention and Advanced JSON on stdin).
#![no_main]

use arbitrary::Arbitrary;
use fnm_escalator::fastnetmon::notification::parse_json;
use fnm_escalator::fastnetmon::script::parse_invocation;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

#[derive(Debug, Arbitrary)]
struct Invocation {
    argv: Vec<String>,
    stdin: Vec<u8>,
}

fuzz_target!(|inv: Invocation| {
    let r = parse_invocation(&inv.argv, &inv.stdin);
    common::check_result(&r);

    // JSON on stdin is handed to the JSON parser unchanged, whatever argv says.
    let body = inv
        .stdin
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(&inv.stdin);
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        assert_eq!(r, parse_json(&inv.stdin));
    } else if inv.argv.len() != 4 {
        assert!(r.is_err(), "accepted {} arguments of text", inv.argv.len());
    }
});
