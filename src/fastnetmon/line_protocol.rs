//! InfluxDB line protocol, as FastNetMon's InfluxDB export POSTs it to `/write`: the only place
//! Community publishes live per-host counters. A small single-pass parser (no regex, no
//! recursion); a bad line is reported with its number and never stops the others.

use std::net::IpAddr;

use ipnet::IpNet;

use super::notification::{parse_host_ip, parse_network, snippet};
use super::Traffic;

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// 1-based line number in the body.
    pub line: usize,
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    /// At least one; in line order (a repeated key: the last one counts, see [`Point::field`]).
    pub fields: Vec<(String, FieldValue)>,
    /// As sent (nanoseconds for FastNetMon; the `precision` query parameter is not applied here).
    pub timestamp: Option<i64>,
}

impl Point {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn field(&self, key: &str) -> Option<&FieldValue> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Integer(i64),
    UInteger(u64),
    Boolean(bool),
    String(String),
}

/// Why one line (or one point) was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number in the body.
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub points: Vec<Point>,
    pub errors: Vec<LineError>,
}

/// Parses a whole `/write` body. Blank lines and `#` comments are skipped; CRLF is accepted.
pub fn parse(body: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for (index, raw) in body.split('\n').enumerate() {
        let line_no = index + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let line = line.trim_start_matches([' ', '\t']);
        if line.trim_end_matches([' ', '\t']).is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line.as_bytes(), line_no) {
            Ok(point) => parsed.points.push(point),
            Err(reason) => parsed.errors.push(LineError {
                line: line_no,
                reason,
            }),
        }
    }
    parsed
}

