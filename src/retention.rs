//! Sample retention: traffic history older than `samples.retention` is deleted in small batches,
//! so a push every second does not grow the database without limit. The newest sample per host
//! (all the decision reads) is never touched.

use std::time::Duration;

use tokio::sync::watch;

use crate::clock::{ms, now_ms, Millis};
use crate::config::Samples;
use crate::store::{Store, StoreError};

/// Rows per DELETE: each batch is its own short write, so notifications get the writer between.
pub const BATCH: i64 = 5000;

/// How often history is swept: a tenth of the retention, between 1 s and 1 min.
pub fn sweep_interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Deletes history older than `before`; returns how many rows went.
pub async fn prune(store: &Store, before: Millis) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let n = store.prune_samples(before, BATCH).await?;
        total += n;
        if n < BATCH as u64 {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// Sweeps every `sweep_interval` until `shutdown`.
pub async fn run(store: Store, samples: Samples, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(sweep_interval(samples.retention));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {
                let before = now_ms() - ms(samples.retention);
                tokio::select! {
                    _ = shutdown.changed() => break,
                    r = prune(&store, before) => match r {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(deleted = n, "expired traffic history"),
                        Err(e) => tracing::warn!(error = %e, "expiring traffic history failed"),
                    },
                }
            }
        }
        if *shutdown.borrow() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_interval_is_bounded() {
        assert_eq!(
            sweep_interval(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(100)),
            Duration::from_secs(10)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
    }
}
