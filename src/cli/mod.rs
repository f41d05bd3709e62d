//! The command line: `serve`, `notify`, `check-config`, `exabgp-bridge`, and a thin client of
//! the REST API.
//! Errors end as one sentence on stderr and a non-zero exit.

pub mod client;
pub mod notify;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "fnm-escalator",
    version,
    about = "Escalates FastNetMon blackholes to covering-prefix BGP announcements"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// Service URL (default: derived from the config's server.listen).
    #[arg(long, env = "FNM_ESCALATOR_URL", global = true)]
    pub url: Option<String>,
    /// API token (default: the config's first admin or read token).
    #[arg(
        long,
        env = "FNM_ESCALATOR_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Config file to read the URL and token from.
    #[arg(long, env = "FNM_ESCALATOR_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (embedded defaults without --config).
    Serve {
        #[arg(long, env = "FNM_ESCALATOR_CONFIG")]
        config: Option<PathBuf>,
        /// Log as JSON lines instead of human-readable text.
        #[arg(long)]
        log_json: bool,
    },
    /// FastNetMon notify-script mode: `<ip> <direction> <pps> <action>` (text) or JSON on stdin.
    Notify {
        #[arg(long, env = "FNM_ESCALATOR_CONFIG")]
        config: Option<PathBuf>,
        /// The arguments FastNetMon passes.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// ExaBGP's API process (`process fnm { run fnm-escalator exabgp-bridge --socket PATH; }`):
    /// relays the service's commands to ExaBGP and ExaBGP's answers back.
    ExabgpBridge {
        /// The service's `bgp.exabgp_socket`.
        #[arg(long, default_value = "/run/fnm-escalator/exabgp.sock")]
        socket: PathBuf,
    },
    /// Validate a config and print the effective settings, secrets redacted.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Service health, ban and escalation counts.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Hosts FastNetMon reported.
    Hosts {
        #[command(flatten)]
        client: ClientArgs,
        /// `banned` or `unbanned`.
        #[arg(long)]
        state: Option<String>,
        /// One host in detail.
        ip: Option<String>,
    },
    /// Escalations (covering prefixes).
    Escalations {
        #[command(flatten)]
        client: ClientArgs,
        /// pending, active, withdrawn, refused, failed.
        #[arg(long)]
        state: Option<String>,
        /// One prefix in detail.
        prefix: Option<String>,
    },
    /// Escalate a prefix by hand (same safety rails as automatic escalation).
    Escalate {
        #[command(flatten)]
        client: ClientArgs,
        prefix: String,
        #[arg(long)]
        reason: String,
        /// How long to hold it, like `2h`; without it, until withdrawn.
        #[arg(long)]
        duration: Option<String>,
    },
    /// Withdraw an escalation by hand.
    Withdraw {
        #[command(flatten)]
        client: ClientArgs,
        prefix: String,
        /// Keep the checker from re-escalating it for this long, like `30m`.
        #[arg(long)]
        suppress: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// The audit log, newest first.
    Events {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        ip: Option<String>,
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// `check-config`: prints the effective config or the issues; exit 1 on any.
pub fn check_config(path: &std::path::Path) -> Result<String, String> {
    Config::load(Some(path))
        .map(|c| c.redacted_toml())
        .map_err(|e| e.to_string())
}
