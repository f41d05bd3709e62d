//! The InfluxDB line protocol of `/write`: parse, then pick out FastNetMon's samples, then apply
//! every timestamp precision the endpoint accepts.
#![no_main]

use fnm_escalator::fastnetmon::line_protocol::{parse, samples};
use fnm_escalator::sources::influxdb::Precision;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return; // the endpoint answers 400 before parsing anything that is not UTF-8
    };
    let lines = body.split('\n').count();
    let parsed = parse(body);
    for p in &parsed.points {
        assert!((1..=lines).contains(&p.line), "line {} of {lines}", p.line);
        assert!(
            !p.fields.is_empty(),
            "a point without fields on line {}",
            p.line
        );
        assert!(!p.measurement.is_empty());
    }
    for e in &parsed.errors {
        assert!((1..=lines).contains(&e.line));
        assert!(!e.reason.trim().is_empty());
    }
    assert!(parsed.points.len() + parsed.errors.len() <= lines);

    let s = samples(&parsed.points);
    for n in &s.networks {
        assert_eq!(n.network.trunc(), n.network);
    }
    for e in &s.errors {
        assert!(parsed.points.iter().any(|p| p.line == e.line));
        assert!(!e.reason.trim().is_empty());
    }
    assert!(s.hosts.len() + s.networks.len() + s.errors.len() <= parsed.points.len());

    // The `precision` query parameter, taken from the first line so the fuzzer can reach it.
    let first = body.lines().next().unwrap_or("");
    let precision = Precision::parse(Some(first));
    if let Err(e) = &precision {
        assert!(!e.is_empty());
    }
    for precision in [
        Precision::Nanoseconds,
        Precision::Microseconds,
        Precision::Milliseconds,
        Precision::Seconds,
        Precision::Minutes,
        Precision::Hours,
    ] {
        for p in &parsed.points {
            if let Some(ts) = p.timestamp {
                let _ = precision.to_millis(ts);
            }
        }
    }
});
