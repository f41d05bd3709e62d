//! Thin: parse the command line, set up logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use fnm_escalator::cli::client::{self, encode_prefix, print, table, ApiClient};
use fnm_escalator::cli::{check_config, notify, Cli, Command};
use fnm_escalator::config::Config;
use serde_json::{json, Value};

mod allocator;

/// Logs go to stderr (journald under systemd) from a thread of their own: a request that logs
/// only queues its line, so a slow or stalled log reader no longer holds up the handlers, and
/// a burst of bans costs a write per batch of lines, not per line. Nothing is dropped: with
/// 128k lines queued, callers wait as they did before. The guard flushes the queue when
/// `serve` returns.
fn init_logging(json: bool) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("fnm-log")
        // Buffered: the thread flushes whenever it has emptied its queue, so a burst is one
        // write per batch and a lone line goes out at once.
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    // Colours only for a terminal: journald and log files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    guard
}

fn runtime(multi: bool) -> Result<tokio::runtime::Runtime, String> {
    let mut b = if multi {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

fn serve(config: Option<std::path::PathBuf>, log_json: bool) -> Result<(), String> {
    let sqlite_memory = allocator::configure_sqlite();
    let _flush_logs = init_logging(log_json);
    if let Err(e) = sqlite_memory {
        tracing::warn!("SQLite keeps its own allocator: {e}");
    }
    let config = Config::load(config.as_deref()).map_err(|e| e.to_string())?;
    let rt = runtime(true)?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
        fnm_escalator::run(config, listener, shutdown_signal())
            .await
            .map_err(|e| e.to_string())
    })
}

