//! gobgpd backend over its v3 gRPC API (`apipb.GobgpApi`). The channel connects lazily and
//! reconnects by itself, so the service runs while gobgpd is down and recovers when it returns.
//! Paths carry no owner in gobgpd, so every change is preceded by a look-up of the exact prefix:
//! a path whose attributes are not ours is never replaced nor withdrawn.

pub mod api;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use ipnet::IpNet;
use prost_types::Any;
use tokio::task::JoinSet;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use super::{
    BgpError, Community, LargeCommunity, PeerState, RibPath, Route, Speaker, SpeakerHealth,
    Withdrawn,
};
use api::names;

/// How many announces [`GobgpSpeaker::announce_many`] keeps in flight on the one channel.
const MAX_IN_FLIGHT: usize = 64;
/// Prefixes in one lookup request (about 30 bytes each; gRPC's default limit is 4 MiB).
const LOOKUP_CHUNK: usize = 2048;

/// A [`Speaker`] talking to gobgpd's gRPC API. Cheap to clone: clones share one HTTP/2 channel.
#[derive(Clone, Debug)]
pub struct GobgpSpeaker {
    config: Endpoint,
    /// Made on first use: a tonic channel spawns its worker on the current tokio runtime, and
    /// `new` may run before there is one.
    channel: Arc<OnceLock<Channel>>,
    endpoint: String,
    timeout: Duration,
}