/// Byte cursor over one line. Every delimiter is ASCII, so stopping on one never splits a UTF-8
/// sequence, and copying the bytes in between keeps them valid UTF-8.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn skip_spaces(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// An identifier (measurement, tag key/value, field key) up to an unescaped byte in `stop`.
    /// A backslash protects the next byte from ending the token; it is removed only before a
    /// byte in `unescape` (InfluxDB keeps other backslashes literally).
    fn identifier(&mut self, stop: &[u8], unescape: &[u8]) -> Result<String, String> {
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            if b == b'\\' {
                match self.bytes.get(self.pos + 1).copied() {
                    Some(next) if unescape.contains(&next) => {
                        out.push(next);
                        self.pos += 2;
                    }
                    Some(next) => {
                        out.push(b'\\');
                        out.push(next);
                        self.pos += 2;
                    }
                    None => {
                        out.push(b'\\');
                        self.pos += 1;
                    }
                }
            } else if stop.contains(&b) {
                break;
            } else {
                out.push(b);
                self.pos += 1;
            }
        }
        String::from_utf8(out).map_err(|_| "invalid UTF-8".to_string())
    }

    /// A double-quoted string field value; the cursor is on the opening quote.
    fn quoted(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err("unterminated string field value".into()),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => match self.bytes.get(self.pos + 1).copied() {
                    Some(next @ (b'"' | b'\\')) => {
                        out.push(next);
                        self.pos += 2;
                    }
                    _ => {
                        out.push(b'\\');
                        self.pos += 1;
                    }
                },
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| "invalid UTF-8".to_string())
    }

    /// An unquoted token up to `,`, space or tab.
    fn bare_token(&mut self) -> &str {
        let start = self.pos;
        while !matches!(self.peek(), None | Some(b',' | b' ' | b'\t')) {
            self.pos += 1;
        }
        // `start..pos` is bounded by ASCII delimiters or the end: valid UTF-8.
        self.bytes
            .get(start..self.pos)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

fn parse_line(bytes: &[u8], line: usize) -> Result<Point, String> {
    let mut c = Cursor { bytes, pos: 0 };

    let measurement = c.identifier(b", \t", b", ")?;
    if measurement.is_empty() {
        return Err("missing measurement".into());
    }

    let mut tags = Vec::new();
    while c.peek() == Some(b',') {
        c.pos += 1;
        let key = c.identifier(b",= \t", b",= ")?;
        if key.is_empty() {
            return Err("empty tag key".into());
        }
        if c.peek() != Some(b'=') {
            return Err(format!("tag `{}` has no `=value`", snippet(&key)));
        }
        c.pos += 1;
        let value = c.identifier(b", \t", b",= ")?;
        if value.is_empty() {
            return Err(format!("tag `{}` has an empty value", snippet(&key)));
        }
        tags.push((key, value));
    }

    if c.skip_spaces() == 0 || c.at_end() {
        return Err("missing fields".into());
    }

    let mut fields = Vec::new();
    loop {
        let key = c.identifier(b",= \t", b",= ")?;
        if key.is_empty() {
            return Err("empty field key".into());
        }
        if c.peek() != Some(b'=') {
            return Err(format!("field `{}` has no `=value`", snippet(&key)));
        }
        c.pos += 1;
        let value = if c.peek() == Some(b'"') {
            FieldValue::String(c.quoted()?)
        } else {
            field_value(c.bare_token())
                .map_err(|reason| format!("field `{}`: {reason}", snippet(&key)))?
        };
        let next = c.peek();
        if !matches!(next, None | Some(b',' | b' ' | b'\t')) {
            return Err(format!(
                "field `{}`: unexpected characters after the value",
                snippet(&key)
            ));
        }
        fields.push((key, value));
        if next == Some(b',') {
            c.pos += 1;
        } else {
            break;
        }
    }

    c.skip_spaces();
    let timestamp = if c.at_end() {
        None
    } else {
        let token = c.bare_token().to_string();
        let ts: i64 = token
            .parse()
            .map_err(|_| format!("timestamp `{}` is not an integer", snippet(&token)))?;
        c.skip_spaces();
        if !c.at_end() {
            return Err("unexpected characters after the timestamp".into());
        }
        Some(ts)
    };

    Ok(Point {
        line,
        measurement,
        tags,
        fields,
        timestamp,
    })
}

fn field_value(token: &str) -> Result<FieldValue, String> {
    if token.is_empty() {
        return Err("empty value".into());
    }
    match token {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(FieldValue::Boolean(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(FieldValue::Boolean(false)),
        _ => {}
    }
    if let Some(digits) = token.strip_suffix('i') {
        return digits
            .parse()
            .map(FieldValue::Integer)
            .map_err(|_| format!("`{}` is not a 64-bit integer", snippet(token)));
    }
    if let Some(digits) = token.strip_suffix('u') {
        return digits
            .parse()
            .map(FieldValue::UInteger)
            .map_err(|_| format!("`{}` is not a 64-bit unsigned integer", snippet(token)));
    }
    // Rust's float syntax also accepts "inf"/"NaN"; InfluxDB does not.
    let starts_like_number = token
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.'));
    match token.parse::<f64>() {
        Ok(x) if starts_like_number && x.is_finite() => Ok(FieldValue::Float(x)),
        _ => Err(format!(
            "`{}` is not a number, boolean or quoted string",
            snippet(token)
        )),
    }
}

/// Current rates of one host (`hosts_traffic`, `hosts_ipv6_traffic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSample {
    pub ip: IpAddr,
    pub traffic: Traffic,
    pub timestamp_ns: Option<i64>,
}

/// Current rates of one `networks_list` prefix (`networks_traffic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSample {
    pub network: IpNet,
    pub traffic: Traffic,
    pub timestamp_ns: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Samples {
    pub hosts: Vec<HostSample>,
    pub networks: Vec<NetworkSample>,
    /// Points of a known measurement that could not be used (bad tag, negative counter, ...).
    pub errors: Vec<LineError>,
}

/// Picks FastNetMon's per-host and per-network counters out of parsed points. Other
/// measurements (`total_traffic`, `system_counters`, ...) are ignored. A missing counter is 0
/// (FastNetMon skips all-zero hosts entirely).
pub fn samples(points: &[Point]) -> Samples {
    let mut out = Samples::default();
    for point in points {
        let result = match point.measurement.as_str() {
            "hosts_traffic" | "hosts_ipv6_traffic" => host_sample(point).map(|s| out.hosts.push(s)),
            "networks_traffic" => network_sample(point).map(|s| out.networks.push(s)),
            _ => Ok(()),
        };
        if let Err(reason) = result {
            out.errors.push(LineError {
                line: point.line,
                reason: format!("{}: {reason}", point.measurement),
            });
        }
    }
    out
}

fn host_sample(point: &Point) -> Result<HostSample, String> {
    let text = point.tag("host").ok_or("missing tag `host`")?;
    let ip = parse_host_ip(text)
        .ok_or_else(|| format!("tag host=`{}` is not an IP address", snippet(text)))?;
    Ok(HostSample {
        ip,
        traffic: traffic(point)?,
        timestamp_ns: point.timestamp,
    })
}

fn network_sample(point: &Point) -> Result<NetworkSample, String> {
    let text = point.tag("network").ok_or("missing tag `network`")?;
    let network = parse_network(text)
        .ok_or_else(|| format!("tag network=`{}` is not a network prefix", snippet(text)))?;
    Ok(NetworkSample {
        network,
        traffic: traffic(point)?,
        timestamp_ns: point.timestamp,
    })
}

fn traffic(point: &Point) -> Result<Traffic, String> {
    let rate = |key: &str| -> Result<u64, String> {
        match point.field(key) {
            None => Ok(0),
            Some(FieldValue::UInteger(v)) => Ok(*v),
            Some(FieldValue::Integer(v)) => {
                u64::try_from(*v).map_err(|_| format!("field `{key}` is negative ({v})"))
            }
            // `as` saturates at u64::MAX; parse() already rejected NaN and infinities.
            Some(FieldValue::Float(v)) if *v >= 0.0 => Ok(v.round() as u64),
            Some(FieldValue::Float(v)) => Err(format!("field `{key}` is negative ({v})")),
            Some(FieldValue::Boolean(_) | FieldValue::String(_)) => {
                Err(format!("field `{key}` is not a number"))
            }
        }
    };
    Ok(Traffic {
        in_bps: rate("bits_incoming")?,
        out_bps: rate("bits_outgoing")?,
        in_pps: rate("packets_incoming")?,
        out_pps: rate("packets_outgoing")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn sample_body() -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/community-1.2.4/influxdb_write_sample.txt");
        std::fs::read_to_string(path).unwrap()
    }

    fn one(line: &str) -> Point {
        let parsed = parse(line);
        assert!(parsed.errors.is_empty(), "{line}: {:?}", parsed.errors);
        assert_eq!(parsed.points.len(), 1, "{line}");
        parsed.points.into_iter().next().unwrap()
    }

    fn bad(line: &str) -> String {
        let parsed = parse(line);
        assert!(parsed.points.is_empty(), "{line}: {:?}", parsed.points);
        assert_eq!(parsed.errors.len(), 1, "{line}");
        parsed.errors[0].reason.clone()
    }

    #[test]
    fn fastnetmon_sample() {
        let parsed = parse(&sample_body());
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(parsed.points.len(), 5);
        let first = &parsed.points[0];
        assert_eq!(first.line, 1);
        assert_eq!(first.measurement, "hosts_traffic");
        assert_eq!(first.tag("host"), Some("10.10.10.5"));
        assert_eq!(
            first.field("bits_incoming"),
            Some(&FieldValue::Float(29003072.0))
        );
        assert_eq!(first.fields.len(), 6);
        assert_eq!(first.timestamp, Some(1795609169000000000));

        let s = samples(&parsed.points);
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        let ip: IpAddr = "10.10.10.5".parse().unwrap();
        let expected = [
            (29003072, 3625, 1795609169000000000),
            (52748784, 6593, 1795609170000000000),
            (72190128, 9023, 1795609171000000000),
        ];
        assert_eq!(s.hosts.len(), 3);
        for (host, (bps, pps, ts)) in s.hosts.iter().zip(expected) {
            assert_eq!(
                host,
                &HostSample {
                    ip,
                    traffic: Traffic {
                        in_bps: bps,
                        out_bps: 0,
                        in_pps: pps,
                        out_pps: 0
                    },
                    timestamp_ns: Some(ts),
                }
            );
        }
        assert_eq!(
            s.networks,
            vec![NetworkSample {
                network: "10.10.10.0/24".parse().unwrap(),
                traffic: Traffic {
                    in_bps: 29003072,
                    out_bps: 0,
                    in_pps: 3625,
                    out_pps: 0
                },
                timestamp_ns: Some(1795609169000000000),
            }]
        );
    }

    #[test]
    fn crlf_comments_and_blank_lines() {
        let body = "# comment\r\n\r\n   \r\nhosts_traffic,host=10.0.0.1 bits_incoming=8i 5\r\n  # indented comment\n\nm f=1";
        let parsed = parse(body);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(parsed.points.len(), 2);
        assert_eq!(parsed.points[0].line, 4);
        assert_eq!(parsed.points[0].timestamp, Some(5));
        assert_eq!(parsed.points[1].line, 7);
        assert_eq!(parsed.points[1].timestamp, None);
    }

    #[test]
    fn escapes() {
        let p = one(
            r#"my\ meas\,ure,tag\ key\,x\=y=va\ l\,u\=e f\=i\ e\,ld="a \"quoted\" \\ str, with = spaces" 1"#,
        );
        assert_eq!(p.measurement, "my meas,ure");
        assert_eq!(p.tags, vec![("tag key,x=y".into(), "va l,u=e".into())]);
        assert_eq!(
            p.fields,
            vec![(
                "f=i e,ld".into(),
                FieldValue::String(r#"a "quoted" \ str, with = spaces"#.into())
            )]
        );
        assert_eq!(p.timestamp, Some(1));
        // Other backslashes are literal.
        let p = one(r#"m\x,t=a\b f="c\d\n""#);
        assert_eq!(p.measurement, r"m\x");
        assert_eq!(p.tag("t"), Some(r"a\b"));
        assert_eq!(p.fields[0].1, FieldValue::String(r"c\d\n".into()));
        // `=` in a measurement needs no escape.
        assert_eq!(one("a=b f=1").measurement, "a=b");
        // Non-ASCII passes through.
        let p = one("m,hôst=ü\\ ö f=\"ñ\"");
        assert_eq!(p.tag("hôst"), Some("ü ö"));
    }

    #[test]
    fn field_types() {
        let p = one(
            r#"m a=1.5,b=-2i,c=3u,d=t,e=FALSE,f="s",g=1e3,h=-0.5,i=9223372036854775807i,j=18446744073709551615u,k=True,l=.5"#,
        );
        let want = [
            ("a", FieldValue::Float(1.5)),
            ("b", FieldValue::Integer(-2)),
            ("c", FieldValue::UInteger(3)),
            ("d", FieldValue::Boolean(true)),
            ("e", FieldValue::Boolean(false)),
            ("f", FieldValue::String("s".into())),
            ("g", FieldValue::Float(1000.0)),
            ("h", FieldValue::Float(-0.5)),
            ("i", FieldValue::Integer(i64::MAX)),
            ("j", FieldValue::UInteger(u64::MAX)),
            ("k", FieldValue::Boolean(true)),
            ("l", FieldValue::Float(0.5)),
        ];
        assert_eq!(p.fields.len(), want.len());
        for (key, value) in want {
            assert_eq!(p.field(key), Some(&value), "{key}");
        }
        assert_eq!(
            one(r#"m s="""#).field("s"),
            Some(&FieldValue::String(String::new()))
        );
        assert_eq!(one("m x=1,x=2").field("x"), Some(&FieldValue::Float(2.0)));
        assert_eq!(one("m x=1 -5").timestamp, Some(-5));
    }

    #[test]
    fn hostile_lines() {
        for (line, want) in [
            ("m", "missing fields"),
            ("m ", "missing fields"),
            ("m,t=a", "missing fields"),
            (",t=a f=1", "missing measurement"),
            (" f=1", "missing fields"),
            ("m,t f=1", "no `=value`"),
            ("m,t= f=1", "empty value"),
            ("m,=a f=1", "empty tag key"),
            ("m f", "no `=value`"),
            ("m =1", "empty field key"),
            ("m f=", "empty value"),
            ("m f=,g=1", "empty value"),
            ("m f=abc", "not a number"),
            ("m f=inf", "not a number"),
            ("m f=NaN", "not a number"),
            ("m f=1e999", "not a number"),
            ("m f=1.5i", "64-bit integer"),
            ("m f=99999999999999999999i", "64-bit integer"),
            ("m f=-1u", "unsigned"),
            (r#"m f="unterminated"#, "unterminated"),
            (r#"m f="a"x"#, "unexpected characters"),
            ("m f=1 notatime", "timestamp"),
            ("m f=1 99999999999999999999", "timestamp"),
            ("m f=1 1 2", "after the timestamp"),
            ("m f=1,", "empty field key"),
        ] {
            let reason = bad(line);
            assert!(reason.contains(want), "{line:?}: {reason}");
        }
    }

    #[test]
    fn bad_lines_do_not_stop_others() {
        let body = "hosts_traffic,host=10.0.0.1 bits_incoming=1\ngarbage\nm f=\"open\nhosts_traffic,host=10.0.0.2 bits_incoming=2\n";
        let parsed = parse(body);
        assert_eq!(parsed.points.len(), 2);
        let lines: Vec<usize> = parsed.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3]);
    }

    #[test]
    fn sample_errors_and_conversions() {
        let body = "\
hosts_traffic,host=not-an-ip bits_incoming=1
hosts_traffic bits_incoming=1
hosts_traffic,host=10.0.0.3 bits_incoming=-1
hosts_traffic,host=10.0.0.4 packets_incoming=-2i
hosts_traffic,host=10.0.0.5 bits_incoming=\"x\"
networks_traffic,network=300.0.0.0/24 bits_incoming=1
hosts_ipv6_traffic,host=2001:db8::1 bits_incoming=10.6,packets_outgoing=7u,bits_outgoing=3i 42
networks_traffic,network=10.1.2.3/24 packets_incoming=1
hosts_traffic,host=10.0.0.6/32 flows_incoming=5
total_traffic,direction=incoming bits=0,flows=0,packets=0
system_counters,counter=x value=\"whatever\"
hosts_traffic,host=10.0.0.7 bits_incoming=1e30
";
        let parsed = parse(body);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let s = samples(&parsed.points);
        let lines: Vec<usize> = s.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![1, 2, 3, 4, 5, 6], "{:?}", s.errors);
        assert!(s.errors[0].reason.contains("not-an-ip"));
        assert!(s.errors[2].reason.contains("negative"));

        assert_eq!(s.hosts.len(), 3);
        assert_eq!(
            s.hosts[0],
            HostSample {
                ip: "2001:db8::1".parse().unwrap(),
                traffic: Traffic {
                    in_bps: 11,
                    out_bps: 3,
                    in_pps: 0,
                    out_pps: 7
                },
                timestamp_ns: Some(42),
            }
        );
        assert_eq!(s.hosts[1].ip, "10.0.0.6".parse::<IpAddr>().unwrap());
        assert_eq!(s.hosts[1].traffic, Traffic::default());
        assert_eq!(s.hosts[2].traffic.in_bps, u64::MAX);
        assert_eq!(s.networks.len(), 1);
        assert_eq!(
            s.networks[0].network,
            "10.1.2.0/24".parse::<IpNet>().unwrap()
        );
    }

    /// xorshift64: deterministic, no extra crate.
    fn rng(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    #[test]
    fn never_panics_on_truncated_or_mangled_input() {
        let body = sample_body();
        let bytes = body.as_bytes();
        for cut in 0..=bytes.len() {
            let text = String::from_utf8_lossy(&bytes[..cut]);
            let parsed = parse(&text);
            let _ = samples(&parsed.points);
        }
        let alphabet = b" ,=\\\"#\r\n\t0123456789.-+iuetfTFaz\xc3\xa9\xff\x00";
        let mut next = rng(0x2545_F491_4F6C_DD1D);
        for round in 0..3000 {
            let mut s = bytes.to_vec();
            for _ in 0..(1 + round % 16) {
                let i = (next() as usize) % s.len();
                let b = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 => s[i] = b,
                    1 => s.insert(i, b),
                    _ => {
                        s.remove(i);
                    }
                }
            }
            let text = String::from_utf8_lossy(&s);
            let parsed = parse(&text);
            let _ = samples(&parsed.points);
        }
        for _ in 0..500 {
            let len = (next() % 300) as usize;
            let s: Vec<u8> = (0..len).map(|_| (next() & 0xff) as u8).collect();
            let _ = samples(&parse(&String::from_utf8_lossy(&s)).points);
        }
    }

    #[test]
    fn large_inputs_are_linear() {
        let start = Instant::now();
        let long_escapes = format!("m{} f=1", "\\ ".repeat(500_000));
        assert_eq!(one(&long_escapes).measurement.len(), 1 + 500_000);
        let long_string = format!("m f=\"{}", "\\\"".repeat(500_000));
        assert!(bad(&long_string).contains("unterminated"));
        let many_fields = format!("m {}", vec!["f=1"; 200_000].join(","));
        assert_eq!(one(&many_fields).fields.len(), 200_000);
        let many_tags = format!("m{} f=1", ",t=v".repeat(200_000));
        assert_eq!(one(&many_tags).tags.len(), 200_000);
        let many_lines = "hosts_traffic,host=10.0.0.1 bits_incoming=1 1\n".repeat(100_000);
        let parsed = parse(&many_lines);
        assert_eq!(samples(&parsed.points).hosts.len(), 100_000);
        let garbage_lines = "\\\\\\\"\"\"===,,,\n".repeat(100_000);
        assert_eq!(parse(&garbage_lines).errors.len(), 100_000);
        assert!(start.elapsed() < Duration::from_secs(30));
    }
}
