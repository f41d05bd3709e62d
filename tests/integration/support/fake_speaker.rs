//! A speaker that records what it is asked and can be told to fail, for checker tests that are
//! about the ledger rather than BGP.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use fnm_escalator::bgp::{BgpError, RibPath, Route, Speaker, SpeakerHealth, Withdrawn};

#[derive(Default)]
pub struct FakeSpeaker {
    pub rib: Mutex<Vec<Route>>,
    pub calls: Mutex<Vec<String>>,
    pub down: AtomicBool,
}

impl FakeSpeaker {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn prefixes(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .rib
            .lock()
            .expect("lock")
            .iter()
            .map(|r| r.prefix.to_string())
            .collect();
        v.sort();
        v
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }

    fn check(&self) -> Result<(), BgpError> {
        if self.down.load(Ordering::SeqCst) {
            Err(BgpError::Unreachable("fake speaker is down".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Speaker for FakeSpeaker {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn announce(&self, route: &Route) -> Result<(), BgpError> {
        self.calls
            .lock()
            .expect("lock")
            .push(format!("announce {}", route.prefix));
        self.check()?;
        let mut rib = self.rib.lock().expect("lock");
        rib.retain(|r| r.prefix != route.prefix);
        rib.push(route.clone());
        Ok(())
    }

    async fn withdraw(&self, route: &Route) -> Result<Withdrawn, BgpError> {
        self.calls
            .lock()
            .expect("lock")
            .push(format!("withdraw {}", route.prefix));
        self.check()?;
        let mut rib = self.rib.lock().expect("lock");
        let before = rib.len();
        rib.retain(|r| r.prefix != route.prefix);
        Ok(if rib.len() < before {
            Withdrawn::Removed
        } else {
            Withdrawn::Absent
        })
    }

    async fn list(&self) -> Result<Option<Vec<RibPath>>, BgpError> {
        self.check()?;
        Ok(Some(
            self.rib
                .lock()
                .expect("lock")
                .iter()
                .map(|r| RibPath {
                    prefix: r.prefix,
                    next_hop: Some(r.next_hop),
                    communities: r.communities.clone(),
                    large_communities: r.large_communities.clone(),
                })
                .collect(),
        ))
    }

    async fn health(&self) -> SpeakerHealth {
        SpeakerHealth {
            backend: "fake",
            reachable: !self.down.load(Ordering::SeqCst),
            peers: Vec::new(),
            detail: None,
        }
    }
}