fn client_command(command: Command) -> Result<(), String> {
    let rt = runtime(false)?;
    rt.block_on(async move {
        match command {
            Command::Status { client } => {
                let c = ApiClient::new(&client)?;
                let ready = c.get("/readyz", &[]).await?;
                let banned = c.get("/api/v1/hosts", &[("state", "banned".into()), ("limit", "1".into())]).await?;
                let active = c.get("/api/v1/escalations", &[("state", "active".into()), ("limit", "1000".into())]).await?;
                let value = json!({
                    "ready": ready,
                    "banned_hosts": banned["total"],
                    "active_escalations": active["escalations"].as_array().map(|a| a.len()),
                });
                print(&c, &value, |v| {
                    let degraded = v["ready"]["degraded"]
                        .as_array()
                        .filter(|a| !a.is_empty())
                        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                        .unwrap_or_else(|| "none".into());
                    let mut out = format!(
                        "status:              {}\ndegraded:            {}\nbgp backend:         {} (reachable: {})\nbanned hosts:        {}\nactive escalations:  {}",
                        v["ready"]["status"].as_str().unwrap_or("?"),
                        degraded,
                        v["ready"]["bgp"]["backend"].as_str().unwrap_or("?"),
                        v["ready"]["bgp"]["reachable"],
                        v["banned_hosts"],
                        v["active_escalations"],
                    );
                    if v["ready"]["dry_run"].as_bool() == Some(true) {
                        out.push_str("\ndry run:             yes (nothing is announced)");
                    }
                    out
                });
            }
            Command::Hosts { client, state, ip } => {
                let c = ApiClient::new(&client)?;
                match ip {
                    Some(ip) => {
                        let v = c.get(&format!("/api/v1/hosts/{ip}"), &[]).await?;
                        print(&c, &v, |v| {
                            let mut out = table(std::slice::from_ref(v), &client::HOST_COLUMNS);
                            if let Some(eps) = v["episodes"].as_array() {
                                out.push_str("\n\nban episodes:\n");
                                out.push_str(&table(eps, &[("STARTED", "/started_at"), ("ENDED", "/ended_at"), ("UUID", "/attack_uuid"), ("TYPE", "/attack_type"), ("SOURCE", "/source"), ("NOTIFICATIONS", "/notifications")]));
                            }
                            out
                        });
                    }
                    None => {
                        let mut q = vec![("limit", "1000".to_string())];
                        if let Some(s) = state {
                            q.push(("state", s));
                        }
                        let v = c.get("/api/v1/hosts", &q).await?;
                        print(&c, &v, |v| table(v["hosts"].as_array().map(Vec::as_slice).unwrap_or(&[]), &client::HOST_COLUMNS));
                    }
                }
            }
            Command::Escalations { client, state, prefix } => {
                let c = ApiClient::new(&client)?;
                match prefix {
                    Some(p) => {
                        let v = c.get(&format!("/api/v1/escalations/{}", encode_prefix(&p)), &[]).await?;
                        print(&c, &v, |v| {
                            let mut out = table(std::slice::from_ref(v), &client::ESCALATION_COLUMNS);
                            out.push_str(&format!(
                                "\n\nnext hop {}  communities {}  large {}",
                                v["attributes"]["next_hop"].as_str().unwrap_or("-"),
                                v["attributes"]["communities"],
                                v["attributes"]["large_communities"]
                            ));
                            if let Some(h) = v["history"].as_array() {
                                out.push_str("\n\nhistory:\n");
                                out.push_str(&table(h, &client::ESCALATION_COLUMNS));
                            }
                            out
                        });
                    }
                    None => {
                        let mut q = vec![("limit", "1000".to_string())];
                        if let Some(s) = state {
                            q.push(("state", s));
                        }
                        let v = c.get("/api/v1/escalations", &q).await?;
                        print(&c, &v, |v| table(v["escalations"].as_array().map(Vec::as_slice).unwrap_or(&[]), &client::ESCALATION_COLUMNS));
                    }
                }
            }
            Command::Escalate { client, prefix, reason, duration } => {
                let c = ApiClient::new(&client)?;
                let mut body = json!({ "prefix": prefix, "reason": reason });
                if let Some(d) = duration {
                    body["duration"] = Value::String(d);
                }
                let v = c.post("/api/v1/escalations", &body).await?;
                print(&c, &v, |v| format!("escalation of {} recorded ({}); the checker announces it now", v["prefix"].as_str().unwrap_or("?"), v["state"].as_str().unwrap_or("?")));
            }
            Command::Withdraw { client, prefix, suppress, reason } => {
                let c = ApiClient::new(&client)?;
                let mut q = Vec::new();
                if let Some(s) = suppress {
                    q.push(("suppress", s));
                }
                if let Some(r) = reason {
                    q.push(("reason", r));
                }
                let v = c.delete(&format!("/api/v1/escalations/{}", encode_prefix(&prefix)), &q).await?;
                print(&c, &v, |v| {
                    let mut s = format!("{}: withdrawal requested", v["prefix"].as_str().unwrap_or("?"));
                    if let Some(u) = v["suppressed_until"].as_str() {
                        s.push_str(&format!("; suppressed until {u}"));
                    }
                    s
                });
            }
            Command::Events { client, ip, prefix, since, limit } => {
                let c = ApiClient::new(&client)?;
                let mut q = vec![("limit", limit.to_string())];
                for (k, v) in [("ip", ip), ("prefix", prefix), ("since", since)] {
                    if let Some(v) = v {
                        q.push((k, v));
                    }
                }
                let v = c.get("/api/v1/events", &q).await?;
                print(&c, &v, |v| table(v["events"].as_array().map(Vec::as_slice).unwrap_or(&[]), &client::EVENT_COLUMNS));
            }
            Command::Serve { .. }
            | Command::Notify { .. }
            | Command::CheckConfig { .. }
            | Command::ExabgpBridge { .. } => {}
        }
        Ok(())
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, log_json } => serve(config, log_json),
        Command::Notify { config, args } => {
            let outcome = match runtime(false) {
                Ok(rt) => rt.block_on(notify::run(config, args)),
                Err(e) => notify::NotifyOutcome::Spooled(e),
            };
            return match outcome {
                notify::NotifyOutcome::Delivered => ExitCode::SUCCESS,
                notify::NotifyOutcome::Spooled(why) => {
                    eprintln!("fnm-escalator notify: {why}");
                    ExitCode::SUCCESS
                }
                notify::NotifyOutcome::Rejected(why) => {
                    eprintln!("fnm-escalator notify: {why}");
                    ExitCode::from(2)
                }
            };
        }
        Command::ExabgpBridge { socket } => {
            return fnm_escalator::bgp::exabgp::bridge::main(&socket);
        }
        Command::CheckConfig { config } => match check_config(&config) {
            Ok(text) => {
                print!("{text}");
                Ok(())
            }
            Err(e) => Err(e),
        },
        other => client_command(other),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fnm-escalator: {e}");
            ExitCode::FAILURE
        }
    }
}