impl GobgpSpeaker {
    /// `endpoint` is gobgpd's API address, `host:port` (as given to `gobgpd --api-hosts`) or
    /// an `http://` URI. Nothing is connected here; `timeout` bounds connecting and each call.
    pub fn new(endpoint: &str, timeout: Duration) -> Result<Self, BgpError> {
        let endpoint = endpoint.trim();
        let uri = if endpoint.contains("://") {
            endpoint.to_string()
        } else {
            format!("http://{endpoint}")
        };
        let config = Endpoint::from_shared(uri)
            .map_err(|e| {
                BgpError::Unreachable(format!(
                    "`{endpoint}` is not a usable gobgpd API address: {e}"
                ))
            })?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true);
        Ok(GobgpSpeaker {
            config,
            channel: Arc::new(OnceLock::new()),
            endpoint: endpoint.to_string(),
            timeout,
        })
    }

    /// Announces many routes, up to 64 at a time over the one channel. The routes' own prefixes
    /// are looked up first, in a few requests, for the foreign-route check; routes already there
    /// with our attributes are skipped. One result per route, in the order given.
    pub async fn announce_many(&self, routes: &[Route]) -> Vec<Result<(), BgpError>> {
        let prefixes: Vec<IpNet> = routes.iter().map(|r| r.prefix.trunc()).collect();
        let rib = match self.lookup_many(&prefixes).await {
            Ok(paths) => paths,
            Err(e) => return routes.iter().map(|_| Err(same_error(&e))).collect(),
        };
        let mut by_prefix: HashMap<IpNet, Vec<RibPath>> = HashMap::new();
        for path in rib {
            by_prefix.entry(path.prefix).or_default().push(path);
        }

        let mut results: Vec<Option<Result<(), BgpError>>> = routes.iter().map(|_| None).collect();
        let mut in_flight: JoinSet<(usize, Result<(), BgpError>)> = JoinSet::new();
        for (i, route) in routes.iter().enumerate() {
            let route = normalized(route);
            match classify(&route, by_prefix.get(&route.prefix).map(Vec::as_slice)) {
                Seen::Ours => {
                    results[i] = Some(Ok(()));
                    continue;
                }
                Seen::Foreign => {
                    results[i] = Some(Err(BgpError::ForeignRoute {
                        prefix: route.prefix,
                    }));
                    continue;
                }
                Seen::Absent => {}
            }
            while in_flight.len() >= MAX_IN_FLIGHT {
                collect_one(&mut in_flight, &mut results).await;
            }
            let this = self.clone();
            in_flight.spawn(async move { (i, this.add_path(&route).await) });
        }
        while !in_flight.is_empty() {
            collect_one(&mut in_flight, &mut results).await;
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(BgpError::Rejected("announce task was lost".into()))))
            .collect()
    }

    fn channel(&self) -> Channel {
        self.channel
            .get_or_init(|| self.config.connect_lazy())
            .clone()
    }

    async fn add_path(&self, route: &Route) -> Result<(), BgpError> {
        let req = add_path_request(route)?;
        let _: api::AddPathResponse = self.unary(api::ADD_PATH, req).await?;
        Ok(())
    }

    /// The local paths of `prefix` in the global table.
    async fn lookup(&self, prefix: &IpNet) -> Result<Vec<RibPath>, BgpError> {
        let paths = self.lookup_many(std::slice::from_ref(prefix)).await?;
        Ok(paths.into_iter().filter(|p| p.prefix == *prefix).collect())
    }

    /// The local paths of `prefixes` (exact matches), at most `LOOKUP_CHUNK` prefixes to a
    /// request. What it costs follows the prefixes asked, not the table: reading the whole RIB
    /// before each batch took 280-350 ms once it held 5,000-8,700 routes, on every
    /// escalation, however small.
    async fn lookup_many(&self, prefixes: &[IpNet]) -> Result<Vec<RibPath>, BgpError> {
        let mut out = Vec::new();
        for v6 in [false, true] {
            let of_family: Vec<&IpNet> = prefixes
                .iter()
                .filter(|p| matches!(p, IpNet::V6(_)) == v6)
                .collect();
            for chunk in of_family.chunks(LOOKUP_CHUNK) {
                let req = api::ListPathRequest {
                    table_type: api::TABLE_GLOBAL,
                    name: String::new(),
                    family: Some(family_of(chunk[0])),
                    prefixes: chunk
                        .iter()
                        .map(|p| api::TableLookupPrefix {
                            prefix: p.to_string(),
                            lookup_option: api::LOOKUP_EXACT,
                        })
                        .collect(),
                };
                out.extend(self.list_paths(req).await?);
            }
        }
        Ok(out)
    }

    async fn list_all(&self) -> Result<Vec<RibPath>, BgpError> {
        let mut out = Vec::new();
        for afi in [api::AFI_IP, api::AFI_IP6] {
            let req = api::ListPathRequest {
                table_type: api::TABLE_GLOBAL,
                name: String::new(),
                family: Some(api::Family {
                    afi,
                    safi: api::SAFI_UNICAST,
                }),
                prefixes: Vec::new(),
            };
            out.extend(self.list_paths(req).await?);
        }
        Ok(out)
    }

    async fn list_paths(&self, req: api::ListPathRequest) -> Result<Vec<RibPath>, BgpError> {
        let responses: Vec<api::ListPathResponse> =
            self.server_streaming(api::LIST_PATH, req).await?;
        Ok(responses
            .into_iter()
            .filter_map(|r| r.destination)
            .flat_map(|d| d.paths)
            .filter(is_local)
            .filter_map(|p| decode_path(&p))
            .collect())
    }

    async fn delete_path(&self, req: api::DeletePathRequest) -> Result<(), BgpError> {
        if !req.names_one_path() {
            // gobgpd would delete every local path.
            return Err(BgpError::Rejected(
                "refusing to send a DeletePath that does not name one path".into(),
            ));
        }
        self.unary::<_, ()>(api::DELETE_PATH, req).await
    }

    async fn list_peers(&self) -> Result<Vec<api::Peer>, BgpError> {
        let req = api::ListPeerRequest {
            address: String::new(),
            enable_advertised: false,
        };
        let responses: Vec<api::ListPeerResponse> =
            self.server_streaming(api::LIST_PEER, req).await?;
        Ok(responses.into_iter().filter_map(|r| r.peer).collect())
    }

    async fn unary<Req, Resp>(&self, path: &'static str, req: Req) -> Result<Resp, BgpError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.bounded(path, async {
            let mut grpc = tonic::client::Grpc::new(self.channel());
            grpc.ready()
                .await
                .map_err(|e| self.transport_error(path, &e))?;
            let resp = grpc
                .unary(
                    tonic::Request::new(req),
                    PathAndQuery::from_static(path),
                    ProstCodec::<Req, Resp>::default(),
                )
                .await
                .map_err(|s| self.status_error(path, &s))?;
            Ok(resp.into_inner())
        })
        .await
    }

    async fn server_streaming<Req, Resp>(
        &self,
        path: &'static str,
        req: Req,
    ) -> Result<Vec<Resp>, BgpError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.bounded(path, async {
            let mut grpc = tonic::client::Grpc::new(self.channel());
            grpc.ready()
                .await
                .map_err(|e| self.transport_error(path, &e))?;
            let mut stream = grpc
                .server_streaming(
                    tonic::Request::new(req),
                    PathAndQuery::from_static(path),
                    ProstCodec::<Req, Resp>::default(),
                )
                .await
                .map_err(|s| self.status_error(path, &s))?
                .into_inner();
            let mut out = Vec::new();
            while let Some(msg) = stream
                .message()
                .await
                .map_err(|s| self.status_error(path, &s))?
            {
                out.push(msg);
            }
            Ok(out)
        })
        .await
    }

    /// The channel's timeout covers a call up to the response headers; this also bounds reading
    /// a streamed response.
    async fn bounded<T>(
        &self,
        path: &str,
        call: impl Future<Output = Result<T, BgpError>>,
    ) -> Result<T, BgpError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(BgpError::Unreachable(format!(
                    "gobgpd at {}: {} timed out after {:?}",
                    self.endpoint,
                    rpc_name(path),
                    self.timeout
                )))
            })
    }

    fn transport_error(&self, path: &str, e: &dyn std::error::Error) -> BgpError {
        BgpError::Unreachable(format!(
            "gobgpd at {}: {}: {}",
            self.endpoint,
            rpc_name(path),
            error_chain(e)
        ))
    }

    fn status_error(&self, path: &str, s: &tonic::Status) -> BgpError {
        use tonic::Code;
        let msg = format!(
            "gobgpd at {}: {}: {}",
            self.endpoint,
            rpc_name(path),
            describe(s)
        );
        // Cancelled is what tonic reports for its own client-side timeout.
        match s.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                BgpError::Unreachable(msg)
            }
            _ if is_transport(s) => BgpError::Unreachable(msg),
            _ => BgpError::Rejected(msg),
        }
    }
}

