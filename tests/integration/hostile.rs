//! Hostile input, table-driven: malformed and malicious requests to every route (bodies, path and
//! query parameters, headers, methods), notify calls and config files. Every HTTP case gets a
//! 4xx with a JSON `error` (never a 5xx, a hang or a dead service); every CLI case a clear
//! message and its documented exit code (never a panic). Requests are written byte for byte over
//! TCP to 127.0.0.1, so paths and headers can be anything a client could send.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::app::{
    binary, fixture, run_notify, spawn_app, test_config, write_config, ADMIN, NOTIFY, READ,
};

/// Every wait on the service is bounded by this.
const IO_BOUND: Duration = Duration::from_secs(10);

/// What a case must get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// 4xx with a JSON body carrying an `error` string.
    Reject,
    /// Anything but a 5xx (extreme but valid input may be accepted); an error is JSON.
    NoServerError,
    /// Refused by the HTTP layer before routing: 4xx or the connection closed, never 5xx.
    Protocol,
}

/// Owned header names and values of one case.
type Headers = Vec<(&'static str, Vec<u8>)>;

struct Case {
    name: String,
    request: Vec<u8>,
    want: Want,
}

struct Response {
    status: u16,
    body: Vec<u8>,
}

/// A request as bytes: `Host` and `Connection: close` added, `Content-Length` for any body.
fn request(method: &str, target: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n")
        .into_bytes();
    for (name, value) in headers {
        r.extend_from_slice(name.as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(value);
        r.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || method == "POST" {
        r.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

/// Sends `bytes` and reads the answer until the server closes; None if the server closed
/// without answering. Panics (the test fails) if it takes longer than `IO_BOUND`.
async fn send(addr: &str, bytes: &[u8]) -> Option<Response> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        // The server may answer (and close) before reading everything: that is fine.
        let _ = s.write_all(bytes).await;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        buf
    };
    let buf = tokio::time::timeout(IO_BOUND, exchange)
        .await
        .expect("the service answered within the bound");
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Option<Response> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        let (k, v) = l.split_once(':')?;
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = v.trim().parse::<usize>().ok(),
            "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
            _ => {}
        }
    }
    let raw = &buf[end + 4..];
    let body = if chunked {
        dechunk(raw)
    } else {
        raw[..length.unwrap_or(raw.len()).min(raw.len())].to_vec()
    };
    Some(Response { status, body })
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            break;
        };
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || raw.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[(eol + 4 + size).min(raw.len())..];
    }
    out
}

