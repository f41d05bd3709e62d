//! Everything FastNetMon speaks, turned into our own terms: the JSON notification (Advanced web
//! callback and JSON notify script), the notify-script conventions (Community / text argv and
//! report), and the InfluxDB line protocol of its counter export.

pub mod line_protocol;
pub mod notification;
pub mod script;

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// What a notification asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Ban,
    Unban,
    /// Advanced's periodic "still under attack" update; traffic figures are not refreshed.
    AttackStatus,
    /// Community 1.2.4/1.2.5: the report again, with a packet dump, 1-2 s after `ban`.
    AttackDetails,
    /// Advanced Flow Spec mode.
    PartialBlock,
    PartialUnblock,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Ban => "ban",
            Action::Unban => "unban",
            Action::AttackStatus => "attack_status",
            Action::AttackDetails => "attack_details",
            Action::PartialBlock => "partial_block",
            Action::PartialUnblock => "partial_unblock",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "ban" => Action::Ban,
            "unban" => Action::Unban,
            "attack_status" => Action::AttackStatus,
            "attack_details" => Action::AttackDetails,
            "partial_block" => Action::PartialBlock,
            "partial_unblock" => Action::PartialUnblock,
            _ => return None,
        })
    }
}

/// Who the notification is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum Scope {
    Host { ip: IpAddr },
    Hostgroup { name: String, networks: Vec<IpNet> },
}

/// Traffic rates, always in bits and packets per second (FastNetMon's JSON carries bytes per
/// second; the conversion happens in the parser, once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub in_bps: u64,
    pub out_bps: u64,
    pub in_pps: u64,
    pub out_pps: u64,
}

/// One FastNetMon notification, parsed and normalised. Every field but `action` and `scope` is
/// optional: FastNetMon versions differ in what they send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub action: Action,
    #[serde(flatten)]
    pub scope: Scope,
    pub attack_uuid: Option<String>,
    /// `incoming`, `outgoing`, `internal`, `other`, `unknown`.
    pub direction: Option<String>,
    pub attack_type: Option<String>,
    pub protocol: Option<String>,
    pub severity: Option<String>,
    /// `automatic`, `manual`, `other`.
    pub detection_source: Option<String>,
    /// Traffic at detection time, when the notification carries it.
    pub traffic: Option<Traffic>,
    /// Flow Spec rule uuids (partial_block / partial_unblock).
    pub flow_spec_rules: Vec<String>,
}

/// Why FastNetMon input was rejected. The message names the field or argument at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all, or truncated.
    #[error("malformed JSON: {0}")]
    Syntax(String),
    /// Valid syntax but a field has the wrong type or value.
    #[error("invalid field `{field}`: {reason}")]
    Field { field: String, reason: String },
    /// Notify-script argv or text report that fits no known convention.
    #[error("{0}")]
    Script(String),
}