#[async_trait]
impl Speaker for GobgpSpeaker {
    async fn announce_batch(&self, routes: &[Route]) -> Vec<Result<(), BgpError>> {
        self.announce_many(routes).await
    }

    fn name(&self) -> &'static str {
        "gobgp"
    }

    async fn announce(&self, route: &Route) -> Result<(), BgpError> {
        let route = normalized(route);
        let seen = self.lookup(&route.prefix).await?;
        match classify(&route, Some(&seen)) {
            Seen::Foreign => Err(BgpError::ForeignRoute {
                prefix: route.prefix,
            }),
            // Re-adding our own identical path is harmless and re-sends it should it be stuck.
            Seen::Ours | Seen::Absent => self.add_path(&route).await,
        }
    }

    async fn withdraw(&self, route: &Route) -> Result<Withdrawn, BgpError> {
        let route = normalized(route);
        let seen = self.lookup(&route.prefix).await?;
        match classify(&route, Some(&seen)) {
            Seen::Absent => Ok(Withdrawn::Absent),
            Seen::Foreign => Ok(Withdrawn::LeftForeign),
            Seen::Ours => {
                self.delete_path(delete_path_request(&route)?).await?;
                Ok(Withdrawn::Removed)
            }
        }
    }

    async fn list(&self) -> Result<Option<Vec<RibPath>>, BgpError> {
        self.list_all().await.map(Some)
    }

    async fn health(&self) -> SpeakerHealth {
        match self.list_peers().await {
            Ok(peers) => {
                let peers: Vec<PeerState> = peers.iter().map(peer_state).collect();
                let detail = if peers.is_empty() {
                    Some("gobgpd has no BGP neighbors configured".to_string())
                } else if !peers.iter().any(|p| p.state == "established") {
                    Some("no BGP session is established".to_string())
                } else {
                    None
                };
                SpeakerHealth {
                    backend: "gobgp",
                    reachable: true,
                    peers,
                    detail,
                }
            }
            Err(e) => SpeakerHealth {
                backend: "gobgp",
                reachable: false,
                peers: Vec::new(),
                detail: Some(e.to_string()),
            },
        }
    }
}

