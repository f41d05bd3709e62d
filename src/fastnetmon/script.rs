//! FastNetMon's notify-script invocation (argv + stdin) turned into a [`Notification`]. Community
//! and Advanced's text format pass `<ip> <direction> <pps> <action>` plus a plain-text report;
//! Advanced's JSON format passes the JSON document on stdin. Our shim forwards both verbatim.

use std::net::IpAddr;

use super::notification::{parse_host_ip, parse_json, snippet};
use super::{Action, Notification, ParseError, Scope, Traffic};

const TEXT_USAGE: &str = "expected `<ip> <direction> <pps> <action>` (text) or JSON on stdin";
const TEXT_ACTIONS: [Action; 3] = [Action::Ban, Action::Unban, Action::AttackDetails];

/// Parses one notify-script invocation. `argv` excludes the program name; `stdin` is everything
/// FastNetMon wrote to the script's standard input.
pub fn parse_invocation(argv: &[String], stdin: &[u8]) -> Result<Notification, ParseError> {
    if looks_like_json(stdin) {
        // Advanced JSON format. argv is empty or the legacy `<action> <ip>`; the document wins.
        return parse_json(stdin);
    }
    let [ip, direction, pps, action] = argv else {
        return Err(argument_count_error(argv, stdin));
    };

    let ip = parse_host_ip(ip).ok_or_else(|| {
        script_error(format!(
            "argument 1 (ip): `{}` is not an IPv4 or IPv6 address",
            snippet(ip)
        ))
    })?;
    let direction = parse_direction(direction)?;
    let pps: u64 = pps.trim().parse().map_err(|_| {
        script_error(format!(
            "argument 3 (pps): `{}` is not a whole number of packets per second",
            snippet(pps)
        ))
    })?;
    let action = Action::parse(action.trim())
        .filter(|a| TEXT_ACTIONS.contains(a))
        .ok_or_else(|| {
            script_error(format!(
                "argument 4 (action): `{}` is not one of ban, unban, attack_details",
                snippet(action)
            ))
        })?;

    let text = String::from_utf8_lossy(stdin);
    let report = Report::parse(&text);
    Ok(build_text(ip, direction, pps, action, report))
}

fn script_error(msg: String) -> ParseError {
    ParseError::Script(msg)
}

