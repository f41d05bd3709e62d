//! fnm-escalator: receives FastNetMon ban notifications and traffic counters, decides when a
//! blackholed host's covering prefix must be escalated, and announces it through a BGP speaker.
//!
//! Flow: `fastnetmon` (inputs) -> `store` (SQLite) -> `decision` (pure policy) -> `checker`
//! (the loop) -> `bgp` (speakers); `sources` polls FastNetMon's APIs for the ban list and live
//! counters; `api` serves status and overrides on the side; `spool` holds what the notify command
//! could not deliver; `retention` keeps the sample history bounded.

pub mod api;
pub mod bgp;
pub mod checker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decision;
pub mod fastnetmon;
pub mod metrics;
pub mod retention;
pub mod sources;
pub mod spool;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::auth::Tokens;
use crate::api::{AppState, Shared};
use crate::bgp::Speaker;
use crate::checker::{Checker, CheckerHandle};
use crate::config::{Backend, Config};
use crate::decision::Policy;
use crate::sources::advanced::AdvancedPoller;
use crate::sources::community::CommunityPoller;
use crate::sources::Sources;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Bgp(#[from] bgp::BgpError),
    #[error("server error: {0}")]
    Serve(#[from] std::io::Error),
    #[error("FastNetMon source: {0}")]
    Source(String),
}

/// Builds the configured speaker. Connecting is lazy: the service starts while gobgpd is down
/// (the ExaBGP backend binds its socket here, so a socket in use stops start-up).
pub fn speaker(config: &Config) -> Result<Arc<dyn Speaker>, bgp::BgpError> {
    Ok(match config.bgp.backend {
        Backend::None => Arc::new(bgp::none::NoneSpeaker),
        Backend::Gobgp => Arc::new(bgp::gobgp::GobgpSpeaker::new(
            &config.bgp.gobgp_api,
            config.bgp.timeout,
        )?),
        Backend::Exabgp => Arc::new(bgp::exabgp::ExabgpSpeaker::new(
            &config.bgp.exabgp_socket,
            config.bgp.timeout,
        )?),
        Backend::Exec => Arc::new(bgp::exec::ExecSpeaker::new(
            &config.bgp.exec,
            config.bgp.timeout,
        )?),
    })
}

/// Runs the service on `listener` until `shutdown` completes: the API, the checker, the spool
/// sweeper, the FastNetMon pollers and sample retention. Production binds the configured
/// address; tests bind `127.0.0.1:0`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let config = Arc::new(config);
    let store = Store::open(&config.server.database).await?;
    let speaker = speaker(&config)?;
    run_with(config, store, speaker, listener, shutdown).await
}

/// As `run`, with the store and speaker given (tests inject their own).
pub async fn run_with(
    config: Arc<Config>,
    store: Store,
    speaker: Arc<dyn Speaker>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let policy = Arc::new(Policy::from_config(&config));
    let handle = CheckerHandle::new(config.clone());
    let (stop_tx, stop_rx) = watch::channel(false);

    // The pollers are built first: a bad source setting fails start-up before anything runs.
    let sources = Sources::new(&config, clock::now_ms());
    let advanced = AdvancedPoller::new(
        &config,
        store.clone(),
        policy.clone(),
        handle.clone(),
        sources.advanced.clone(),
    )
    .map_err(|e| RunError::Source(e.to_string()))?;
    let community = CommunityPoller::new(
        &config,
        store.clone(),
        handle.clone(),
        sources.community.clone(),
    )
    .map_err(RunError::Source)?;

    let checker = Checker::new(
        store.clone(),
        speaker.clone(),
        config.clone(),
        policy.clone(),
        handle.clone(),
    );
    let mut tasks = vec![tokio::spawn(checker.run(stop_rx.clone()))];
    tasks.push(tokio::spawn(cli::notify::sweep_loop(
        store.clone(),
        config.spool_dir(),
        config.server.spool_sweep_interval,
        handle.clone(),
        stop_rx.clone(),
    )));
    if let Some(poller) = advanced {
        tasks.push(tokio::spawn(poller.run(stop_rx.clone())));
    }
    if let Some(poller) = community {
        tasks.push(tokio::spawn(poller.run(stop_rx.clone())));
    }
    tasks.push(tokio::spawn(api::notifications::log_held_back(
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(retention::run(
        store.clone(),
        config.samples.clone(),
        stop_rx,
    )));

    let state = AppState::new(Shared {
        config: config.clone(),
        policy,
        store: store.clone(),
        tokens: Tokens::new(config.auth.tokens.clone()),
        checker: handle,
        speaker,
        sources,
    });
    if state.tokens.is_open() {
        tracing::warn!(
            "no auth.tokens configured: the API is open to anyone who can reach {}",
            config.server.listen
        );
    }
    tracing::info!(
        listen = %listener.local_addr()?,
        backend = config.bgp.backend.as_str(),
        dry_run = config.escalation.dry_run,
        "fnm-escalator serving"
    );
    // Silent connections (stalled headers, idle keep-alive) are closed a second after a
    // request would have timed out.
    let idle = config.server.request_timeout + Duration::from_secs(1);
    let listener = api::idle::IdleListener::new(listener, idle);
    let served = axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = stop_tx.send(true);
    for task in tasks {
        if tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .is_err()
        {
            tracing::warn!("a background task did not stop within 10 s");
        }
    }
    store.close().await;
    served?;
    Ok(())
}