/// What the RIB holds for a route's prefix, as far as we are concerned.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Absent,
    Ours,
    Foreign,
}

/// Local paths for the prefix: ours if one of them carries exactly our attributes, foreign if
/// any other is there. gobgpd keeps one local path per prefix, so both at once does not happen
/// in practice; when it does, ours wins (withdrawing by NLRI then removes our path).
fn classify(route: &Route, seen: Option<&[RibPath]>) -> Seen {
    let seen = seen.unwrap_or(&[]);
    if seen.iter().any(|p| route.matches(p)) {
        Seen::Ours
    } else if seen.iter().any(|p| p.prefix == route.prefix) {
        Seen::Foreign
    } else {
        Seen::Absent
    }
}

/// The route with its prefix truncated to the network address, as gobgpd stores and reports it,
/// so `Route::matches` compares like with like.
fn normalized(route: &Route) -> Route {
    Route {
        prefix: route.prefix.trunc(),
        ..route.clone()
    }
}

fn family_of(prefix: &IpNet) -> api::Family {
    api::Family {
        afi: match prefix {
            IpNet::V4(_) => api::AFI_IP,
            IpNet::V6(_) => api::AFI_IP6,
        },
        safi: api::SAFI_UNICAST,
    }
}

fn nlri_of(prefix: &IpNet) -> Any {
    api::pack(
        names::IP_ADDRESS_PREFIX,
        &api::IpAddressPrefix {
            prefix_len: u32::from(prefix.prefix_len()),
            prefix: prefix.network().to_string(),
        },
    )
}

/// The path we announce for `route`: origin IGP, the next hop (NEXT_HOP for IPv4, MP_REACH_NLRI
/// for IPv6, as the gobgp CLI sends it), and the communities if any.
fn route_path(route: &Route, is_withdraw: bool) -> Result<api::Path, BgpError> {
    let family = family_of(&route.prefix);
    let nlri = nlri_of(&route.prefix);
    let mut pattrs = vec![api::pack(
        names::ORIGIN,
        &api::OriginAttribute {
            origin: api::ORIGIN_IGP,
        },
    )];
    match (&route.prefix, route.next_hop) {
        (IpNet::V4(_), IpAddr::V4(nh)) => pattrs.push(api::pack(
            names::NEXT_HOP,
            &api::NextHopAttribute {
                next_hop: nh.to_string(),
            },
        )),
        (IpNet::V6(_), IpAddr::V6(nh)) => pattrs.push(api::pack(
            names::MP_REACH,
            &api::MpReachNlriAttribute {
                family: Some(family.clone()),
                next_hops: vec![nh.to_string()],
                nlris: vec![nlri.clone()],
            },
        )),
        (prefix, nh) => {
            return Err(BgpError::Rejected(format!(
                "{prefix}: next hop {nh} is not of the prefix's address family"
            )))
        }
    }
    if !route.communities.is_empty() {
        pattrs.push(api::pack(
            names::COMMUNITIES,
            &api::CommunitiesAttribute {
                communities: route.communities.iter().map(|c| c.0).collect(),
            },
        ));
    }
    if !route.large_communities.is_empty() {
        pattrs.push(api::pack(
            names::LARGE_COMMUNITIES,
            &api::LargeCommunitiesAttribute {
                communities: route
                    .large_communities
                    .iter()
                    .map(|c| api::LargeCommunity {
                        global_admin: c.global_admin,
                        local_data1: c.local_data1,
                        local_data2: c.local_data2,
                    })
                    .collect(),
            },
        ));
    }
    Ok(api::Path {
        nlri: Some(nlri),
        pattrs,
        is_withdraw,
        family: Some(family),
        ..Default::default()
    })
}

