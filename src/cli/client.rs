//! The client commands: a thin layer over the REST API with aligned tables, or the API's JSON
//! with `--json`. URL and token come from flags, the environment, or the config file.

use std::time::Duration;

use serde_json::Value;

use super::ClientArgs;
use crate::config::{Config, Role};

pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    pub json: bool,
}

impl ApiClient {
    pub fn new(args: &ClientArgs) -> Result<Self, String> {
        let config = match &args.config {
            Some(p) => Config::load(Some(p)).map_err(|e| e.to_string())?,
            None => Config::load(None).unwrap_or_default(),
        };
        let token = args.token.clone().or_else(|| {
            let by = |r| config.auth.tokens.iter().find(|t| t.role == r);
            by(Role::Admin)
                .or_else(|| by(Role::Read))
                .map(|t| t.token.clone())
        });
        let base = args
            .url
            .clone()
            .unwrap_or_else(|| config.notify_url())
            .trim_end_matches('/')
            .to_string();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(ApiClient {
            http,
            base,
            token,
            json: args.json,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, String> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| format!("cannot reach the service at {}: {e}", self.base))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() || status.as_u16() == 503 && body.get("status").is_some() {
            Ok(body)
        } else {
            let err = body["error"].as_str().unwrap_or("request failed");
            let detail = match &body["detail"] {
                Value::Null => String::new(),
                Value::String(s) => format!(": {s}"),
                other => format!(": {other}"),
            };
            Err(format!("{status}: {err}{detail}"))
        }
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, String> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<Value, String> {
        self.send(
            self.http
                .delete(format!("{}{path}", self.base))
                .query(query),
        )
        .await
    }
}

/// Percent-encodes a prefix for a path segment (`/` -> `%2F`).
pub fn encode_prefix(p: &str) -> String {
    p.replace('/', "%2F")
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// An aligned table of `columns` (header, JSON pointer) over `rows`.
pub fn table(rows: &[Value], columns: &[(&str, &str)]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|(_, ptr)| cell(r.pointer(ptr).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.len()).collect();
    for row in &cells {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |vals: Vec<String>| {
        vals.iter()
            .enumerate()
            .map(|(i, v)| format!("{:width$}", v, width = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(columns.iter().map(|(h, _)| h.to_string()).collect())];
    out.extend(cells.into_iter().map(line));
    out.join("\n")
}

pub fn print(client: &ApiClient, value: &Value, human: impl FnOnce(&Value) -> String) {
    if client.json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        );
    } else {
        println!("{}", human(value));
    }
}

pub const HOST_COLUMNS: [(&str, &str); 7] = [
    ("IP", "/ip"),
    ("STATE", "/state"),
    ("BANNED AT", "/banned_at"),
    ("PREFIX", "/covering_prefix"),
    ("IN MBPS", "/traffic/in_mbps"),
    ("IN PPS", "/traffic/in_pps"),
    ("AGE S", "/traffic/age_seconds"),
];

pub const ESCALATION_COLUMNS: [(&str, &str); 7] = [
    ("PREFIX", "/prefix"),
    ("STATE", "/state"),
    ("ORIGIN", "/origin"),
    ("SINCE", "/created_at"),
    ("HOSTS", "/hosts"),
    ("RULE", "/rule"),
    ("REASON", "/reason"),
];

pub const EVENT_COLUMNS: [(&str, &str); 5] = [
    ("ID", "/id"),
    ("AT", "/at"),
    ("ACTOR", "/actor"),
    ("KIND", "/kind"),
    ("MESSAGE", "/message"),
];
