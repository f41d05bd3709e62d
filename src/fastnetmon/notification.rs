//! FastNetMon Advanced's JSON notification (web callback and JSON notify script) turned into a
//! [`Notification`]. Versions differ in what they send, so every detail is optional and unknown
//! fields are ignored; when something is wrong, the error names the JSON field at fault.

use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Action, Notification, ParseError, Scope, Traffic};

const ALL_ACTIONS: [Action; 6] = [
    Action::Ban,
    Action::Unban,
    Action::AttackStatus,
    Action::AttackDetails,
    Action::PartialBlock,
    Action::PartialUnblock,
];

/// A struct that must come as a JSON object: serde's derived structs also accept a JSON array
/// (fields by position), which FastNetMon never sends and which would mis-read `["ban", ip]`.
#[derive(Debug)]
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(ObjectOnly)
    }
}

/// The top-level document. Every field is optional here; `build` decides what is required.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawDocument {
    action: Option<String>,
    ip: Option<String>,
    alert_scope: Option<String>,
    hostgroup_name: Option<String>,
    hostgroup_networks: Option<Vec<Option<String>>>,
    attack_details: Option<ObjectOnly<RawDetails>>,
    flow_spec_rules: Option<Vec<Option<ObjectOnly<RawFlowSpecRule>>>>,
}

/// The `attack_details` block: only the fields we use. Traffic figures are bytes per second,
/// `*_bits` bits per second (2024+ payloads carry both).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawDetails {
    attack_uuid: Option<String>,
    attack_severity: Option<String>,
    attack_type: Option<String>,
    attack_direction: Option<String>,
    attack_detection_threshold_direction: Option<String>,
    attack_protocol: Option<String>,
    attack_detection_source: Option<String>,
    total_incoming_traffic: Option<u64>,
    total_outgoing_traffic: Option<u64>,
    total_incoming_traffic_bits: Option<u64>,
    total_outgoing_traffic_bits: Option<u64>,
    total_incoming_pps: Option<u64>,
    total_outgoing_pps: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawFlowSpecRule {
    uuid: Option<String>,
}

/// Parses one FastNetMon JSON notification exactly as FastNetMon sends it.
pub fn parse_json(body: &[u8]) -> Result<Notification, ParseError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    // Parsed first without tracking where the parser is (the tracking was a quarter of the
    // parse of a small notification, a tenth of an Advanced one of 19 KB, paid by every
    // notification); only a document that fails is parsed again with it, for an error that
    // names the field.
    if let Ok(ObjectOnly(raw)) = serde_json::from_slice::<ObjectOnly<RawDocument>>(body) {
        return build(raw);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let ObjectOnly(raw): ObjectOnly<RawDocument> =
        serde_path_to_error::deserialize(&mut de).map_err(map_serde_error)?;
    de.end().map_err(|e| ParseError::Syntax(e.to_string()))?;
    build(raw)
}

fn map_serde_error(err: serde_path_to_error::Error<serde_json::Error>) -> ParseError {
    let at_root = err.path().iter().next().is_none();
    let field = err.path().to_string();
    let inner = err.into_inner();
    match inner.classify() {
        // A type error below the root names its field; at the root it means "not an object".
        serde_json::error::Category::Data if !at_root => ParseError::Field {
            field,
            reason: inner.to_string(),
        },
        _ => ParseError::Syntax(inner.to_string()),
    }
}

