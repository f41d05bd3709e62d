//! The BGP speaker side: what a route of ours looks like, and the `Speaker` trait that every
//! backend (gobgpd over gRPC, ExaBGP through its process API, exec'd commands, none) implements.
//! The checker only ever talks to this trait.

pub mod exabgp;
pub mod exec;
pub mod gobgp;
pub mod none;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use async_trait::async_trait;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// RFC 1997 community, `ASN:VALUE` with two 16-bit halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    pub fn new(asn: u16, value: u16) -> Self {
        Community((u32::from(asn) << 16) | u32::from(value))
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xffff)
    }
}

impl FromStr for Community {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, v) = s.split_once(':').ok_or_else(|| {
            format!("`{s}` is not a community: expected ASN:VALUE like 65001:777")
        })?;
        let a: u16 = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: ASN part must be 0..=65535"))?;
        let v: u16 = v
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: value part must be 0..=65535"))?;
        Ok(Community::new(a, v))
    }
}

impl Serialize for Community {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Community {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// RFC 8092 large community, `GLOBAL:LOCAL1:LOCAL2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    pub global_admin: u32,
    pub local_data1: u32,
    pub local_data2: u32,
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.global_admin, self.local_data1, self.local_data2
        )
    }
}

impl FromStr for LargeCommunity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 3 {
            return Err(format!(
                "`{s}` is not a large community: expected GLOBAL:LOCAL1:LOCAL2 like 65001:1:777"
            ));
        }
        let n = |p: &str| {
            p.trim()
                .parse::<u32>()
                .map_err(|_| format!("`{s}`: each part must be 0..=4294967295"))
        };
        Ok(LargeCommunity {
            global_admin: n(parts[0])?,
            local_data1: n(parts[1])?,
            local_data2: n(parts[2])?,
        })
    }
}

impl Serialize for LargeCommunity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LargeCommunity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A route as we announce it: the prefix plus the attributes that mark it as ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub prefix: IpNet,
    pub next_hop: IpAddr,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
}

impl Route {
    /// Whether a path seen in the speaker's RIB carries exactly our attributes for this prefix
    /// (order of communities does not matter).
    pub fn matches(&self, seen: &RibPath) -> bool {
        let mut a = self.communities.clone();
        let mut b = seen.communities.clone();
        a.sort();
        b.sort();
        let mut la = self.large_communities.clone();
        let mut lb = seen.large_communities.clone();
        la.sort();
        lb.sort();
        self.prefix == seen.prefix && Some(self.next_hop) == seen.next_hop && a == b && la == lb
    }
}

/// A path read back from the speaker's RIB (locally originated paths only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RibPath {
    pub prefix: IpNet,
    pub next_hop: Option<IpAddr>,
    pub communities: Vec<Community>,
    pub large_communities: Vec<LargeCommunity>,
}

/// How the speaker is doing, for `/readyz` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SpeakerHealth {
    pub backend: &'static str,
    pub reachable: bool,
    /// Peers and their session state (`established`, `active`, ...), when the backend knows.
    pub peers: Vec<PeerState>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PeerState {
    pub address: String,
    pub state: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    /// The speaker could not be reached or the call timed out: worth retrying.
    #[error("BGP speaker unreachable: {0}")]
    Unreachable(String),
    /// The speaker answered with an error.
    #[error("BGP speaker refused the request: {0}")]
    Rejected(String),
    /// The prefix is already in the speaker's RIB with attributes that are not ours: announcing
    /// would replace someone else's route, withdrawing would delete it.
    #[error("{prefix} is already in the speaker's RIB with foreign attributes; not touching it")]
    ForeignRoute { prefix: IpNet },
}

/// What a withdrawal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawn {
    /// Our path was there and is gone now.
    Removed,
    /// The prefix was not in the RIB (nothing to do).
    Absent,
    /// A path with this prefix is there but not ours; it was left alone.
    LeftForeign,
}

/// A BGP speaker we announce through. Implementations must never withdraw a path whose
/// attributes are not ours, and must never send a request that could delete more than the
/// one path named.
#[async_trait]
pub trait Speaker: Send + Sync {
    /// Short backend name (`gobgp`, `exabgp`, `exec`, `none`).
    fn name(&self) -> &'static str;

    /// Announce (or re-announce, idempotently) one route.
    async fn announce(&self, route: &Route) -> Result<(), BgpError>;

    /// Withdraw one route of ours; a path with this prefix but other attributes is left alone.
    async fn withdraw(&self, route: &Route) -> Result<Withdrawn, BgpError>;

    /// The locally originated paths in the speaker's RIB, of both families. `None` when the
    /// backend cannot read its RIB back (then reconciliation re-sends the desired state).
    async fn list(&self) -> Result<Option<Vec<RibPath>>, BgpError>;

    async fn health(&self) -> SpeakerHealth;

    /// Announce many routes at once (thousands when a carpet-bombing attack bans a whole
    /// network); results in input order. Backends that can pipeline override this.
    async fn announce_batch(&self, routes: &[Route]) -> Vec<Result<(), BgpError>> {
        let mut out = Vec::with_capacity(routes.len());
        for r in routes {
            out.push(self.announce(r).await);
        }
        out
    }
}