/// JSON when the first byte after whitespace (and an optional UTF-8 BOM) is `{`. A text report
/// always starts with `IP:`.
fn looks_like_json(stdin: &[u8]) -> bool {
    let stdin = stdin.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(stdin);
    stdin.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn argument_count_error(argv: &[String], stdin: &[u8]) -> ParseError {
    let args = match argv.len() {
        1 => "1 argument".to_string(),
        n => format!("{n} arguments"),
    };
    let input = if stdin.iter().all(u8::is_ascii_whitespace) {
        "empty stdin".to_string()
    } else {
        format!("{} bytes of non-JSON stdin", stdin.len())
    };
    let hint = match argv {
        [action, _] if Action::parse(action.trim()).is_some() => {
            " (`<action> <ip>` is the legacy argv of the JSON format, but stdin holds no JSON document)"
        }
        _ => "",
    };
    script_error(format!("{TEXT_USAGE}, got {args} and {input}{hint}"))
}

/// FastNetMon prints `incoming`, `outgoing`, `internal`, `other` or `unknown`; anything that is a
/// plain word is kept as is, so that a new direction name does not lose the notification.
fn parse_direction(arg: &str) -> Result<Option<String>, ParseError> {
    let d = arg.trim();
    if d.is_empty() {
        return Ok(None);
    }
    let plain_word = d.len() <= 32
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain_word {
        Ok(Some(d.to_string()))
    } else {
        Err(script_error(format!(
            "argument 2 (direction): `{}` is not a direction (incoming, outgoing, internal, other, unknown)",
            snippet(arg)
        )))
    }
}

/// What we take from the text report. Only the first occurrence of each line counts: the
/// report header comes before any packet or flow dump.
#[derive(Debug, Default)]
struct Report {
    /// At least one line of a FastNetMon report was seen.
    recognised: bool,
    manual: bool,
    attack_type: Option<String>,
    protocol: Option<String>,
    direction: Option<String>,
    in_bps: Option<u64>,
    out_bps: Option<u64>,
    in_pps: Option<u64>,
    out_pps: Option<u64>,
}

impl Report {
    fn parse(text: &str) -> Report {
        let mut r = Report::default();
        for line in text.lines() {
            let line = line.trim();
            if line.eq_ignore_ascii_case("manually triggered attack") {
                r.manual = true;
                r.recognised = true;
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let key = key.trim();
            let value = value.trim();
            let is = |name: &str| key.eq_ignore_ascii_case(name);
            if is("IP") || is("Initial attack power") || is("Peak attack power") {
                r.recognised = true;
            } else if is("Attack type") {
                set_once(&mut r.attack_type, word(value), &mut r.recognised);
            } else if is("Attack protocol") {
                set_once(&mut r.protocol, word(value), &mut r.recognised);
            } else if is("Attack direction") {
                set_once(&mut r.direction, word(value), &mut r.recognised);
            } else if is("Total incoming traffic") {
                set_once(&mut r.in_bps, bits_per_second(value), &mut r.recognised);
            } else if is("Total outgoing traffic") {
                set_once(&mut r.out_bps, bits_per_second(value), &mut r.recognised);
            } else if is("Total incoming pps") {
                set_once(&mut r.in_pps, leading_integer(value), &mut r.recognised);
            } else if is("Total outgoing pps") {
                set_once(&mut r.out_pps, leading_integer(value), &mut r.recognised);
            }
        }
        r
    }

    fn has_traffic(&self) -> bool {
        self.in_bps.is_some()
            || self.out_bps.is_some()
            || self.in_pps.is_some()
            || self.out_pps.is_some()
    }
}

fn set_once<T>(slot: &mut Option<T>, value: Option<T>, recognised: &mut bool) {
    if slot.is_none() {
        if let Some(v) = value {
            *slot = Some(v);
            *recognised = true;
        }
    }
}

/// A report value such as `udp_flood`: non-empty, kept verbatim (bounded length).
fn word(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.chars().take(64).collect())
}

/// `3625 packets per second` -> 3625.
fn leading_integer(value: &str) -> Option<u64> {
    value.split_whitespace().next()?.parse().ok()
}

/// `29 mbps` -> 29_000_000 bits/s. FastNetMon prints whole Mbit/s; a fraction, another unit
/// prefix or a missing unit (taken as mbps) are accepted too.
fn bits_per_second(value: &str) -> Option<u64> {
    let mut parts = value.split_whitespace();
    let number = parts.next()?;
    let unit = parts.next().unwrap_or("mbps");
    let scale: u64 = if unit.eq_ignore_ascii_case("bps") {
        1
    } else if unit.eq_ignore_ascii_case("kbps") {
        1_000
    } else if unit.eq_ignore_ascii_case("mbps") {
        1_000_000
    } else if unit.eq_ignore_ascii_case("gbps") {
        1_000_000_000
    } else {
        return None;
    };
    if let Ok(whole) = number.parse::<u64>() {
        return Some(whole.saturating_mul(scale));
    }
    let x: f64 = number.parse().ok()?;
    // `as` saturates; NaN is rejected by the comparison.
    (x.is_finite() && x >= 0.0).then(|| (x * scale as f64).round() as u64)
}

fn build_text(
    ip: IpAddr,
    argv_direction: Option<String>,
    pps: u64,
    action: Action,
    report: Report,
) -> Notification {
    let traffic = if report.has_traffic() {
        Some(Traffic {
            in_bps: report.in_bps.unwrap_or(0),
            out_bps: report.out_bps.unwrap_or(0),
            in_pps: report.in_pps.unwrap_or(0),
            out_pps: report.out_pps.unwrap_or(0),
        })
    } else if pps == 0 {
        None
    } else if argv_direction.as_deref() == Some("outgoing") {
        Some(Traffic {
            out_pps: pps,
            ..Traffic::default()
        })
    } else {
        // incoming, and the rarer internal/other/unknown: the attack power is what was seen
        // towards the host.
        Some(Traffic {
            in_pps: pps,
            ..Traffic::default()
        })
    };
    let detection_source = if report.manual {
        Some("manual".to_string())
    } else if report.recognised {
        Some("automatic".to_string())
    } else {
        None
    };
    Notification {
        action,
        scope: Scope::Host { ip },
        attack_uuid: None,
        direction: argv_direction.or(report.direction),
        attack_type: report.attack_type,
        protocol: report.protocol,
        severity: None,
        detection_source,
        traffic,
        flow_spec_rules: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixtures_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    /// argv (one argument per line) and stdin of a captured Community 1.2.4 invocation.
    fn capture(case: &str) -> (Vec<String>, Vec<u8>) {
        let dir = fixtures_dir().join("community-1.2.4");
        let argv = std::fs::read_to_string(dir.join(format!("{case}.argv"))).unwrap();
        let stdin = std::fs::read(dir.join(format!("{case}.stdin"))).unwrap();
        (argv.lines().map(str::to_string).collect(), stdin)
    }

    fn advanced(name: &str) -> Vec<u8> {
        std::fs::read(fixtures_dir().join("advanced").join(name)).unwrap()
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn host(ip: &str) -> Scope {
        Scope::Host {
            ip: ip.parse().unwrap(),
        }
    }

    fn script_err(r: Result<Notification, ParseError>) -> String {
        match r {
            Err(ParseError::Script(msg)) => msg,
            other => panic!("expected a script error, got {other:?}"),
        }
    }

    #[test]
    fn community_auto_ban() {
        let (argv, stdin) = capture("auto_ban");
        let n = parse_invocation(&argv, &stdin).unwrap();
        assert_eq!(
            n,
            Notification {
                action: Action::Ban,
                scope: host("10.10.10.5"),
                attack_uuid: None,
                direction: Some("incoming".into()),
                attack_type: Some("udp_flood".into()),
                protocol: Some("udp".into()),
                severity: None,
                detection_source: Some("automatic".into()),
                traffic: Some(Traffic {
                    in_bps: 29_000_000,
                    out_bps: 0,
                    in_pps: 3625,
                    out_pps: 0,
                }),
                flow_spec_rules: vec![],
            }
        );
    }

    #[test]
    fn community_auto_attack_details() {
        let (argv, stdin) = capture("auto_attack_details");
        let n = parse_invocation(&argv, &stdin).unwrap();
        assert_eq!(n.action, Action::AttackDetails);
        assert_eq!(n.scope, host("10.10.10.5"));
        assert_eq!(n.attack_type.as_deref(), Some("udp_flood"));
        assert_eq!(n.detection_source.as_deref(), Some("automatic"));
        assert_eq!(
            n.traffic,
            Some(Traffic {
                in_bps: 29_000_000,
                out_bps: 0,
                in_pps: 3625,
                out_pps: 0,
            })
        );
    }

    #[test]
    fn community_auto_unban() {
        let (argv, stdin) = capture("auto_unban");
        assert!(stdin.is_empty());
        let n = parse_invocation(&argv, &stdin).unwrap();
        assert_eq!(n.action, Action::Unban);
        assert_eq!(n.scope, host("10.10.10.5"));
        assert_eq!(n.direction.as_deref(), Some("incoming"));
        assert_eq!(n.detection_source, None);
        assert_eq!(n.attack_type, None);
        // No report: the argv attack power is all we have.
        assert_eq!(
            n.traffic,
            Some(Traffic {
                in_pps: 3625,
                ..Traffic::default()
            })
        );
    }

    #[test]
    fn community_manual_api_ban_and_unban() {
        let (argv, stdin) = capture("manual_api_ban");
        let n = parse_invocation(&argv, &stdin).unwrap();
        assert_eq!(n.action, Action::Ban);
        assert_eq!(n.scope, host("10.10.10.7"));
        assert_eq!(n.direction.as_deref(), Some("other"));
        assert_eq!(n.detection_source.as_deref(), Some("manual"));
        assert_eq!(n.attack_type.as_deref(), Some("unknown"));
        assert_eq!(n.protocol.as_deref(), Some("unknown"));
        assert_eq!(n.traffic, Some(Traffic::default()));

        let (argv, stdin) = capture("manual_api_unban");
        let n = parse_invocation(&argv, &stdin).unwrap();
        assert_eq!(n.action, Action::Unban);
        assert_eq!(n.scope, host("10.10.10.7"));
        assert_eq!(n.direction.as_deref(), Some("other"));
        assert_eq!(n.traffic, None);
        assert_eq!(n.detection_source, None);
    }

    #[test]
    fn ipv6_ip_comes_from_argv_not_report() {
        let (_, stdin) = capture("auto_ban");
        let stdin = String::from_utf8(stdin)
            .unwrap()
            .replace("IP: 10.10.10.5", "IP: 0.0.0.0");
        let argv = args(&["2001:db8::5", "incoming", "3625", "ban"]);
        let n = parse_invocation(&argv, stdin.as_bytes()).unwrap();
        assert_eq!(n.scope, host("2001:db8::5"));
        assert_eq!(n.traffic.map(|t| t.in_bps), Some(29_000_000));
    }

    #[test]
    fn argv_direction_wins_over_report() {
        let (_, stdin) = capture("auto_ban");
        let argv = args(&["10.10.10.5", "outgoing", "3625", "ban"]);
        let n = parse_invocation(&argv, &stdin).unwrap();
        assert_eq!(n.direction.as_deref(), Some("outgoing"));
        // Empty argv direction: the report's is used.
        let argv = args(&["10.10.10.5", "", "3625", "ban"]);
        let n = parse_invocation(&argv, &stdin).unwrap();
        assert_eq!(n.direction.as_deref(), Some("incoming"));
    }

    #[test]
    fn outgoing_pps_without_report() {
        let argv = args(&["10.10.10.5", "outgoing", "42", "unban"]);
        let n = parse_invocation(&argv, b"").unwrap();
        assert_eq!(
            n.traffic,
            Some(Traffic {
                out_pps: 42,
                ..Traffic::default()
            })
        );
    }

    #[test]
    fn report_with_dump_sections_1_2_6() {
        // 1.2.6+: report, then "Attack traffic dump" and "Flow dump" sections; CRLF, trailing
        // spaces and a stray non-UTF-8 byte on top.
        let (_, report) = capture("auto_ban");
        let report = String::from_utf8(report).unwrap();
        let head = report.split("\nIncoming\n").next().unwrap();
        let mut stdin = head.replace('\n', "  \r\n").into_bytes();
        stdin.extend_from_slice(b"\r\n\r\nAttack traffic dump\r\n\r\n");
        stdin.extend_from_slice(b"2026-11-25 12:19:29.000000 192.0.2.1:12345 > 10.10.10.5:53 protocol: udp \xff\xfe\r\n");
        stdin.extend_from_slice(b"Total incoming traffic: 999 mbps\r\n");
        stdin.extend_from_slice(b"\r\n\r\nFlow dump\r\n\r\n10.10.10.5:53 < 192.0.2.1:12345 10000000 bytes 10000 packets\r\n");
        let argv = args(&["10.10.10.5", "incoming", "3625", "ban"]);
        let n = parse_invocation(&argv, &stdin).unwrap();
        assert_eq!(n.attack_type.as_deref(), Some("udp_flood"));
        assert_eq!(n.protocol.as_deref(), Some("udp"));
        assert_eq!(n.detection_source.as_deref(), Some("automatic"));
        assert_eq!(
            n.traffic,
            Some(Traffic {
                in_bps: 29_000_000,
                out_bps: 0,
                in_pps: 3625,
                out_pps: 0,
            })
        );
    }

    #[test]
    fn manual_marker_after_flow_dump_header() {
        let stdin =
            b"IP: 10.10.10.7\nAttack type: unknown\n\n\nFlow dump\n\nmanually triggered attack";
        let argv = args(&["10.10.10.7", "other", "0", "ban"]);
        let n = parse_invocation(&argv, stdin).unwrap();
        assert_eq!(n.detection_source.as_deref(), Some("manual"));
        assert_eq!(n.traffic, None);
    }

    #[test]
    fn very_long_stdin() {
        let (argv, stdin) = capture("auto_ban");
        let mut big = stdin.clone();
        let dump_line = b"2026-11-25 12:19:29.000000 192.0.2.1:12345 > 10.10.10.5:53 protocol: udp frag: 0  packets: 5000 size: 5000000 bytes ttl: 0 sample ratio: 1\n";
        while big.len() < 8 << 20 {
            big.extend_from_slice(dump_line);
        }
        big.extend(std::iter::repeat_n(b'x', 1 << 20)); // one 1 MiB line, no newline
        let n = parse_invocation(&argv, &big).unwrap();
        assert_eq!(n.traffic.map(|t| t.in_pps), Some(3625));
    }

    #[test]
    fn unknown_report_falls_back_to_argv_pps() {
        let argv = args(&["10.10.10.5", "incoming", "3625", "ban"]);
        for stdin in [
            &b"something else entirely\n"[..],
            b"\x00\x01\x02\xff\xfe\xfd garbage \x80\x81",
        ] {
            let n = parse_invocation(&argv, stdin).unwrap();
            assert_eq!(
                n.traffic,
                Some(Traffic {
                    in_pps: 3625,
                    ..Traffic::default()
                })
            );
            assert_eq!(n.detection_source, None);
        }
    }

    #[test]
    fn traffic_value_forms() {
        assert_eq!(bits_per_second("29 mbps"), Some(29_000_000));
        assert_eq!(bits_per_second("0 mbps"), Some(0));
        assert_eq!(bits_per_second("1.5 mbps"), Some(1_500_000));
        assert_eq!(bits_per_second("2 gbps"), Some(2_000_000_000));
        assert_eq!(bits_per_second("7"), Some(7_000_000));
        assert_eq!(bits_per_second("99999999999999999 mbps"), Some(u64::MAX));
        assert_eq!(bits_per_second("-1 mbps"), None);
        assert_eq!(bits_per_second("NaN mbps"), None);
        assert_eq!(bits_per_second("1e400 mbps"), None);
        assert_eq!(bits_per_second("12 furlongs"), None);
        assert_eq!(bits_per_second(""), None);
        assert_eq!(leading_integer("3625 packets per second"), Some(3625));
        assert_eq!(leading_integer("lots"), None);
    }

    #[test]
    fn advanced_json_without_argv() {
        let n = parse_invocation(&[], &advanced("ban_host.json")).unwrap();
        assert_eq!(n.action, Action::Ban);
        assert_eq!(n.scope, host("10.154.0.2"));
        assert_eq!(n.traffic.map(|t| t.in_bps), Some(7_036_735 * 8));
        // Hostgroup scripts never get argv.
        let n = parse_invocation(&[], &advanced("ban_hostgroup.json")).unwrap();
        assert!(matches!(n.scope, Scope::Hostgroup { .. }));
        let n = parse_invocation(&[], &advanced("partial_unblock.json")).unwrap();
        assert_eq!(n.action, Action::PartialUnblock);
    }

    #[test]
    fn advanced_json_with_legacy_argv() {
        let argv = args(&["ban", "10.154.0.2"]);
        let mut stdin = b"\n  ".to_vec();
        stdin.extend(advanced("ban_host.json"));
        let n = parse_invocation(&argv, &stdin).unwrap();
        assert_eq!(
            n,
            parse_invocation(&[], &advanced("ban_host.json")).unwrap()
        );
        // The document wins over a contradicting argv.
        let argv = args(&["unban", "192.0.2.99"]);
        let n = parse_invocation(&argv, &advanced("ban_host.json")).unwrap();
        assert_eq!(n.action, Action::Ban);
        assert_eq!(n.scope, host("10.154.0.2"));
    }

    #[test]
    fn json_errors_pass_through() {
        assert!(matches!(
            parse_invocation(&[], b"{\"ip\":"),
            Err(ParseError::Syntax(_))
        ));
        assert!(matches!(
            parse_invocation(&[], b"{\"ip\":\"10.0.0.1\",\"action\":\"nuke\"}"),
            Err(ParseError::Field { field, .. }) if field == "action"
        ));
    }

    #[test]
    fn argument_count_errors() {
        let msg = script_err(parse_invocation(&[], b""));
        assert_eq!(
            msg,
            "expected `<ip> <direction> <pps> <action>` (text) or JSON on stdin, got 0 arguments and empty stdin"
        );
        let msg = script_err(parse_invocation(&args(&["ban", "10.0.0.1"]), b""));
        assert!(msg.starts_with("expected `<ip> <direction> <pps> <action>` (text) or JSON on stdin, got 2 arguments and empty stdin"), "{msg}");
        assert!(msg.contains("legacy"), "{msg}");
        let msg = script_err(parse_invocation(
            &args(&["10.0.0.1", "incoming", "5"]),
            b"IP: 10.0.0.1\n",
        ));
        assert!(
            msg.contains("got 3 arguments and 13 bytes of non-JSON stdin"),
            "{msg}"
        );
        let msg = script_err(parse_invocation(&args(&["x"]), b" \n"));
        assert!(msg.contains("got 1 argument and empty stdin"), "{msg}");
        let five = args(&["10.0.0.1", "incoming", "5", "ban", "extra"]);
        assert!(script_err(parse_invocation(&five, b"")).contains("got 5 arguments"));
    }

    #[test]
    fn hostile_invocations_are_errors() {
        let cases: [(Vec<String>, &[u8], &str); 12] = [
            (
                args(&["10.0.0.300", "incoming", "5", "ban"]),
                b"",
                "argument 1 (ip)",
            ),
            (
                args(&["10.0.0.0/24", "incoming", "5", "ban"]),
                b"",
                "argument 1 (ip)",
            ),
            (args(&["", "incoming", "5", "ban"]), b"", "argument 1 (ip)"),
            (
                args(&["10.0.0.1", "in coming;rm", "5", "ban"]),
                b"",
                "argument 2 (direction)",
            ),
            (
                args(&["10.0.0.1", "incoming", "-5", "ban"]),
                b"",
                "argument 3 (pps)",
            ),
            (
                args(&["10.0.0.1", "incoming", "5.5", "ban"]),
                b"",
                "argument 3 (pps)",
            ),
            (
                args(&["10.0.0.1", "incoming", "99999999999999999999999", "ban"]),
                b"",
                "argument 3 (pps)",
            ),
            (
                args(&["10.0.0.1", "incoming", "5", "nuke"]),
                b"",
                "argument 4 (action)",
            ),
            (
                args(&["10.0.0.1", "incoming", "5", "partial_block"]),
                b"",
                "argument 4 (action)",
            ),
            (
                args(&["ban", "10.0.0.1", "incoming", "5"]),
                b"",
                "argument 1 (ip)",
            ),
            (
                vec![],
                b"\x00\x01\xff\xfe garbage",
                "got 0 arguments and 12 bytes of non-JSON stdin",
            ),
            (vec![], b"\xff\xfe\xfd", "non-JSON stdin"),
        ];
        for (argv, stdin, want) in cases {
            let msg = script_err(parse_invocation(&argv, stdin));
            assert!(msg.contains(want), "{argv:?}: {msg}");
        }
        // Garbage that starts like JSON is a JSON error.
        assert!(matches!(
            parse_invocation(&[], b"{\xff\xfe\x00"),
            Err(ParseError::Syntax(_))
        ));
        // A huge argument is not echoed in full.
        let long = "9".repeat(100_000);
        let msg = script_err(parse_invocation(
            &args(&[&long, "incoming", "5", "ban"]),
            b"",
        ));
        assert!(msg.len() < 300, "{}", msg.len());
    }

    #[test]
    fn never_panics_on_mangled_reports() {
        let (argv, stdin) = capture("auto_attack_details");
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for cut in 0..stdin.len() {
            let _ = parse_invocation(&argv, &stdin[..cut]);
        }
        for _ in 0..2000 {
            let mut s = stdin.clone();
            for _ in 0..8 {
                let i = (next() as usize) % s.len();
                s[i] = (next() & 0xff) as u8;
            }
            let _ = parse_invocation(&argv, &s);
            let _ = parse_invocation(&[], &s);
        }
    }
}
