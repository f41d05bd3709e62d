//! The `none` backend: logs what it would announce or withdraw, and announces nothing.
//! Used on the embedded defaults, so the service can run without a BGP speaker.

use async_trait::async_trait;

use super::{BgpError, RibPath, Route, Speaker, SpeakerHealth, Withdrawn};

#[derive(Debug, Default)]
pub struct NoneSpeaker;

#[async_trait]
impl Speaker for NoneSpeaker {
    fn name(&self) -> &'static str {
        "none"
    }

    async fn announce(&self, route: &Route) -> Result<(), BgpError> {
        tracing::info!(
            prefix = %route.prefix,
            next_hop = %route.next_hop,
            communities = ?route.communities.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "bgp backend `none`: would announce"
        );
        Ok(())
    }

    async fn withdraw(&self, route: &Route) -> Result<Withdrawn, BgpError> {
        tracing::info!(prefix = %route.prefix, "bgp backend `none`: would withdraw");
        Ok(Withdrawn::Removed)
    }

    async fn list(&self) -> Result<Option<Vec<RibPath>>, BgpError> {
        Ok(None)
    }

    async fn health(&self) -> SpeakerHealth {
        SpeakerHealth {
            backend: "none",
            reachable: true,
            peers: Vec::new(),
            detail: Some(
                "no BGP speaker configured: decisions are recorded and logged only".into(),
            ),
        }
    }
}