fn field_error(field: impl Into<String>, reason: impl Into<String>) -> ParseError {
    ParseError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

fn accepted_actions() -> String {
    ALL_ACTIONS
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// At most 64 characters of `s`, for error messages about untrusted input.
pub(crate) fn snippet(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if s.chars().nth(64).is_some() {
        out.push('…');
    }
    out
}

/// A single host address: bare, or with the full-length prefix FastNetMon sometimes appends
/// (`/32` for IPv4, `/128` for IPv6). Surrounding whitespace is ignored.
pub(crate) fn parse_host_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    match s.split_once('/') {
        None => s.parse().ok(),
        Some((addr, len)) => {
            let ip: IpAddr = addr.parse().ok()?;
            let full = match ip {
                IpAddr::V4(_) => "32",
                IpAddr::V6(_) => "128",
            };
            (len == full).then_some(ip)
        }
    }
}

fn build(raw: RawDocument) -> Result<Notification, ParseError> {
    let action_text = raw.action.ok_or_else(|| {
        field_error(
            "action",
            format!("missing; expected one of {}", accepted_actions()),
        )
    })?;
    let action = Action::parse(action_text.trim()).ok_or_else(|| {
        field_error(
            "action",
            format!(
                "unknown action `{}`; expected one of {}",
                snippet(&action_text),
                accepted_actions()
            ),
        )
    })?;

    let scope = match raw.alert_scope.as_deref().map(str::trim) {
        None | Some("") => host_scope(raw.ip.as_deref())?,
        Some(s) if s.eq_ignore_ascii_case("host") => host_scope(raw.ip.as_deref())?,
        Some(s) if s.eq_ignore_ascii_case("hostgroup") => {
            hostgroup_scope(raw.hostgroup_name, raw.hostgroup_networks)?
        }
        Some(other) => {
            return Err(field_error(
                "alert_scope",
                format!(
                    "unknown scope `{}`; expected `host` or `hostgroup`",
                    snippet(other)
                ),
            ))
        }
    };

    let details = raw.attack_details.map(|d| d.0).unwrap_or_default();
    let traffic = traffic_of(&details);
    let direction = match details.attack_detection_threshold_direction {
        Some(d) if !d.trim().is_empty() && !d.trim().eq_ignore_ascii_case("unknown") => Some(d),
        threshold => details
            .attack_direction
            .or(threshold.filter(|d| !d.trim().is_empty())),
    };
    let flow_spec_rules = raw
        .flow_spec_rules
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .filter_map(|rule| rule.0.uuid)
        .collect();

    Ok(Notification {
        action,
        scope,
        attack_uuid: details.attack_uuid,
        direction,
        attack_type: details.attack_type,
        protocol: details.attack_protocol,
        severity: details.attack_severity,
        detection_source: details.attack_detection_source,
        traffic,
        flow_spec_rules,
    })
}

fn host_scope(ip: Option<&str>) -> Result<Scope, ParseError> {
    let text = ip.ok_or_else(|| field_error("ip", "missing for a host alert"))?;
    let ip = parse_host_ip(text).ok_or_else(|| {
        field_error(
            "ip",
            format!("`{}` is not an IPv4 or IPv6 host address", snippet(text)),
        )
    })?;
    Ok(Scope::Host { ip })
}

fn hostgroup_scope(
    name: Option<String>,
    networks: Option<Vec<Option<String>>>,
) -> Result<Scope, ParseError> {
    let name =
        name.ok_or_else(|| field_error("hostgroup_name", "missing for a hostgroup alert"))?;
    let mut parsed = Vec::new();
    for (i, text) in networks.unwrap_or_default().into_iter().enumerate() {
        let Some(text) = text else { continue };
        let net = parse_network(&text).ok_or_else(|| {
            field_error(
                format!("hostgroup_networks[{i}]"),
                format!("`{}` is not a network prefix", snippet(&text)),
            )
        })?;
        parsed.push(net);
    }
    Ok(Scope::Hostgroup {
        name,
        networks: parsed,
    })
}

/// A CIDR prefix, host bits cleared (FastNetMon's own sample has `10.10.1.2/16`); a bare address
/// is taken as a host prefix.
pub(crate) fn parse_network(s: &str) -> Option<IpNet> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(net.trunc());
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

fn traffic_of(d: &RawDetails) -> Option<Traffic> {
    let any = [
        d.total_incoming_traffic,
        d.total_outgoing_traffic,
        d.total_incoming_traffic_bits,
        d.total_outgoing_traffic_bits,
        d.total_incoming_pps,
        d.total_outgoing_pps,
    ]
    .iter()
    .any(Option::is_some);
    if !any {
        return None;
    }
    let bits = |bits: Option<u64>, bytes: Option<u64>| {
        bits.or_else(|| bytes.map(|b| b.saturating_mul(8)))
            .unwrap_or(0)
    };
    Some(Traffic {
        in_bps: bits(d.total_incoming_traffic_bits, d.total_incoming_traffic),
        out_bps: bits(d.total_outgoing_traffic_bits, d.total_outgoing_traffic),
        in_pps: d.total_incoming_pps.unwrap_or(0),
        out_pps: d.total_outgoing_pps.unwrap_or(0),
    })
}

/// An Advanced-shaped JSON document for `n`, such that `parse_json` gives `n` back. Traffic is
/// written in bytes per second (as FastNetMon does) and exactly in bits per second (`*_bits`).
pub fn to_json(n: &Notification) -> Value {
    let mut details = Map::new();
    let mut put = |key: &str, value: &Option<String>| {
        if let Some(v) = value {
            details.insert(key.to_owned(), Value::String(v.clone()));
        }
    };
    put("attack_uuid", &n.attack_uuid);
    put("attack_direction", &n.direction);
    put("attack_type", &n.attack_type);
    put("attack_protocol", &n.protocol);
    put("attack_severity", &n.severity);
    put("attack_detection_source", &n.detection_source);
    if let Some(t) = n.traffic {
        let numbers = [
            ("total_incoming_traffic", t.in_bps / 8),
            ("total_outgoing_traffic", t.out_bps / 8),
            ("total_incoming_traffic_bits", t.in_bps),
            ("total_outgoing_traffic_bits", t.out_bps),
            ("total_incoming_pps", t.in_pps),
            ("total_outgoing_pps", t.out_pps),
        ];
        for (key, value) in numbers {
            details.insert(key.to_owned(), Value::from(value));
        }
    }

    let mut doc = Map::new();
    doc.insert("action".into(), Value::from(n.action.as_str()));
    match &n.scope {
        Scope::Host { ip } => {
            doc.insert("ip".into(), Value::String(ip.to_string()));
            doc.insert("alert_scope".into(), Value::from("host"));
            let version = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
            details.insert("protocol_version".into(), Value::from(version));
        }
        Scope::Hostgroup { name, networks } => {
            doc.insert("alert_scope".into(), Value::from("hostgroup"));
            doc.insert("hostgroup_name".into(), Value::String(name.clone()));
            let networks = networks
                .iter()
                .map(|net| Value::String(net.to_string()))
                .collect();
            doc.insert("hostgroup_networks".into(), Value::Array(networks));
        }
    }
    doc.insert("attack_details".into(), Value::Object(details));
    if !n.flow_spec_rules.is_empty() {
        let rules = n
            .flow_spec_rules
            .iter()
            .map(|uuid| {
                let mut rule = Map::new();
                rule.insert("uuid".into(), Value::String(uuid.clone()));
                Value::Object(rule)
            })
            .collect();
        doc.insert("flow_spec_rules".into(), Value::Array(rules));
    }
    Value::Object(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/advanced")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn fixture_value(name: &str) -> Value {
        serde_json::from_slice(&fixture(name)).unwrap()
    }

    fn parse_value(v: &Value) -> Result<Notification, ParseError> {
        parse_json(&serde_json::to_vec(v).unwrap())
    }

    fn field_of(err: ParseError) -> (String, String) {
        match err {
            ParseError::Field { field, reason } => (field, reason),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn ban_host_sample() {
        let n = parse_json(&fixture("ban_host.json")).unwrap();
        assert_eq!(n.action, Action::Ban);
        assert_eq!(
            n.scope,
            Scope::Host {
                ip: "10.154.0.2".parse().unwrap()
            }
        );
        assert_eq!(
            n.attack_uuid.as_deref(),
            Some("56df6f3d-12c2-4249-aeeb-2a44aa731513")
        );
        assert_eq!(n.direction.as_deref(), Some("incoming"));
        assert_eq!(n.attack_type.as_deref(), Some("unknown"));
        assert_eq!(n.protocol.as_deref(), Some("tcp"));
        assert_eq!(n.severity.as_deref(), Some("middle"));
        assert_eq!(n.detection_source.as_deref(), Some("automatic"));
        // Bytes per second in the JSON, bits per second in `Traffic`.
        assert_eq!(
            n.traffic,
            Some(Traffic {
                in_bps: 7_036_735 * 8,
                out_bps: 9_550 * 8,
                in_pps: 175,
                out_pps: 119,
            })
        );
        assert!(n.flow_spec_rules.is_empty());
    }

    #[test]
    fn unban_and_attack_status_variants_of_ban_host() {
        for (text, action) in [
            ("unban", Action::Unban),
            ("attack_status", Action::AttackStatus),
            ("attack_details", Action::AttackDetails),
        ] {
            let mut v = fixture_value("ban_host.json");
            v["action"] = Value::from(text);
            let n = parse_value(&v).unwrap();
            assert_eq!(n.action, action);
            assert_eq!(n.traffic.map(|t| t.in_pps), Some(175));
        }
    }

    #[test]
    fn ban_hostgroup_sample() {
        let n = parse_json(&fixture("ban_hostgroup.json")).unwrap();
        assert_eq!(n.action, Action::Ban);
        assert_eq!(
            n.scope,
            Scope::Hostgroup {
                name: "servers".into(),
                // "10.10.1.2/16" in the sample: host bits cleared.
                networks: vec![
                    "192.168.1.0/24".parse().unwrap(),
                    "10.10.0.0/16".parse().unwrap()
                ],
            }
        );
        assert_eq!(n.direction.as_deref(), Some("other"));
        assert_eq!(n.traffic, Some(Traffic::default()));
    }

    #[test]
    fn partial_block_and_unblock_samples() {
        for (name, action) in [
            ("partial_block.json", Action::PartialBlock),
            ("partial_unblock.json", Action::PartialUnblock),
        ] {
            let n = parse_json(&fixture(name)).unwrap();
            assert_eq!(n.action, action);
            assert_eq!(
                n.scope,
                Scope::Host {
                    ip: "0.0.0.0".parse().unwrap()
                }
            );
            assert_eq!(
                n.flow_spec_rules,
                vec!["3b9c6d60-e737-4d84-8dec-efbae2472d0f".to_string()]
            );
            // threshold direction is "unknown": fall back to attack_direction.
            assert_eq!(n.direction.as_deref(), Some("other"));
            assert_eq!(n.detection_source.as_deref(), Some("manual"));
            assert_eq!(n.protocol.as_deref(), Some("hopopt"));
            assert_eq!(n.traffic, Some(Traffic::default()));
        }
    }

    #[test]
    fn bits_fields_win_over_bytes() {
        let v = serde_json::json!({
            "ip": "192.0.2.1", "action": "ban",
            "attack_details": {
                "total_incoming_traffic": 100, "total_incoming_traffic_bits": 805,
                "total_outgoing_traffic": 3
            }
        });
        let t = parse_value(&v).unwrap().traffic.unwrap();
        assert_eq!(t.in_bps, 805);
        assert_eq!(t.out_bps, 24);
        assert_eq!((t.in_pps, t.out_pps), (0, 0));
    }

    #[test]
    fn bytes_to_bits_saturates() {
        let v = serde_json::json!({
            "ip": "192.0.2.1", "action": "ban",
            "attack_details": { "total_incoming_traffic": u64::MAX }
        });
        assert_eq!(parse_value(&v).unwrap().traffic.unwrap().in_bps, u64::MAX);
    }

    #[test]
    fn minimal_document_and_no_traffic() {
        let n = parse_json(br#"{"ip":"2001:db8::1","action":"unban"}"#).unwrap();
        assert_eq!(n.action, Action::Unban);
        assert_eq!(
            n.scope,
            Scope::Host {
                ip: "2001:db8::1".parse().unwrap()
            }
        );
        assert_eq!(n.traffic, None);
        assert_eq!(n.direction, None);
        // attack_details present but without traffic fields: still None.
        let n = parse_json(
            br#"{"ip":"192.0.2.1","action":"ban","attack_details":{"attack_type":"syn_flood"}}"#,
        )
        .unwrap();
        assert_eq!(n.traffic, None);
        assert_eq!(n.attack_type.as_deref(), Some("syn_flood"));
    }

    #[test]
    fn nulls_are_tolerated() {
        let n = parse_json(
            br#"{"ip":"192.0.2.1","action":"ban","alert_scope":null,"hostgroup_networks":null,
                "flow_spec_rules":[null,{"uuid":null},{"uuid":"u1"}],
                "attack_details":{"attack_uuid":null,"total_incoming_pps":null,"total_outgoing_pps":7,
                                  "attack_direction":null,"attack_severity":null}}"#,
        )
        .unwrap();
        assert_eq!(n.attack_uuid, None);
        assert_eq!(n.flow_spec_rules, vec!["u1".to_string()]);
        assert_eq!(
            n.traffic,
            Some(Traffic {
                out_pps: 7,
                ..Traffic::default()
            })
        );
        let n = parse_json(br#"{"ip":"192.0.2.1","action":"ban","attack_details":null}"#).unwrap();
        assert_eq!(n.traffic, None);
    }

    #[test]
    fn direction_prefers_threshold_direction() {
        let doc = |threshold: Option<&str>, direction: Option<&str>| {
            let mut details = Map::new();
            if let Some(t) = threshold {
                details.insert("attack_detection_threshold_direction".into(), t.into());
            }
            if let Some(d) = direction {
                details.insert("attack_direction".into(), d.into());
            }
            let v = serde_json::json!({"ip":"192.0.2.1","action":"ban","attack_details":details});
            parse_value(&v).unwrap().direction
        };
        assert_eq!(
            doc(Some("outgoing"), Some("incoming")).as_deref(),
            Some("outgoing")
        );
        assert_eq!(
            doc(Some("unknown"), Some("incoming")).as_deref(),
            Some("incoming")
        );
        assert_eq!(doc(Some(""), Some("incoming")).as_deref(), Some("incoming"));
        assert_eq!(doc(None, Some("incoming")).as_deref(), Some("incoming"));
        assert_eq!(doc(Some("unknown"), None).as_deref(), Some("unknown"));
        assert_eq!(doc(Some(""), None), None);
        assert_eq!(doc(None, None), None);
    }

    #[test]
    fn host_ip_forms() {
        for (ip, want) in [
            ("10.0.0.1/32", "10.0.0.1"),
            (" 10.0.0.1 ", "10.0.0.1"),
            ("2001:db8::1/128", "2001:db8::1"),
        ] {
            let v = serde_json::json!({"ip": ip, "action": "ban", "alert_scope": "host"});
            assert_eq!(
                parse_value(&v).unwrap().scope,
                Scope::Host {
                    ip: want.parse().unwrap()
                }
            );
        }
        for ip in [
            "10.0.0.1/24",
            "2001:db8::1/32",
            "10.0.0.256",
            "",
            "host",
            "10.0.0.1/",
        ] {
            let v = serde_json::json!({"ip": ip, "action": "ban"});
            let (field, reason) = field_of(parse_value(&v).unwrap_err());
            assert_eq!(field, "ip", "{ip}: {reason}");
        }
        let (field, _) = field_of(parse_json(br#"{"action":"ban"}"#).unwrap_err());
        assert_eq!(field, "ip");
        let (field, _) = field_of(
            parse_json(br#"{"action":"ban","alert_scope":"host","ip":null}"#).unwrap_err(),
        );
        assert_eq!(field, "ip");
        let (field, _) = field_of(parse_json(br#"{"action":"ban","ip":7}"#).unwrap_err());
        assert_eq!(field, "ip");
    }

    #[test]
    fn hostgroup_errors() {
        let (field, reason) = field_of(
            parse_json(br#"{"action":"ban","alert_scope":"hostgroup","hostgroup_name":"g","hostgroup_networks":["10.0.0.0/8","nope"]}"#)
                .unwrap_err(),
        );
        assert_eq!(field, "hostgroup_networks[1]");
        assert!(reason.contains("nope"), "{reason}");
        let (field, _) = field_of(
            parse_json(br#"{"action":"ban","alert_scope":"hostgroup","hostgroup_name":"g","hostgroup_networks":["10.0.0.0/8",5]}"#)
                .unwrap_err(),
        );
        assert_eq!(field, "hostgroup_networks[1]");
        let (field, _) = field_of(
            parse_json(br#"{"action":"ban","alert_scope":"hostgroup","hostgroup_networks":[]}"#)
                .unwrap_err(),
        );
        assert_eq!(field, "hostgroup_name");
        let (field, reason) = field_of(
            parse_json(br#"{"action":"ban","alert_scope":"subnet","ip":"10.0.0.1"}"#).unwrap_err(),
        );
        assert_eq!(field, "alert_scope");
        assert!(reason.contains("hostgroup"), "{reason}");
    }

    #[test]
    fn action_errors() {
        let (field, reason) =
            field_of(parse_json(br#"{"ip":"10.0.0.1","action":"blackhole"}"#).unwrap_err());
        assert_eq!(field, "action");
        assert!(reason.contains("blackhole"), "{reason}");
        for a in ALL_ACTIONS {
            assert!(reason.contains(a.as_str()), "{reason}");
        }
        let (field, _) = field_of(parse_json(br#"{"ip":"10.0.0.1"}"#).unwrap_err());
        assert_eq!(field, "action");
        let (field, _) = field_of(parse_json(br#"{"ip":"10.0.0.1","action":null}"#).unwrap_err());
        assert_eq!(field, "action");
        let (field, _) =
            field_of(parse_json(br#"{"ip":"10.0.0.1","action":["ban"]}"#).unwrap_err());
        assert_eq!(field, "action");
    }

    #[test]
    fn wrong_types_name_the_field() {
        let mut v = fixture_value("ban_host.json");
        v["attack_details"]["total_incoming_pps"] = Value::from("lots");
        let (field, reason) = field_of(parse_value(&v).unwrap_err());
        assert_eq!(field, "attack_details.total_incoming_pps");
        assert!(reason.contains("invalid type"), "{reason}");

        let mut v = fixture_value("ban_host.json");
        v["attack_details"]["total_outgoing_traffic"] = Value::from(-5);
        let (field, _) = field_of(parse_value(&v).unwrap_err());
        assert_eq!(field, "attack_details.total_outgoing_traffic");

        let mut v = fixture_value("ban_host.json");
        v["attack_details"]["attack_uuid"] = Value::from(12);
        let (field, _) = field_of(parse_value(&v).unwrap_err());
        assert_eq!(field, "attack_details.attack_uuid");

        let mut v = fixture_value("ban_host.json");
        v["attack_details"] = Value::from("x");
        let (field, _) = field_of(parse_value(&v).unwrap_err());
        assert_eq!(field, "attack_details");

        let (field, _) = field_of(
            parse_json(br#"{"ip":"10.0.0.1","action":"ban","attack_details":["u","high"]}"#)
                .unwrap_err(),
        );
        assert_eq!(field, "attack_details");

        let (field, _) = field_of(
            parse_json(br#"{"ip":"10.0.0.1","action":"ban","flow_spec_rules":[["u"]]}"#)
                .unwrap_err(),
        );
        assert_eq!(field, "flow_spec_rules[0]");

        let (field, _) = field_of(
            parse_json(br#"{"ip":"10.0.0.1","action":"ban","flow_spec_rules":[{"uuid":1}]}"#)
                .unwrap_err(),
        );
        assert_eq!(field, "flow_spec_rules[0].uuid");
    }

    #[test]
    fn syntax_errors() {
        for body in [
            &b""[..],
            b"   ",
            b"{",
            b"{\"ip\":",
            b"[]",
            b"[\"ban\", \"10.0.0.1\"]",
            b"42",
            b"\"ban\"",
            b"null",
            b"{} trailing",
            b"\xff\xfe{}",
            b"ip=10.0.0.1",
        ] {
            match parse_json(body) {
                Err(ParseError::Syntax(_)) => {}
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
        // A deeply nested unknown field hits serde_json's recursion limit, not the stack.
        let mut deep = b"{\"ip\":\"10.0.0.1\",\"action\":\"ban\",\"x\":".to_vec();
        deep.extend(std::iter::repeat_n(b'[', 100_000));
        assert!(parse_json(&deep).is_err());
    }

    #[test]
    fn bom_and_whitespace_are_accepted() {
        let n = parse_json(b"\xEF\xBB\xBF \n{\"ip\":\"10.0.0.1\",\"action\":\"ban\"}\n").unwrap();
        assert_eq!(n.action, Action::Ban);
    }

    fn built() -> Vec<Notification> {
        let host = |ip: &str| Scope::Host {
            ip: ip.parse().unwrap(),
        };
        let base = Notification {
            action: Action::Ban,
            scope: host("192.0.2.10"),
            attack_uuid: Some("3f1c2d4e-0000-4000-8000-000000000001".into()),
            direction: Some("incoming".into()),
            attack_type: Some("udp_flood".into()),
            protocol: Some("udp".into()),
            severity: Some("high".into()),
            detection_source: Some("automatic".into()),
            traffic: Some(Traffic {
                in_bps: 29_000_001, // not divisible by 8
                out_bps: 7,
                in_pps: 3625,
                out_pps: 1,
            }),
            flow_spec_rules: vec![],
        };
        vec![
            base.clone(),
            Notification {
                action: Action::AttackDetails,
                scope: host("2001:db8::5"),
                attack_uuid: None,
                direction: Some("unknown".into()),
                attack_type: None,
                protocol: None,
                severity: None,
                detection_source: None,
                traffic: None,
                flow_spec_rules: vec![],
            },
            Notification {
                action: Action::Unban,
                direction: Some(String::new()),
                traffic: Some(Traffic {
                    in_bps: u64::MAX,
                    out_bps: u64::MAX - 1,
                    in_pps: u64::MAX,
                    out_pps: 0,
                }),
                ..base.clone()
            },
            Notification {
                action: Action::PartialBlock,
                flow_spec_rules: vec!["a".into(), "b".into()],
                traffic: Some(Traffic::default()),
                ..base.clone()
            },
            Notification {
                action: Action::AttackStatus,
                scope: Scope::Hostgroup {
                    name: "servers \"quoted\" ünïcode".into(),
                    networks: vec![
                        "10.0.0.0/8".parse().unwrap(),
                        "2001:db8::/32".parse().unwrap(),
                    ],
                },
                direction: None,
                ..base.clone()
            },
            Notification {
                scope: Scope::Hostgroup {
                    name: String::new(),
                    networks: vec![],
                },
                ..base
            },
        ]
    }

    #[test]
    fn to_json_round_trips() {
        let mut all: Vec<Notification> = [
            "ban_host.json",
            "ban_hostgroup.json",
            "partial_block.json",
            "partial_unblock.json",
        ]
        .iter()
        .map(|f| parse_json(&fixture(f)).unwrap())
        .collect();
        all.extend(built());
        for n in all {
            let doc = to_json(&n);
            let back = parse_value(&doc).unwrap_or_else(|e| panic!("{doc}: {e}"));
            assert_eq!(back, n, "{doc}");
        }
    }

    #[test]
    fn to_json_is_advanced_shaped() {
        let n = &built()[0];
        let doc = to_json(n);
        assert_eq!(doc["ip"], "192.0.2.10");
        assert_eq!(doc["action"], "ban");
        assert_eq!(doc["alert_scope"], "host");
        let d = &doc["attack_details"];
        assert_eq!(d["total_incoming_traffic"], 29_000_001 / 8);
        assert_eq!(d["total_incoming_traffic_bits"], 29_000_001);
        assert_eq!(d["total_incoming_pps"], 3625);
        assert_eq!(d["attack_direction"], "incoming");
        assert_eq!(d["attack_detection_source"], "automatic");
        assert_eq!(d["protocol_version"], "IPv4");
        let g = to_json(&built()[4]);
        assert_eq!(g["alert_scope"], "hostgroup");
        assert_eq!(g["hostgroup_networks"][1], "2001:db8::/32");
        assert!(g.get("ip").is_none());
    }
}