fn add_path_request(route: &Route) -> Result<api::AddPathRequest, BgpError> {
    Ok(api::AddPathRequest {
        table_type: api::TABLE_GLOBAL,
        vrf_id: String::new(),
        path: Some(route_path(route, false)?),
    })
}

/// The one place a DeletePath request is built: always for exactly this route's path.
fn delete_path_request(route: &Route) -> Result<api::DeletePathRequest, BgpError> {
    let req = api::DeletePathRequest::withdraw(route_path(route, true)?);
    debug_assert!(req.names_one_path());
    Ok(req)
}

/// Locally originated paths have no neighbor; paths learned from a peer name it.
fn is_local(path: &api::Path) -> bool {
    match path.neighbor_ip.parse::<IpAddr>() {
        Ok(ip) => ip.is_unspecified(),
        // gobgpd writes "<nil>" (Go's nil net.IP) or nothing for local paths.
        Err(_) => true,
    }
}

/// A path as a [`RibPath`], if its NLRI is a plain IP prefix. A known attribute that does not
/// decode leaves the next hop unknown, so such a path never passes for ours.
fn decode_path(path: &api::Path) -> Option<RibPath> {
    let nlri: api::IpAddressPrefix =
        api::unpack(path.nlri.as_ref()?, names::IP_ADDRESS_PREFIX)?.ok()?;
    let addr: IpAddr = nlri.prefix.parse().ok()?;
    let prefix = IpNet::new(addr, u8::try_from(nlri.prefix_len).ok()?).ok()?;

    let mut next_hop = None;
    let mut communities = Vec::new();
    let mut large_communities = Vec::new();
    let mut garbled = false;
    for attr in &path.pattrs {
        if let Some(a) = api::unpack::<api::NextHopAttribute>(attr, names::NEXT_HOP) {
            match a.ok().and_then(|a| a.next_hop.parse().ok()) {
                Some(nh) => next_hop = Some(nh),
                None => garbled = true,
            }
        } else if let Some(a) = api::unpack::<api::MpReachNlriAttribute>(attr, names::MP_REACH) {
            match a
                .ok()
                .and_then(|a| a.next_hops.first().and_then(|nh| nh.parse().ok()))
            {
                Some(nh) => next_hop = Some(nh),
                None => garbled = true,
            }
        } else if let Some(a) = api::unpack::<api::CommunitiesAttribute>(attr, names::COMMUNITIES) {
            match a {
                Ok(a) => communities.extend(a.communities.into_iter().map(Community)),
                Err(_) => garbled = true,
            }
        } else if let Some(a) =
            api::unpack::<api::LargeCommunitiesAttribute>(attr, names::LARGE_COMMUNITIES)
        {
            match a {
                Ok(a) => {
                    large_communities.extend(a.communities.into_iter().map(|c| LargeCommunity {
                        global_admin: c.global_admin,
                        local_data1: c.local_data1,
                        local_data2: c.local_data2,
                    }))
                }
                Err(_) => garbled = true,
            }
        }
    }
    Some(RibPath {
        prefix,
        next_hop: if garbled { None } else { next_hop },
        communities,
        large_communities,
    })
}

fn peer_state(peer: &api::Peer) -> PeerState {
    let state = peer.state.as_ref();
    let address = state
        .map(|s| s.neighbor_address.as_str())
        .filter(|a| !a.is_empty())
        .or_else(|| peer.conf.as_ref().map(|c| c.neighbor_address.as_str()))
        .unwrap_or("")
        .to_string();
    PeerState {
        address,
        state: api::session_state_name(state.map_or(0, |s| s.session_state)).to_string(),
    }
}