fn check(case: &Case, resp: Option<&Response>) -> Result<(), String> {
    let Some(resp) = resp else {
        return match case.want {
            Want::Protocol => Ok(()),
            _ => Err("connection closed without an answer".into()),
        };
    };
    if resp.status >= 500 {
        return Err(format!(
            "server error {}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        ));
    }
    let json: Option<Value> = serde_json::from_slice(&resp.body).ok();
    let has_error = json.as_ref().is_some_and(|j| j["error"].is_string());
    match case.want {
        Want::Reject if !(400..500).contains(&resp.status) => {
            Err(format!("wanted a 4xx, got {}", resp.status))
        }
        Want::Reject if !has_error => Err(format!(
            "{} without a JSON error: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        )),
        Want::NoServerError if resp.status >= 400 && !has_error => Err(format!(
            "{} without a JSON error: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        )),
        Want::Protocol if resp.status < 400 => Err(format!("accepted: {}", resp.status)),
        _ => Ok(()),
    }
}

fn nested(open: &str, close: &str, depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
}

/// Notification bodies that must be refused (POST /api/v1/notifications).
fn notification_bodies() -> Vec<(String, Vec<u8>)> {
    let ban = |ip: &str| format!(r#"{{"action":"ban","ip":"{ip}"}}"#);
    let details =
        |d: &str| format!(r#"{{"action":"ban","ip":"10.10.10.77","attack_details":{d}}}"#);
    let mut v: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, body: Vec<u8>| v.push((name.to_string(), body));
    add("empty body", b"".to_vec());
    add("whitespace only", b" \r\n\t ".to_vec());
    add("null", b"null".to_vec());
    add("true", b"true".to_vec());
    add("number", b"42".to_vec());
    add("string", br#""ban 10.10.10.1""#.to_vec());
    add("empty array", b"[]".to_vec());
    add(
        "array of a notification",
        br#"[{"action":"ban","ip":"10.10.10.1"}]"#.to_vec(),
    );
    add("array by position", br#"["ban","10.10.10.1"]"#.to_vec());
    add("empty object", b"{}".to_vec());
    add("open brace", b"{".to_vec());
    add("close brace", b"}".to_vec());
    add("missing value", br#"{"action":}"#.to_vec());
    add(
        "trailing comma",
        br#"{"action":"ban","ip":"10.10.10.1",}"#.to_vec(),
    );
    add(
        "single quotes",
        b"{'action':'ban','ip':'10.10.10.1'}".to_vec(),
    );
    add(
        "trailing garbage",
        br#"{"action":"ban","ip":"10.10.10.1"} x"#.to_vec(),
    );
    add(
        "two documents",
        br#"{"action":"ban","ip":"10.10.10.1"}{"action":"ban","ip":"10.10.10.2"}"#.to_vec(),
    );
    add("BOM only", b"\xEF\xBB\xBF".to_vec());
    add("BOM and garbage", b"\xEF\xBB\xBFban".to_vec());
    add("NUL byte", b"\0".to_vec());
    add(
        "NUL bytes after a document",
        b"{\"action\":\"ban\",\"ip\":\"10.10.10.1\"}\0\0".to_vec(),
    );
    add(
        "raw NUL inside a string",
        b"{\"action\":\"ban\",\"ip\":\"10.10.10.1\0\"}".to_vec(),
    );
    add(
        "escaped NUL in the action",
        br#"{"action":"ban\u0000","ip":"10.10.10.1"}"#.to_vec(),
    );
    add(
        "escaped NUL in the ip",
        br#"{"action":"ban","ip":"10.10.10.1\u0000"}"#.to_vec(),
    );
    add(
        "raw newline inside a string",
        b"{\"action\":\"ban\n\",\"ip\":\"10.10.10.1\"}".to_vec(),
    );
    add(
        "invalid UTF-8 in a string",
        b"{\"action\":\"ban\",\"ip\":\"\xff\xfe\"}".to_vec(),
    );
    add("invalid UTF-8 as a key", b"{\"\xc3\x28\":1}".to_vec());
    add("overlong UTF-8", b"{\"action\":\"\xc0\xaf\"}".to_vec());
    add(
        "lone surrogate",
        br#"{"action":"ban","ip":"\ud800"}"#.to_vec(),
    );
    add("bad escape", br#"{"action":"ban","ip":"\x41"}"#.to_vec());
    add("UTF-16 body", b"\xff\xfe{\0\"\0a\0\"\0:\0}\0".to_vec());
    add(
        "deep arrays in details",
        details(&nested("[", "]", 5000, "")).into_bytes(),
    );
    add(
        "deep objects as the attack uuid",
        details(&format!(
            r#"{{"attack_uuid":{}}}"#,
            nested("{\"a\":", "}", 5000, "1")
        ))
        .into_bytes(),
    );
    add(
        "deep arrays as the ip",
        format!(
            r#"{{"action":"ban","ip":{}}}"#,
            nested("[", "]", 100_000, "")
        )
        .into_bytes(),
    );
    add(
        "deep arrays at the top",
        nested("[", "]", 100_000, "").into_bytes(),
    );
    add("unclosed deep arrays", "[".repeat(50_000).into_bytes());
    add("missing action", br#"{"ip":"10.10.10.1"}"#.to_vec());
    add(
        "null action",
        br#"{"action":null,"ip":"10.10.10.1"}"#.to_vec(),
    );
    add(
        "unknown action",
        br#"{"action":"nuke","ip":"10.10.10.1"}"#.to_vec(),
    );
    add(
        "upper-case action",
        br#"{"action":"BAN","ip":"10.10.10.1"}"#.to_vec(),
    );
    add(
        "empty action",
        br#"{"action":"","ip":"10.10.10.1"}"#.to_vec(),
    );
    add(
        "action is a number",
        br#"{"action":1,"ip":"10.10.10.1"}"#.to_vec(),
    );
    add(
        "action is an array",
        br#"{"action":["ban"],"ip":"10.10.10.1"}"#.to_vec(),
    );
    add(
        "action is an object",
        br#"{"action":{"ban":true},"ip":"10.10.10.1"}"#.to_vec(),
    );
    add(
        "action of 100 KB",
        format!(
            r#"{{"action":"{}","ip":"10.10.10.1"}}"#,
            "b".repeat(100_000)
        )
        .into_bytes(),
    );
    add(
        "script in the action",
        br#"{"action":"<script>alert(1)</script>","ip":"10.10.10.1"}"#.to_vec(),
    );
    add(
        "duplicate action",
        br#"{"action":"ban","action":"unban","ip":"10.10.10.1"}"#.to_vec(),
    );
    add("missing ip", br#"{"action":"ban"}"#.to_vec());
    add("null ip", br#"{"action":"ban","ip":null}"#.to_vec());
    for ip in [
        "",
        " ",
        "256.0.0.1",
        "10.10.10.300",
        "10.10.10",
        "10.10.10.1.5",
        "-1.0.0.0",
        "10.10.10.1/24",
        "10.10.10.1/33",
        "10.10.10.1/",
        "2001:db8::1/64",
        "2001:db8::1::1",
        "2001:db8::g",
        "::ffff:999.0.0.1",
        "fe80::1%eth0",
        "0x0a0a0a01",
        "167772161",
        "10.10.10.1 10.10.10.2",
        "localhost",
        "../../etc/passwd",
        "10.10.10.1; DROP TABLE hosts; --",
    ] {
        add(&format!("ip {ip:?}"), ban(ip).into_bytes());
    }
    add(
        "ip is a number",
        br#"{"action":"ban","ip":167772161}"#.to_vec(),
    );
    add(
        "ip is an array",
        br#"{"action":"ban","ip":["10.10.10.1"]}"#.to_vec(),
    );
    add(
        "ip is an object",
        br#"{"action":"ban","ip":{"v4":"10.10.10.1"}}"#.to_vec(),
    );
    add("ip of 1 MB-ish", ban(&"1".repeat(500_000)).into_bytes());
    add(
        "unknown scope",
        br#"{"action":"ban","ip":"10.10.10.1","alert_scope":"planet"}"#.to_vec(),
    );
    add(
        "scope is a number",
        br#"{"action":"ban","ip":"10.10.10.1","alert_scope":1}"#.to_vec(),
    );
    add(
        "hostgroup without a name",
        br#"{"action":"ban","alert_scope":"hostgroup"}"#.to_vec(),
    );
    add("hostgroup networks not a list", br#"{"action":"ban","alert_scope":"hostgroup","hostgroup_name":"g","hostgroup_networks":"10.0.0.0/8"}"#.to_vec());
    for net in [
        "10.0.0.0/33",
        "::/129",
        "nope",
        "10.0.0.0/-1",
        "10.0.0.0/4294967296",
        "",
    ] {
        add(
            &format!("hostgroup network {net:?}"),
            format!(r#"{{"action":"ban","alert_scope":"hostgroup","hostgroup_name":"g","hostgroup_networks":["{net}"]}}"#).into_bytes(),
        );
    }
    add("hostgroup network is a number", br#"{"action":"ban","alert_scope":"hostgroup","hostgroup_name":"g","hostgroup_networks":[1]}"#.to_vec());
    add("details is an array", details("[]").into_bytes());
    add("details is a string", details(r#""big""#).into_bytes());
    for (name, value) in [
        ("negative", "-1"),
        ("fractional", "1.5"),
        ("1e999", "1e999"),
        ("u64 overflow", "18446744073709551616"),
        ("huge integer", "99999999999999999999999999999999999999"),
        ("a string", r#""1000""#),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("an object", "{}"),
        ("true", "true"),
    ] {
        add(
            &format!("traffic {name}"),
            details(&format!(r#"{{"total_incoming_traffic":{value}}}"#)).into_bytes(),
        );
    }
    add(
        "pps is a string",
        details(r#"{"total_incoming_pps":"lots"}"#).into_bytes(),
    );
    add(
        "uuid is a number",
        details(r#"{"attack_uuid":5}"#).into_bytes(),
    );
    add(
        "flow spec rules an object",
        br#"{"action":"partial_block","ip":"10.10.10.1","flow_spec_rules":{}}"#.to_vec(),
    );
    add(
        "flow spec rule a number",
        br#"{"action":"partial_block","ip":"10.10.10.1","flow_spec_rules":[1]}"#.to_vec(),
    );
    add(
        "flow spec uuid a number",
        br#"{"action":"partial_block","ip":"10.10.10.1","flow_spec_rules":[{"uuid":5}]}"#.to_vec(),
    );
    let many_keys: String = (0..20_000).map(|i| format!(r#""k{i}":{i},"#)).collect();
    add(
        "20000 unknown keys, no action",
        format!("{{{many_keys}\"ip\":\"10.10.10.1\"}}").into_bytes(),
    );
    add("form encoded", b"action=ban&ip=10.10.10.1".to_vec());
    add(
        "FastNetMon text report",
        fixture("community-1.2.4/auto_ban.stdin"),
    );
    add("binary junk", (0..=255u8).cycle().take(4096).collect());
    v
}

/// Extreme but valid notifications: accepted or refused, never a 5xx.
fn notification_extremes() -> Vec<(String, Vec<u8>)> {
    let max = u64::MAX;
    vec![
        // Unknown fields are ignored however deep they go (serde skips them without recursing).
        (
            "deep objects in an unknown detail".into(),
            format!(
                r#"{{"action":"ban","ip":"10.10.10.206","attack_details":{}}}"#,
                nested("{\"a\":", "}", 5000, "1")
            )
            .into_bytes(),
        ),
        (
            "deep arrays in an unknown field".into(),
            format!(
                r#"{{"action":"ban","ip":"10.10.10.207","x":{}}}"#,
                nested("[", "]", 100_000, "")
            )
            .into_bytes(),
        ),
        (
            "u64::MAX traffic everywhere".into(),
            format!(r#"{{"action":"ban","ip":"10.10.10.201","attack_details":{{"total_incoming_traffic":{max},"total_outgoing_traffic":{max},"total_incoming_pps":{max},"total_outgoing_pps":{max},"total_incoming_traffic_bits":{max}}}}}"#).into_bytes(),
        ),
        (
            "i64::MAX + 1 pps".into(),
            br#"{"action":"ban","ip":"10.10.10.202","attack_details":{"total_incoming_pps":9223372036854775808}}"#.to_vec(),
        ),
        (
            "long attack uuid and type".into(),
            format!(r#"{{"action":"ban","ip":"10.10.10.203","attack_details":{{"attack_uuid":"{}","attack_type":"{}"}}}}"#, "u".repeat(50_000), "t".repeat(50_000)).into_bytes(),
        ),
        (
            "control characters in details".into(),
            br#"{"action":"ban","ip":"10.10.10.204","attack_details":{"attack_uuid":"\u0000\u001b[31m","attack_severity":"\n\r"}}"#.to_vec(),
        ),
        (
            "ip outside our networks".into(),
            br#"{"action":"ban","ip":"192.0.2.1"}"#.to_vec(),
        ),
        (
            "hostgroup of 5000 networks".into(),
            format!(r#"{{"action":"ban","alert_scope":"hostgroup","hostgroup_name":"g","hostgroup_networks":[{}"10.0.0.0/8"]}}"#, r#""10.0.0.0/8","#.repeat(5000)).into_bytes(),
        ),
        (
            "unban of a host never seen".into(),
            br#"{"action":"unban","ip":"10.10.10.205"}"#.to_vec(),
        ),
    ]
}

/// Line-protocol bodies that must be refused (no line is valid).
fn write_bodies() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, body: &[u8]| v.push((name.to_string(), body.to_vec()));
    add("measurement only", b"hosts_traffic");
    add("tags but no fields", b"hosts_traffic,host=10.10.10.1");
    add("empty measurement", b",host=10.10.10.1 incoming_packets=1i");
    add(
        "field without value",
        b"hosts_traffic,host=10.10.10.1 incoming_packets=",
    );
    add("field without key", b"hosts_traffic =1i");
    add(
        "bad timestamp",
        b"hosts_traffic,host=10.10.10.1 incoming_packets=1i soon",
    );
    add(
        "extra token",
        b"hosts_traffic,host=10.10.10.1 incoming_packets=1i 1 2",
    );
    add("unterminated string", b"m a=\"unterminated");
    add("float overflow", b"m a=1e999");
    add("integer overflow", b"m a=99999999999999999999i");
    add("negative unsigned", b"m a=-1u");
    add("bare word value", b"m a=lots");
    add("empty tag key", b"m,=x a=1");
    add("empty tag value", b"m,k= a=1");
    add("trailing comma in tags", b"m,k=v, a=1");
    add("trailing backslash", b"m a=1\\");
    add("NUL bytes", b"\0\0\0\0");
    add("invalid UTF-8", b"\xff\xfe\xfd a=1\xff");
    add("timestamp overflow", b"m a=1 99999999999999999999");
    add(
        "JSON instead",
        br#"{"hosts_traffic":{"host":"10.10.10.1"}}"#,
    );
    v.push((
        "10000 commas".into(),
        [b"m".as_slice(), &[b','; 10_000]].concat(),
    ));
    v.push(("5000 bad lines".into(), b"garbage\n".repeat(5000)));
    v.push(("one line of 200 KB".into(), vec![b'x'; 200_000]));
    v.push((
        "many equals signs".into(),
        format!("m {}", "=".repeat(10_000)).into_bytes(),
    ));
    v
}

/// Line protocol that is odd but has at least one parsable line (or none at all): 204 or 4xx.
fn write_extremes() -> Vec<(String, String, Vec<u8>)> {
    let q = "/write?db=fastnetmon";
    vec![
        ("empty body".into(), q.into(), b"".to_vec()),
        ("comments only".into(), q.into(), b"# a\n# b\n".to_vec()),
        ("CRLF only".into(), q.into(), b"\r\n\r\n".to_vec()),
        (
            "host that is not an address".into(),
            q.into(),
            b"hosts_traffic,host=999.1.1.1 incoming_packets=1i".to_vec(),
        ),
        (
            "negative counters".into(),
            q.into(),
            b"hosts_traffic,host=10.10.10.9 incoming_packets=-5i,incoming_bytes=-1".to_vec(),
        ),
        (
            "timestamp i64::MAX in hours".into(),
            "/write?precision=h".into(),
            b"hosts_traffic,host=10.10.10.9 incoming_packets=1i 9223372036854775807".to_vec(),
        ),
        (
            "timestamp i64::MIN".into(),
            q.into(),
            b"hosts_traffic,host=10.10.10.9 incoming_packets=1i -9223372036854775808".to_vec(),
        ),
        (
            "u64::MAX counters".into(),
            q.into(),
            b"hosts_traffic,host=10.10.10.9 incoming_packets=18446744073709551615u,incoming_bytes=18446744073709551615u".to_vec(),
        ),
        (
            "float counters of 1e308".into(),
            q.into(),
            b"hosts_traffic,host=10.10.10.9 incoming_packets=1e308,incoming_bytes=-1e308".to_vec(),
        ),
        (
            "network with host bits".into(),
            q.into(),
            b"networks_traffic,network=10.10.10.1/8 incoming_packets=1i".to_vec(),
        ),
        (
            "good line among bad ones".into(),
            q.into(),
            b"junk\nhosts_traffic,host=10.10.10.9 incoming_packets=1i\n\xff\xff".to_vec(),
        ),
    ]
}

/// Bodies of POST /api/v1/escalations that must be refused. 192.0.2.0/24 is outside our
/// networks, so even a well-formed body with hostile text is refused by a rail.
fn escalation_bodies() -> Vec<(String, Vec<u8>)> {
    let outside = |reason: &str| format!(r#"{{"prefix":"192.0.2.0/24","reason":{reason}}}"#);
    let ours = |field: &str| format!(r#"{{"prefix":"10.10.10.0/24","reason":"test",{field}}}"#);
    let mut v: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, body: String| v.push((name.to_string(), body.into_bytes()));
    add("empty body", String::new());
    add("null", "null".into());
    add("array", r#"["10.10.10.0/24","test"]"#.into());
    add("empty object", "{}".into());
    add("missing reason", r#"{"prefix":"10.10.10.0/24"}"#.into());
    add("missing prefix", r#"{"reason":"test"}"#.into());
    add(
        "prefix is a number",
        r#"{"prefix":168430080,"reason":"test"}"#.into(),
    );
    add(
        "prefix is null",
        r#"{"prefix":null,"reason":"test"}"#.into(),
    );
    for p in [
        "",
        "10.10.10.0/33",
        "10.10.10.1/24",
        "10.10.10.0",
        "10.10.10.0/-1",
        "10.10.10.0/ 24",
        "nope",
        "0.0.0.0/0",
        "::/0",
        "2001:db8::/129",
        "192.0.2.0/24",
        "10.10.10.0/24\u{0}",
    ] {
        add(
            &format!("prefix {p:?}"),
            format!(r#"{{"prefix":{},"reason":"test"}}"#, serde_json::json!(p)),
        );
    }
    add(
        "prefix of 100 KB",
        format!(r#"{{"prefix":"{}","reason":"test"}}"#, "1".repeat(100_000)),
    );
    add(
        "empty reason",
        r#"{"prefix":"10.10.10.0/24","reason":""}"#.into(),
    );
    add(
        "blank reason",
        r#"{"prefix":"10.10.10.0/24","reason":"   \n\t"}"#.into(),
    );
    add(
        "reason of 501 characters",
        format!(
            r#"{{"prefix":"10.10.10.0/24","reason":"{}"}}"#,
            "r".repeat(501)
        ),
    );
    add(
        "reason is a number",
        r#"{"prefix":"10.10.10.0/24","reason":5}"#.into(),
    );
    add(
        "reason is deeply nested",
        format!(
            r#"{{"prefix":"10.10.10.0/24","reason":{}}}"#,
            nested("[", "]", 10_000, "")
        ),
    );
    add("NUL in the reason", outside(r#""a\u0000b""#));
    add(
        "script in the reason",
        outside(r#""<script>alert(1)</script>""#),
    );
    add(
        "SQL in the reason",
        outside(r#""'); DROP TABLE escalations; --""#),
    );
    add(
        "terminal escapes in the reason",
        outside(r#""\u001b[2J\u001b[31m""#),
    );
    for d in [
        "0s",
        "-1h",
        "1000y",
        "abc",
        "1e99h",
        "99999999999999999999s",
        "",
        "2h 2h 2h garbage",
    ] {
        add(
            &format!("duration {d:?}"),
            ours(&format!(r#""duration":"{d}""#)),
        );
    }
    add("duration is a number", ours(r#""duration":7200"#));
    add("unknown field", ours(r#""force":true"#));
    add(
        "duplicate prefix key",
        r#"{"prefix":"10.10.10.0/24","prefix":"10.10.11.0/24","reason":"x"}"#.into(),
    );
    v
}

fn path_segments() -> Vec<&'static str> {
    vec![
        "not-an-ip",
        "..",
        "%2e%2e",
        "%2F",
        "%00",
        "%FF",
        "%C0%AF",
        "10.10.10.1%00",
        "10.10.10.256",
        "%3A%3A1%3A%3A",
        "%25",
        "%zz",
        "%",
        "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "'%20OR%201=1%20--",
        "10.10.10.1;DROP%20TABLE%20hosts",
        "%E2%80%AE",
        "%EF%BC%91%EF%BC%90.0.0.1",
        "10.10.10.1%2F33",
        "0.0.0.0%2F-1",
        "10.10.10.1%2F24",
        "%20",
        "+",
    ]
}

fn build_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut push = |name: String, request: Vec<u8>, want: Want| {
        cases.push(Case {
            name,
            request,
            want,
        })
    };
    let notify = bearer(NOTIFY);
    let admin = bearer(ADMIN);
    let read = bearer(READ);
    let json: &[u8] = b"application/json";

    for (name, body) in notification_bodies() {
        push(
            format!("notification: {name}"),
            request(
                "POST",
                "/api/v1/notifications",
                &[("authorization", &notify), ("content-type", json)],
                &body,
            ),
            Want::Reject,
        );
    }
    for (name, body) in notification_extremes() {
        push(
            format!("notification extreme: {name}"),
            request(
                "POST",
                "/api/v1/notifications",
                &[("authorization", &notify), ("content-type", json)],
                &body,
            ),
            Want::NoServerError,
        );
    }
    for (name, body) in write_bodies() {
        push(
            format!("write: {name}"),
            request(
                "POST",
                "/write?db=fastnetmon",
                &[("authorization", &notify)],
                &body,
            ),
            Want::Reject,
        );
    }
    for (name, target, body) in write_extremes() {
        push(
            format!("write extreme: {name}"),
            request("POST", &target, &[("authorization", &notify)], &body),
            Want::NoServerError,
        );
    }
    let long_precision = format!("/write?precision={}", "n".repeat(10_000));
    let line = b"hosts_traffic,host=10.10.10.9 incoming_packets=1i".as_slice();
    for (name, target, headers) in [
        (
            "bad precision",
            "/write?precision=fortnight",
            vec![("authorization", notify.clone())],
        ),
        (
            "precision of 10 KB",
            long_precision.as_str(),
            vec![("authorization", notify.clone())],
        ),
        (
            "wrong query password",
            "/write?u=fastnetmon&p=wrong",
            vec![],
        ),
        (
            "query password of another role",
            "/write?u=grafana&p=read-token-123",
            vec![],
        ),
        (
            "gzip body",
            "/write",
            vec![
                ("authorization", notify.clone()),
                ("content-encoding", b"gzip".to_vec()),
            ],
        ),
        (
            "read token",
            "/write",
            vec![("authorization", read.clone())],
        ),
        ("no credentials", "/write", vec![]),
        (
            "duplicate precision",
            "/write?precision=s&precision=ms",
            vec![("authorization", notify.clone())],
        ),
    ] {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        push(
            format!("write: {name}"),
            request("POST", target, &headers, line),
            Want::Reject,
        );
    }
    for (name, body) in escalation_bodies() {
        push(
            format!("escalation body: {name}"),
            request(
                "POST",
                "/api/v1/escalations",
                &[("authorization", &admin), ("content-type", json)],
                &body,
            ),
            Want::Reject,
        );
    }

    // Path parameters.
    for seg in path_segments() {
        push(
            format!("GET hosts/{seg}"),
            request(
                "GET",
                &format!("/api/v1/hosts/{seg}"),
                &[("authorization", &read)],
                b"",
            ),
            Want::Reject,
        );
        push(
            format!("GET escalations/{seg}"),
            request(
                "GET",
                &format!("/api/v1/escalations/{seg}"),
                &[("authorization", &read)],
                b"",
            ),
            Want::Reject,
        );
        push(
            format!("DELETE escalations/{seg}"),
            request(
                "DELETE",
                &format!("/api/v1/escalations/{seg}"),
                &[("authorization", &admin)],
                b"",
            ),
            Want::Reject,
        );
        push(
            format!("DELETE suppressions/{seg}"),
            request(
                "DELETE",
                &format!("/api/v1/suppressions/{seg}"),
                &[("authorization", &admin)],
                b"",
            ),
            Want::Reject,
        );
    }
    let long = "1".repeat(8000);
    for target in [
        format!("/api/v1/hosts/{long}"),
        format!("/api/v1/escalations/{long}"),
        format!("/api/v1/escalations/{long}/24"),
        "/api/v1/escalations/10.10.10.0/abc".into(),
        "/api/v1/escalations/x/y".into(),
        "/api/v1/escalations/10.10.10.0/-1".into(),
        "/api/v1/escalations/10.10.10.0/4294967296".into(),
        "/api/v1/escalations/%FF/24".into(),
        "/api/v1/escalations/10.10.10.0/%FF".into(),
        "/api/v1/escalations/10.10.10.0/24/extra".into(),
        "/api/v1/hosts/../escalations".into(),
        "/api/v1/hosts/../../../../etc/passwd".into(),
        "/api/v1/hosts/a/b/c".into(),
        "//api/v1/hosts".into(),
        "/API/V1/HOSTS".into(),
        "/api/v1/hosts%2F10.10.10.1".into(),
        "/api/v2/hosts".into(),
        "/api/v1/notifications/../hosts".into(),
    ] {
        push(
            format!("GET {}", &target[..target.len().min(60)]),
            request("GET", &target, &[("authorization", &admin)], b""),
            Want::Reject,
        );
    }
    push(
        "DELETE suppressions/x/y".into(),
        request(
            "DELETE",
            "/api/v1/suppressions/x/y",
            &[("authorization", &admin)],
            b"",
        ),
        Want::Reject,
    );
    push(
        "DELETE escalations/10.10.10.0/99".into(),
        request(
            "DELETE",
            "/api/v1/escalations/10.10.10.0/99",
            &[("authorization", &admin)],
            b"",
        ),
        Want::Reject,
    );

    // Query parameters.
    for query in [
        "/api/v1/hosts?limit=-1",
        "/api/v1/hosts?limit=1e99",
        "/api/v1/hosts?limit=99999999999999999999",
        "/api/v1/hosts?limit=0",
        "/api/v1/hosts?limit=1001",
        "/api/v1/hosts?limit=",
        "/api/v1/hosts?limit",
        "/api/v1/hosts?limit=abc",
        "/api/v1/hosts?limit=1&limit=2",
        "/api/v1/hosts?offset=-5",
        "/api/v1/hosts?offset=9223372036854775808",
        "/api/v1/hosts?state=%3Cscript%3Ealert(1)%3C/script%3E",
        "/api/v1/hosts?state=%FF",
        "/api/v1/hosts?state=banned%00",
        "/api/v1/hosts?bogus=1",
        "/api/v1/hosts?%00=1",
        "/api/v1/hosts?=",
        "/api/v1/hosts?&&&&bogus",
        "/api/v1/escalations?state=nope",
        "/api/v1/escalations?state=ACTIVE",
        "/api/v1/escalations?limit=-1",
        "/api/v1/escalations?offset=x",
        "/api/v1/escalations?state[]=active",
        "/api/v1/events?since=garbage",
        "/api/v1/events?until=garbage",
        "/api/v1/events?since=2026-13-45T99:99:99Z",
        "/api/v1/events?since=99999999999999999999",
        "/api/v1/events?before=abc",
        "/api/v1/events?limit=0",
        "/api/v1/events?limit=1e99",
        "/api/v1/events?ip=nope",
        "/api/v1/events?ip=%FF",
        "/api/v1/events?prefix=nope",
        "/api/v1/events?prefix=10.10.10.1%2F24",
        "/api/v1/events?bogus=1",
    ] {
        push(
            format!("GET {query}"),
            request("GET", query, &[("authorization", &admin)], b""),
            Want::Reject,
        );
    }
    let long_query = format!("/api/v1/hosts?state={}", "a".repeat(10_000));
    push(
        "GET hosts?state=<10 KB>".into(),
        request("GET", &long_query, &[("authorization", &admin)], b""),
        Want::Reject,
    );
    for query in [
        "?suppress=-1",
        "?suppress=0s",
        "?suppress=99999y",
        "?suppress=1e99h",
        "?suppress=",
        "?bogus=1",
        "?suppress=30m&suppress=1h",
    ] {
        push(
            format!("DELETE escalations/10.10.10.0%2F24{query}"),
            request(
                "DELETE",
                &format!("/api/v1/escalations/10.10.10.0%2F24{query}"),
                &[("authorization", &admin)],
                b"",
            ),
            Want::Reject,
        );
    }
    // Queries with free text are accepted, never a 5xx.
    for query in [
        "/api/v1/events?kind=%3Cscript%3E",
        "/api/v1/events?actor='%20OR%201=1--",
        "/api/v1/events?since=-1",
        "/api/v1/events?before=-9223372036854775808",
    ] {
        push(
            format!("GET {query}"),
            request("GET", query, &[("authorization", &admin)], b""),
            Want::NoServerError,
        );
    }

    // Headers.
    let valid = fixture("advanced/ban_host.json");
    let huge = vec![b'a'; 64 * 1024];
    let basic = |s: &[u8]| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
        .into_bytes()
    };
    let auth_cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty authorization", b"".to_vec()),
        ("bearer without a token", b"Bearer".to_vec()),
        ("bearer with a space", b"Bearer ".to_vec()),
        (
            "bearer of 10 KB",
            [b"Bearer ".as_slice(), &[b'x'; 10_000]].concat(),
        ),
        ("wrong token", b"Bearer wrong".to_vec()),
        (
            "token with a NUL-looking suffix",
            bearer(&format!("{NOTIFY}%00")),
        ),
        ("token prefix", bearer(&NOTIFY[..5])),
        ("basic not base64", b"Basic !!!".to_vec()),
        ("basic without a colon", basic(b"no-colon")),
        ("basic invalid UTF-8", basic(b"\xff\xfe:\xff")),
        (
            "basic wrong name",
            basic(format!("nobody:{NOTIFY}").as_bytes()),
        ),
        ("digest scheme", b"Digest username=\"x\"".to_vec()),
        ("non-ASCII bytes", b"Bearer \xff\xfe\xfd".to_vec()),
        ("token of another role", bearer(READ)),
    ];
    for (name, value) in &auth_cases {
        push(
            format!("header: {name}"),
            request(
                "POST",
                "/api/v1/notifications",
                &[("authorization", value), ("content-type", json)],
                &valid,
            ),
            Want::Reject,
        );
    }
    let header_cases: Vec<(&str, Headers)> = vec![
        ("no authorization at all", vec![]),
        (
            "idempotency key not ASCII",
            vec![
                ("authorization", notify.clone()),
                ("idempotency-key", "clé-ü".as_bytes().to_vec()),
            ],
        ),
        (
            "idempotency key of raw bytes",
            vec![
                ("authorization", notify.clone()),
                ("idempotency-key", b"\xff\xfe".to_vec()),
            ],
        ),
        (
            "idempotency key empty",
            vec![
                ("authorization", notify.clone()),
                ("idempotency-key", b"".to_vec()),
            ],
        ),
        (
            "idempotency key of 201 characters",
            vec![
                ("authorization", notify.clone()),
                ("idempotency-key", vec![b'k'; 201]),
            ],
        ),
        (
            "observed-at garbage",
            vec![
                ("authorization", notify.clone()),
                ("x-fnm-observed-at", b"yesterday".to_vec()),
            ],
        ),
        (
            "observed-at overflow",
            vec![
                ("authorization", notify.clone()),
                ("x-fnm-observed-at", b"99999999999999999999999".to_vec()),
            ],
        ),
        (
            "observed-at not ASCII",
            vec![
                ("authorization", notify.clone()),
                (
                    "x-fnm-observed-at",
                    "2026-11-25T12:00:00Z\u{2028}".as_bytes().to_vec(),
                ),
            ],
        ),
        (
            "unknown source",
            vec![
                ("authorization", notify.clone()),
                ("x-fnm-source", b"carrier-pigeon".to_vec()),
            ],
        ),
        (
            "header of 64 KB",
            vec![("authorization", notify.clone()), ("x-junk", huge.clone())],
        ),
        (
            "authorization of 64 KB",
            vec![("authorization", [b"Bearer ".as_slice(), &huge].concat())],
        ),
    ];
    for (name, headers) in &header_cases {
        let mut h: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        h.push(("content-type", json));
        push(
            format!("header: {name}"),
            request("POST", "/api/v1/notifications", &h, &valid),
            Want::Reject,
        );
    }
    for ct in [
        b"text/html".as_slice(),
        b"multipart/form-data; boundary=x",
        b"\xff\xfe",
        b"application/json; charset=utf-7",
    ] {
        push(
            format!("content type {}", String::from_utf8_lossy(ct)),
            request(
                "POST",
                "/api/v1/escalations",
                &[("authorization", &admin), ("content-type", ct)],
                b"<html>not json</html>",
            ),
            Want::Reject,
        );
    }
    let mut many_small = Vec::new();
    for i in 0..90 {
        many_small.push((format!("x-h{i}"), vec![b'v'; 400]));
    }
    let many: Vec<(&str, &[u8])> = std::iter::once(("authorization", admin.as_slice()))
        .chain(many_small.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
        .collect();
    push(
        "90 headers of 400 bytes".into(),
        request("GET", "/api/v1/hosts?limit=0", &many, b""),
        Want::Reject,
    );
    // A malformed body at the HTTP layer.
    push(
        "bad chunk size".into(),
        format!("POST /api/v1/notifications HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer {NOTIFY}\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n").into_bytes(),
        Want::Protocol,
    );

    // Methods and routes.
    for (method, target, token) in [
        ("PUT", "/api/v1/notifications", &notify),
        ("GET", "/api/v1/notifications", &notify),
        ("PATCH", "/api/v1/escalations", &admin),
        ("DELETE", "/api/v1/hosts", &admin),
        ("POST", "/healthz", &admin),
        ("DELETE", "/metrics", &admin),
        ("PUT", "/api/v1/hosts/10.10.10.1", &admin),
        ("FOO", "/api/v1/hosts", &admin),
        ("GET", "/write", &notify),
        ("GET", "/nope", &admin),
    ] {
        push(
            format!("{method} {target}"),
            request(method, target, &[("authorization", token)], b""),
            Want::Reject,
        );
    }
    // Roles.
    for (method, target, token) in [
        ("POST", "/api/v1/notifications", &read),
        ("GET", "/api/v1/hosts", &notify),
        ("POST", "/api/v1/escalations", &read),
        ("POST", "/api/v1/escalations", &notify),
        ("DELETE", "/api/v1/escalations/10.10.10.0%2F24", &read),
        ("DELETE", "/api/v1/suppressions/10.10.10.0%2F24", &notify),
        ("GET", "/api/v1/events", &b"Bearer nope".to_vec()),
        ("GET", "/api/v1/suppressions", &b"".to_vec()),
    ] {
        push(
            format!("{method} {target} with the wrong credentials"),
            request(
                method,
                target,
                &[("authorization", token), ("content-type", json)],
                &valid,
            ),
            Want::Reject,
        );
    }
    // Refused by the HTTP layer before any handler: never a 5xx, never accepted.
    let mut too_many = request("GET", "/api/v1/hosts", &[("authorization", &admin)], b"");
    too_many.truncate(too_many.len() - 2);
    for i in 0..200 {
        too_many.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    too_many.extend_from_slice(b"\r\n");
    for (name, bytes) in [
        ("200 headers", too_many),
        (
            "garbage request line",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
        ),
        ("HTTP/0.9", b"GET /api/v1/hosts\r\n\r\n".to_vec()),
        (
            "header without a colon",
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nnocolon\r\n\r\n".to_vec(),
        ),
        (
            "NUL in a header name",
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nx\0y: 1\r\n\r\n".to_vec(),
        ),
        (
            "negative content-length",
            b"POST /write HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n".to_vec(),
        ),
        (
            "two content-lengths",
            b"POST /write HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab"
                .to_vec(),
        ),
        (
            "space in the path",
            b"GET /api/v1/hosts/10.10.10.1 x HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(),
        ),
        (
            "path of 70 KB",
            format!(
                "GET /api/v1/hosts/{} HTTP/1.1\r\nhost: x\r\n\r\n",
                "1".repeat(70_000)
            )
            .into_bytes(),
        ),
    ] {
        push(format!("protocol: {name}"), bytes, Want::Protocol);
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_4xx_with_a_json_error_and_the_service_keeps_its_data() {
    let app = spawn_app(|c| {
        c.server.max_body_bytes = 1024 * 1024;
        c.server.max_write_bytes = 1024 * 1024;
    })
    .await;
    let addr = app.url.trim_start_matches("http://").to_string();

    // Stored before the table: a banned host.
    let (status, _) = app
        .post(
            "/api/v1/notifications",
            NOTIFY,
            fixture("advanced/ban_host.json"),
        )
        .await;
    assert_eq!(status, 201);
    let (_, before) = app.get("/api/v1/hosts", ADMIN).await;
    let hosts_before = before["total"].as_i64().expect("total");
    assert!(hosts_before >= 1, "{before}");

    let cases = build_cases();
    let started = Instant::now();
    let mut failures = Vec::new();
    for case in &cases {
        let resp = send(&addr, &case.request).await;
        if let Err(why) = check(case, resp.as_ref()) {
            failures.push(format!("{}: {why}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(cases.len() >= 200, "only {} HTTP cases", cases.len());
    let count = |w: Want| cases.iter().filter(|c| c.want == w).count();
    eprintln!(
        "{} hostile HTTP cases in {:?}: {} refused with a JSON error, {} extreme but valid, {} refused by the HTTP layer",
        cases.len(),
        started.elapsed(),
        count(Want::Reject),
        count(Want::NoServerError),
        count(Want::Protocol)
    );

    // Still up, and nothing stored before was lost.
    let (status, _) = app.get("/healthz", READ).await;
    assert_eq!(status, 200);
    let (status, _) = app.get("/readyz", READ).await;
    assert_eq!(status, 200);
    let (status, host) = app.get("/api/v1/hosts/10.154.0.2", READ).await;
    assert_eq!(status, 200, "{host}");
    assert_eq!(host["state"], "banned", "{host}");
    let (_, after) = app.get("/api/v1/hosts", ADMIN).await;
    assert!(
        after["total"].as_i64().expect("total") >= hosts_before,
        "{after}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limits_get_413() {
    // Bodies only a little over the limit: the server answers without reading the rest, and a
    // close with megabytes unread resets the connection, which may reach the client before the
    // 413 does.
    let app = spawn_app(|c| {
        c.server.max_body_bytes = 4 * 1024;
        c.server.max_write_bytes = 8 * 1024;
    })
    .await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let notify = bearer(NOTIFY);
    let admin = bearer(ADMIN);
    for (target, token, size) in [
        ("/api/v1/notifications", &notify, 4 * 1024 + 1),
        ("/api/v1/escalations", &admin, 5 * 1024),
        ("/write", &notify, 8 * 1024 + 1),
    ] {
        let body = vec![b' '; size];
        let resp = send(
            &addr,
            &request("POST", target, &[("authorization", token)], &body),
        )
        .await
        .expect("an answer");
        assert_eq!(resp.status, 413, "{target} {size}");
        let json: Value = serde_json::from_slice(&resp.body).expect("json");
        assert!(json["error"].is_string(), "{json}");
    }
    // Just under the /write limit is not refused for its size.
    let body = b"hosts_traffic,host=10.10.10.9 incoming_packets=1i\n".repeat(100);
    let resp = send(
        &addr,
        &request("POST", "/write", &[("authorization", &notify)], &body),
    )
    .await
    .expect("an answer");
    assert_eq!(resp.status, 204);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_by_the_request_timeout() {
    let app = spawn_app(|c| c.server.request_timeout = Duration::from_secs(1)).await;
    let addr = app.url.trim_start_matches("http://").to_string();

    // Headers, then half the body, then nothing: answered 408 (or closed) after ~1 s.
    let stalled = async {
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        let head = format!(
            "POST /api/v1/notifications HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {NOTIFY}\r\ncontent-length: 1000\r\n\r\n{{\"action\":"
        );
        s.write_all(head.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        buf
    };
    let started = Instant::now();
    let buf = tokio::time::timeout(Duration::from_secs(8), stalled)
        .await
        .expect("a stalled body is cut off within the bound");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "cut off too early: {took:?}"
    );
    if let Some(resp) = parse_response(&buf) {
        assert_eq!(resp.status, 408, "{}", String::from_utf8_lossy(&resp.body));
    }

    // A body trickled a byte every 200 ms is cut off by the same timeout.
    let trickle = async {
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        let head = format!(
            "POST /api/v1/notifications HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {NOTIFY}\r\ncontent-length: 100\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.expect("write");
        for _ in 0..100 {
            if s.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            // Stop once the server has answered.
            let mut probe = [0u8; 1];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), s.peek(&mut probe)).await
            {
                if n > 0 {
                    break;
                }
            }
        }
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
        buf
    };
    let started = Instant::now();
    let buf = tokio::time::timeout(Duration::from_secs(15), trickle)
        .await
        .expect("a trickled body is cut off within the bound");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let resp = parse_response(&buf).expect("an answer");
    assert_eq!(resp.status, 408);

    // Half a request head, then silence; and a connection that never sends a byte. hyper has no
    // header timeout of its own here: the idle guard closes both (request timeout + 1 s).
    for (name, partial) in [
        (
            "stalled headers",
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ".as_slice(),
        ),
        ("silent connection", b"".as_slice()),
    ] {
        let exchange = async {
            let mut s = TcpStream::connect(&addr).await.expect("connect");
            s.write_all(partial).await.expect("write");
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            buf
        };
        let started = Instant::now();
        let buf = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .unwrap_or_else(|_| panic!("{name}: not closed within 10 s"));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1500),
            "{name}: closed after {took:?}"
        );
        if let Some(resp) = parse_response(&buf) {
            assert!((400..500).contains(&resp.status), "{name}: {}", resp.status);
        }
    }

    // The service is still there for everyone else.
    let (status, _) = app.get("/healthz", READ).await;
    assert_eq!(status, 200);
    app.stop().await;
}

/// Runs the binary with `args` and `stdin`, bounded in time; (exit code, stderr).
fn run_bounded(args: &[&std::ffi::OsStr], stdin: &[u8]) -> (i32, String) {
    use std::io::{Read, Write};
    let mut child = Command::new(binary())
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(mut s) = child.stdin.take() {
        let _ = s.write_all(stdin);
    }
    // Drained on a thread, so a long message cannot block the child on a full pipe.
    let mut err_pipe = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });
    let deadline = Instant::now() + IO_BOUND;
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} did not finish within {IO_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stderr = reader.join().expect("stderr reader");
    (code, stderr)
}

fn no_panic(what: &str, stderr: &str) {
    assert!(
        !stderr.contains("panicked")
            && !stderr.contains("RUST_BACKTRACE")
            && !stderr.contains("stack overflow"),
        "{what}: {stderr}"
    );
}

#[test]
fn hostile_notify_calls_are_refused_with_exit_2_and_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(dir.path());
    let cfg = write_config(&config, dir.path());
    let long = "9".repeat(100_000);
    let deep = nested("{\"a\":", "}", 100_000, "1");
    let cases: Vec<(&str, Vec<&str>, Vec<u8>)> = vec![
        ("no arguments, no stdin", vec![], b"".to_vec()),
        ("one argument", vec!["10.10.10.1"], b"".to_vec()),
        (
            "two arguments",
            vec!["10.10.10.1", "incoming"],
            b"".to_vec(),
        ),
        (
            "legacy argv without JSON",
            vec!["ban", "10.10.10.1"],
            b"".to_vec(),
        ),
        (
            "three arguments",
            vec!["10.10.10.1", "incoming", "5"],
            b"".to_vec(),
        ),
        (
            "five arguments",
            vec!["10.10.10.1", "incoming", "5", "ban", "extra"],
            b"".to_vec(),
        ),
        (
            "ip not an address",
            vec!["not-an-ip", "incoming", "5", "ban"],
            b"".to_vec(),
        ),
        (
            "ip out of range",
            vec!["10.10.10.256", "incoming", "5", "ban"],
            b"".to_vec(),
        ),
        (
            "ip with a prefix",
            vec!["10.10.10.0/24", "incoming", "5", "ban"],
            b"".to_vec(),
        ),
        ("ip empty", vec!["", "incoming", "5", "ban"], b"".to_vec()),
        (
            "ip of 100 KB",
            vec![&long, "incoming", "5", "ban"],
            b"".to_vec(),
        ),
        (
            "ip with a newline",
            vec!["10.10.10.1\n10.10.10.2", "incoming", "5", "ban"],
            b"".to_vec(),
        ),
        (
            "ip in Unicode digits",
            vec!["１０.10.10.1", "incoming", "5", "ban"],
            b"".to_vec(),
        ),
        (
            "direction with spaces",
            vec!["10.10.10.1", "in coming", "5", "ban"],
            b"".to_vec(),
        ),
        (
            "direction with a shell",
            vec!["10.10.10.1", "$(reboot)", "5", "ban"],
            b"".to_vec(),
        ),
        (
            "pps negative",
            vec!["10.10.10.1", "incoming", "-5", "ban"],
            b"".to_vec(),
        ),
        (
            "pps float",
            vec!["10.10.10.1", "incoming", "1e9", "ban"],
            b"".to_vec(),
        ),
        (
            "pps overflow",
            vec!["10.10.10.1", "incoming", "99999999999999999999999", "ban"],
            b"".to_vec(),
        ),
        (
            "pps empty",
            vec!["10.10.10.1", "incoming", "", "ban"],
            b"".to_vec(),
        ),
        (
            "pps of 100 KB",
            vec!["10.10.10.1", "incoming", &long, "ban"],
            b"".to_vec(),
        ),
        (
            "unknown action",
            vec!["10.10.10.1", "incoming", "5", "explode"],
            b"".to_vec(),
        ),
        (
            "JSON-only action in text",
            vec!["10.10.10.1", "incoming", "5", "attack_status"],
            b"".to_vec(),
        ),
        (
            "upper-case action",
            vec!["10.10.10.1", "incoming", "5", "BAN"],
            b"".to_vec(),
        ),
        (
            "truncated JSON on stdin",
            vec![],
            b"{\"action\":\"ban\"".to_vec(),
        ),
        (
            "JSON without an action",
            vec![],
            br#"{"ip":"10.10.10.1"}"#.to_vec(),
        ),
        (
            "JSON with an unknown action",
            vec!["ban", "10.10.10.1"],
            br#"{"action":"nuke","ip":"10.10.10.1"}"#.to_vec(),
        ),
        (
            "JSON with a bad ip",
            vec![],
            br#"{"action":"ban","ip":"10.10.10.300"}"#.to_vec(),
        ),
        ("deeply nested JSON", vec![], deep.into_bytes()),
        ("BOM and broken JSON", vec![], b"\xEF\xBB\xBF{nope".to_vec()),
        (
            "invalid UTF-8 JSON",
            vec![],
            b"{\"action\":\"\xff\"}".to_vec(),
        ),
        (
            "NUL bytes in JSON",
            vec![],
            b"{\"action\":\"ban\0\",\"ip\":\"10.10.10.1\"}".to_vec(),
        ),
        (
            "binary stdin without arguments",
            vec![],
            (0..=255u8).cycle().take(100_000).collect(),
        ),
        (
            "JSON array on stdin",
            vec![],
            br#"[{"action":"ban","ip":"10.10.10.1"}]"#.to_vec(),
        ),
    ];
    let n = cases.len();
    eprintln!("{n} hostile notify calls");
    for (name, args, stdin) in cases {
        let (code, stderr, took) = run_notify(&cfg, &args, &stdin);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(stderr.contains("cannot understand"), "{name}: {stderr}");
        no_panic(name, &stderr);
        assert!(took < IO_BOUND, "{name}: {took:?}");
    }
    assert!(n >= 30);
}

#[test]
fn check_config_refuses_hostile_files_with_exit_1_and_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let deep_array = format!("[server]\nlisten = {}\n", nested("[", "]", 100_000, ""));
    let deep_table = format!("x = {}\n", nested("{a=", "}", 100_000, "1"));
    let dotted = format!("{} = 1\n", vec!["a"; 100_000].join("."));
    let many_tables: String = (0..20_000).map(|i| format!("[t{i}]\n")).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unclosed table header", b"[server\nlisten = 1\n".to_vec()),
        (
            "listen of the wrong type",
            b"[server]\nlisten = 5\n".to_vec(),
        ),
        (
            "listen not an address",
            b"[server]\nlisten = \"nope\"\n".to_vec(),
        ),
        (
            "listen port out of range",
            b"[server]\nlisten = \"127.0.0.1:99999\"\n".to_vec(),
        ),
        (
            "negative body limit",
            b"[server]\nmax_body_bytes = -1\n".to_vec(),
        ),
        (
            "body limit 1e99",
            b"[server]\nmax_body_bytes = 1e99\n".to_vec(),
        ),
        (
            "body limit overflow",
            b"[server]\nmax_body_bytes = 99999999999999999999999\n".to_vec(),
        ),
        (
            "body limit a string",
            b"[server]\nmax_body_bytes = \"big\"\n".to_vec(),
        ),
        (
            "timeout not a duration",
            b"[server]\nrequest_timeout = \"forever\"\n".to_vec(),
        ),
        (
            "negative timeout",
            b"[server]\nrequest_timeout = \"-1s\"\n".to_vec(),
        ),
        (
            "timeout overflow",
            b"[server]\nrequest_timeout = \"99999999999999999999999y\"\n".to_vec(),
        ),
        (
            "token without a secret",
            b"[[auth.tokens]]\nname = \"x\"\nrole = \"admin\"\n".to_vec(),
        ),
        (
            "unknown role",
            b"[[auth.tokens]]\nname = \"x\"\ntoken = \"y\"\nrole = \"god\"\n".to_vec(),
        ),
        (
            "network with a bad length",
            b"[networks]\nours = [\"10.0.0.0/33\"]\n".to_vec(),
        ),
        (
            "network not a prefix",
            b"[networks]\nours = [\"nope\"]\n".to_vec(),
        ),
        (
            "networks a string",
            b"[networks]\nours = \"10.0.0.0/8\"\n".to_vec(),
        ),
        (
            "prefix length 300",
            b"[escalation]\nipv4_prefix_length = 300\n".to_vec(),
        ),
        (
            "prefix length -1",
            b"[escalation]\nipv4_prefix_length = -1\n".to_vec(),
        ),
        ("unknown section", b"[bogus]\nx = 1\n".to_vec()),
        (
            "unknown key",
            b"[server]\nlisten_everywhere = true\n".to_vec(),
        ),
        (
            "unknown backend",
            b"[bgp]\nbackend = \"carrier-pigeon\"\n".to_vec(),
        ),
        (
            "bad community",
            b"[bgp]\ncommunities = [\"x:y\"]\n".to_vec(),
        ),
        (
            "duplicate key",
            b"[server]\nlisten = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:2\"\n".to_vec(),
        ),
        ("duplicate table", b"[server]\n[server]\n".to_vec()),
        ("deeply nested array", deep_array.into_bytes()),
        ("deeply nested inline table", deep_table.into_bytes()),
        ("100000 dotted key parts", dotted.into_bytes()),
        ("20000 unknown tables", many_tables.into_bytes()),
        (
            "invalid UTF-8",
            b"[server]\nlisten = \"\xff\xfe\"\n".to_vec(),
        ),
        ("NUL bytes", b"\0\0\0\0".to_vec()),
        ("binary junk", (0..=255u8).cycle().take(65_536).collect()),
        (
            "JSON instead of TOML",
            br#"{"server":{"listen":"127.0.0.1:1"}}"#.to_vec(),
        ),
        (
            "NUL in a string",
            b"[server]\ndatabase = \"a\\u0000b\"\nlisten = 1\n".to_vec(),
        ),
    ];
    let n = cases.len();
    eprintln!("{n} hostile config files and 2 paths that are not files");
    for (i, (name, text)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, &text).expect("write");
        let args = [
            std::ffi::OsStr::new("check-config"),
            "--config".as_ref(),
            path.as_os_str(),
        ];
        let (code, stderr) = run_bounded(&args, b"");
        assert_eq!(code, 1, "{name}: {stderr}");
        assert!(stderr.starts_with("fnm-escalator: "), "{name}: {stderr}");
        assert!(
            stderr.len() < 64 * 1024,
            "{name}: {} bytes of stderr",
            stderr.len()
        );
        no_panic(name, &stderr);
    }
    // Not a file at all.
    for (name, path) in [
        ("missing file", dir.path().join("missing.toml")),
        ("a directory", dir.path().to_path_buf()),
    ] {
        let args = [
            std::ffi::OsStr::new("check-config"),
            "--config".as_ref(),
            path.as_os_str(),
        ];
        let (code, stderr) = run_bounded(&args, b"");
        assert_eq!(code, 1, "{name}: {stderr}");
        assert!(
            stderr.contains("cannot read config file"),
            "{name}: {stderr}"
        );
        no_panic(name, &stderr);
    }
    assert!(n >= 30);
}
