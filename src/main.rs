//! Thin: parse the command line, set up logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use fnm_escalator::cli::client::{self, encode_prefix, print, table, ApiClient};
use fnm_escalator::cli::{check_config, notify, Cli, Command};
use fnm_escalator::config::Config;
use serde_json::{json, Value};

/// jemalloc instead of the C library's malloc. A notification is allocated on an HTTP worker and
/// freed on the recorder thread (its answer the other way round); glibc then takes the other
/// thread's arena lock for each free, and under a carpet-bombing load the allocator and those
/// locks' futex wake-ups were a fifth of the service's time (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (before `main`). A background thread gives
/// freed memory back to the system a quarter of a second after it was last used, so the
/// resident size follows the load down when a burst is over; two arenas, not eight, for a lower
/// peak during one (target 5 of the benchmarks: 28 MiB settled and a 52 MiB peak, against 37–40
/// and 56–59 with a second's decay and jemalloc's arena count, at the same CPU per
/// notification). `_RJEM_MALLOC_CONF` in the environment still overrides these.
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: Option<&'static u8> =
    Some(&b"background_thread:true,dirty_decay_ms:250,muzzy_decay_ms:0,narenas:2\0"[0]);

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

/// SQLite's memory from the service's allocator too, and without SQLite's memory statistics
/// (on by default: every allocation SQLite makes then takes one process-wide mutex; nothing here
/// reads them). Under ingest load the recorder spent 8% of its time in glibc's malloc and that
/// mutex. Must run before SQLite is first used; if it is too late, SQLite keeps its defaults and
/// says so (SQLITE_MISUSE), which is logged and otherwise harmless.
mod sqlite_memory {
    use std::os::raw::{c_int, c_void};

    use rusqlite::ffi;

    use tikv_jemalloc_sys::{free, malloc, malloc_usable_size, realloc};

    fn size(n: c_int) -> usize {
        usize::try_from(n).unwrap_or(0)
    }

    unsafe extern "C" fn x_malloc(n: c_int) -> *mut c_void {
        malloc(size(n))
    }

    unsafe extern "C" fn x_free(p: *mut c_void) {
        free(p)
    }

    unsafe extern "C" fn x_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
        realloc(p, size(n))
    }

    unsafe extern "C" fn x_size(p: *mut c_void) -> c_int {
        c_int::try_from(malloc_usable_size(p)).unwrap_or(c_int::MAX)
    }

    unsafe extern "C" fn x_roundup(n: c_int) -> c_int {
        n.checked_add(7).map_or(n, |m| m & !7)
    }

    unsafe extern "C" fn x_init(_: *mut c_void) -> c_int {
        ffi::SQLITE_OK
    }

    unsafe extern "C" fn x_shutdown(_: *mut c_void) {}

    /// Call on the main thread before any other thread starts (`sqlite3_config` is not
    /// thread-safe and only allowed before SQLite initialises).
    pub fn configure() -> Result<(), String> {
        let methods = ffi::sqlite3_mem_methods {
            xMalloc: Some(x_malloc),
            xFree: Some(x_free),
            xRealloc: Some(x_realloc),
            xSize: Some(x_size),
            xRoundup: Some(x_roundup),
            xInit: Some(x_init),
            xShutdown: Some(x_shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: called once from `serve` before the runtime and its threads exist, so no
        // other SQLite call runs concurrently; SQLite copies `methods` before returning.
        let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MALLOC, &methods as *const _) };
        if rc != ffi::SQLITE_OK {
            return Err(format!("SQLITE_CONFIG_MALLOC: error {rc}"));
        }
        // SAFETY: as above.
        let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int) };
        if rc != ffi::SQLITE_OK {
            return Err(format!("SQLITE_CONFIG_MEMSTATUS: error {rc}"));
        }
        Ok(())
    }
}

fn serve(config: Option<std::path::PathBuf>, log_json: bool) -> Result<(), String> {
    let sqlite_memory = sqlite_memory::configure();
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