async fn collect_one(
    in_flight: &mut JoinSet<(usize, Result<(), BgpError>)>,
    results: &mut [Option<Result<(), BgpError>>],
) {
    match in_flight.join_next().await {
        Some(Ok((i, r))) => results[i] = Some(r),
        // A panicked task leaves its slot empty; it is reported as lost at the end.
        Some(Err(e)) => tracing::error!(error = %e, "announce task failed"),
        None => {}
    }
}

/// The same error again, for every route of a batch that failed as a whole.
fn same_error(e: &BgpError) -> BgpError {
    match e {
        BgpError::Unreachable(m) => BgpError::Unreachable(m.clone()),
        BgpError::Rejected(m) => BgpError::Rejected(m.clone()),
        BgpError::ForeignRoute { prefix } => BgpError::ForeignRoute { prefix: *prefix },
    }
}

fn rpc_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn describe(s: &tonic::Status) -> String {
    let mut out = format!("{:?}: {}", s.code(), s.message());
    if let Some(src) = std::error::Error::source(s) {
        out.push_str(" (");
        out.push_str(&error_chain(src));
        out.push(')');
    }
    out
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

/// Whether a status came from the connection rather than from gobgpd (tonic reports a broken
/// connection mid-call as Unknown with the transport error as its source).
fn is_transport(s: &tonic::Status) -> bool {
    let mut src = std::error::Error::source(s);
    while let Some(e) = src {
        if e.is::<tonic::transport::Error>()
            || e.is::<tonic::TimeoutExpired>()
            || e.is::<tonic::ConnectError>()
            || e.is::<std::io::Error>()
        {
            return true;
        }
        src = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn route(prefix: &str, nh: &str) -> Route {
        Route {
            prefix: prefix.parse().unwrap(),
            next_hop: nh.parse().unwrap(),
            communities: vec![Community::new(65001, 777)],
            large_communities: vec![LargeCommunity {
                global_admin: 65001,
                local_data1: 1,
                local_data2: 777,
            }],
        }
    }

    fn type_urls(path: &api::Path) -> Vec<&str> {
        path.pattrs.iter().map(|a| a.type_url.as_str()).collect()
    }

    #[test]
    fn community_65001_777_is_4259906313() {
        assert_eq!(Community::new(65001, 777).0, 4_259_906_313);
        let r = route("198.51.100.0/24", "192.0.2.1");
        let path = route_path(&r, false).unwrap();
        let attr: api::CommunitiesAttribute = api::unpack(&path.pattrs[2], names::COMMUNITIES)
            .unwrap()
            .unwrap();
        assert_eq!(attr.communities, vec![4_259_906_313]);
    }

    #[test]
    fn ipv4_add_path_round_trips() {
        let r = route("198.51.100.0/24", "192.0.2.1");
        let bytes = add_path_request(&r).unwrap().encode_to_vec();
        let req = api::AddPathRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(req.table_type, api::TABLE_GLOBAL);
        let path = req.path.unwrap();
        assert_eq!(path.family, Some(api::Family { afi: 1, safi: 1 }));
        assert!(!path.is_withdraw);
        let nlri = path.nlri.as_ref().unwrap();
        assert_eq!(nlri.type_url, "type.googleapis.com/apipb.IPAddressPrefix");
        let nlri = api::IpAddressPrefix::decode(nlri.value.as_slice()).unwrap();
        assert_eq!(
            (nlri.prefix_len, nlri.prefix.as_str()),
            (24, "198.51.100.0")
        );
        assert_eq!(
            type_urls(&path),
            [
                "type.googleapis.com/apipb.OriginAttribute",
                "type.googleapis.com/apipb.NextHopAttribute",
                "type.googleapis.com/apipb.CommunitiesAttribute",
                "type.googleapis.com/apipb.LargeCommunitiesAttribute",
            ]
        );
        let origin = api::OriginAttribute::decode(path.pattrs[0].value.as_slice()).unwrap();
        assert_eq!(origin.origin, 0);
        let nh = api::NextHopAttribute::decode(path.pattrs[1].value.as_slice()).unwrap();
        assert_eq!(nh.next_hop, "192.0.2.1");
        let lc = api::LargeCommunitiesAttribute::decode(path.pattrs[3].value.as_slice()).unwrap();
        assert_eq!(
            lc.communities,
            [api::LargeCommunity {
                global_admin: 65001,
                local_data1: 1,
                local_data2: 777
            }]
        );
        // And what we send reads back as the route itself.
        assert!(r.matches(&decode_path(&path).unwrap()));
    }

    #[test]
    fn ipv6_add_path_round_trips_with_mp_reach() {
        let r = route("2001:db8:1::/48", "100::1");
        let bytes = add_path_request(&r).unwrap().encode_to_vec();
        let path = api::AddPathRequest::decode(bytes.as_slice())
            .unwrap()
            .path
            .unwrap();
        assert_eq!(path.family, Some(api::Family { afi: 2, safi: 1 }));
        let nlri =
            api::IpAddressPrefix::decode(path.nlri.as_ref().unwrap().value.as_slice()).unwrap();
        assert_eq!(
            (nlri.prefix_len, nlri.prefix.as_str()),
            (48, "2001:db8:1::")
        );
        assert_eq!(
            type_urls(&path),
            [
                "type.googleapis.com/apipb.OriginAttribute",
                "type.googleapis.com/apipb.MpReachNLRIAttribute",
                "type.googleapis.com/apipb.CommunitiesAttribute",
                "type.googleapis.com/apipb.LargeCommunitiesAttribute",
            ]
        );
        let mp = api::MpReachNlriAttribute::decode(path.pattrs[1].value.as_slice()).unwrap();
        assert_eq!(mp.family, Some(api::Family { afi: 2, safi: 1 }));
        assert_eq!(mp.next_hops, ["100::1"]);
        assert_eq!(mp.nlris.len(), 1);
        assert_eq!(Some(&mp.nlris[0]), path.nlri.as_ref());
        assert!(r.matches(&decode_path(&path).unwrap()));
    }

    #[test]
    fn no_communities_means_no_community_attributes() {
        let mut r = route("198.51.100.0/24", "192.0.2.1");
        r.communities.clear();
        r.large_communities.clear();
        let path = route_path(&r, false).unwrap();
        assert_eq!(path.pattrs.len(), 2);
    }

    #[test]
    fn mixed_family_next_hop_is_refused_locally() {
        let r = route("198.51.100.0/24", "100::1");
        assert!(matches!(add_path_request(&r), Err(BgpError::Rejected(_))));
        assert!(matches!(
            delete_path_request(&r),
            Err(BgpError::Rejected(_))
        ));
    }

    #[test]
    fn delete_path_always_carries_one_withdrawn_path() {
        for (prefix, nh) in [
            ("198.51.100.0/24", "192.0.2.1"),
            ("2001:db8:1::/48", "100::1"),
        ] {
            let r = route(prefix, nh);
            let req = delete_path_request(&r).unwrap();
            assert!(req.names_one_path());
            let bytes = req.encode_to_vec();
            let back = api::DeletePathRequest::decode(bytes.as_slice()).unwrap();
            let path = back
                .path()
                .expect("DeletePath without a path would delete everything");
            assert!(path.is_withdraw);
            assert!(path.nlri.is_some());
            assert_eq!(decode_path(path).unwrap().prefix, r.prefix);
        }
        // Even a path built without is_withdraw goes out withdrawn.
        let path = route_path(&route("198.51.100.0/24", "192.0.2.1"), false).unwrap();
        assert!(
            api::DeletePathRequest::withdraw(path)
                .path()
                .unwrap()
                .is_withdraw
        );
        // And an empty request never passes the check made before sending.
        assert!(!api::DeletePathRequest::default().names_one_path());
    }

    #[tokio::test]
    async fn empty_delete_path_is_never_sent() {
        // Port 9 (discard) on loopback: nothing is sent because the guard refuses first.
        let s = GobgpSpeaker::new("127.0.0.1:9", Duration::from_millis(200)).unwrap();
        let err = s
            .delete_path(api::DeletePathRequest::default())
            .await
            .unwrap_err();
        assert!(matches!(err, BgpError::Rejected(m) if m.contains("refusing")));
    }

    #[test]
    fn decode_ignores_unknown_attributes_and_nlri() {
        let r = route("198.51.100.0/24", "192.0.2.1");
        let mut path = route_path(&r, false).unwrap();
        path.pattrs.push(Any {
            type_url: "type.googleapis.com/apipb.SomethingNew".into(),
            value: vec![0xff, 0x01],
        });
        assert!(r.matches(&decode_path(&path).unwrap()));

        path.nlri = Some(Any {
            type_url: "type.googleapis.com/apipb.FlowSpecNLRI".into(),
            value: vec![],
        });
        assert_eq!(decode_path(&path), None);
    }

    #[test]
    fn garbled_known_attribute_never_passes_for_ours() {
        let r = route("198.51.100.0/24", "192.0.2.1");
        let mut path = route_path(&r, false).unwrap();
        path.pattrs[2].value = vec![0xff];
        let seen = decode_path(&path).unwrap();
        assert_eq!(seen.next_hop, None);
        assert!(!r.matches(&seen));
    }

    #[test]
    fn classify_tells_ours_from_foreign() {
        let r = route("198.51.100.0/24", "192.0.2.1");
        let ours = decode_path(&route_path(&r, false).unwrap()).unwrap();
        let mut foreign = ours.clone();
        foreign.communities = vec![Community::new(65535, 666)];
        assert_eq!(classify(&r, None), Seen::Absent);
        assert_eq!(classify(&r, Some(&[])), Seen::Absent);
        assert_eq!(classify(&r, Some(std::slice::from_ref(&ours))), Seen::Ours);
        assert_eq!(classify(&r, Some(&[foreign.clone()])), Seen::Foreign);
        assert_eq!(classify(&r, Some(&[foreign, ours])), Seen::Ours);
    }

    #[test]
    fn prefixes_with_host_bits_are_normalized() {
        let r = normalized(&route("198.51.100.7/24", "192.0.2.1"));
        assert_eq!(r.prefix.to_string(), "198.51.100.0/24");
    }

    #[test]
    fn local_paths_have_no_neighbor() {
        let mut p = api::Path::default();
        for local in ["", "<nil>", "0.0.0.0", "::"] {
            p.neighbor_ip = local.into();
            assert!(is_local(&p), "{local}");
        }
        p.neighbor_ip = "127.0.0.2".into();
        assert!(!is_local(&p));
    }

    #[test]
    fn new_needs_no_runtime_and_refuses_bad_addresses() {
        assert!(GobgpSpeaker::new("127.0.0.1:50051", Duration::from_secs(1)).is_ok());
        assert!(GobgpSpeaker::new("http://[::1]:50051", Duration::from_secs(1)).is_ok());
        assert!(GobgpSpeaker::new("not an address", Duration::from_secs(1)).is_err());
    }

    #[test]
    fn status_codes_map_to_unreachable_or_rejected() {
        let s = GobgpSpeaker::new("127.0.0.1:9", Duration::from_secs(1)).unwrap();
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::DeadlineExceeded,
            tonic::Code::Cancelled,
        ] {
            let e = s.status_error(api::ADD_PATH, &tonic::Status::new(code, "x"));
            assert!(matches!(e, BgpError::Unreachable(_)), "{code:?}");
        }
        let e = s.status_error(api::ADD_PATH, &tonic::Status::unknown("nexthop not found"));
        assert!(
            matches!(e, BgpError::Rejected(m) if m.contains("nexthop not found") && m.contains("AddPath"))
        );
    }
}
