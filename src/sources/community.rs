//! FastNetMon Community's gRPC API (`127.0.0.1:50052`, no auth): `GetBanlist`, polled, so the
//! ban list here follows FastNetMon's, which it forgets on restart without sending unbans.
//! Hand-written prost messages as in `bgp::gobgp`: no .proto files or protoc at build time.
//! Community has no per-host counters over gRPC; they come from the InfluxDB push.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use super::{error_chain, BanList, Cycle, Reconciler, SourceHealth, COMMUNITY};
use crate::checker::CheckerHandle;
use crate::clock::now_ms;
use crate::config::Config;
use crate::store::Store;

/// `GetBanlist` of 1.2.4–1.2.7 (`package fastmitigation`), then of 1.2.8 and later
/// (`package fastnetmoninternal`, same messages plus a field we do not need). The first one that
/// is not UNIMPLEMENTED is remembered.
pub const GET_BANLIST: [&str; 2] = [
    "/fastmitigation.Fastnetmon/GetBanlist",
    "/fastnetmoninternal.Fastnetmon/GetBanlist",
];

/// `message BanListRequest {}`
#[derive(Clone, PartialEq, prost::Message)]
pub struct BanListRequest {}

/// `message BanListReply { string ip_address = 1; }`: `10.10.10.5/32`, or an IPv6 CIDR.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BanListReply {
    #[prost(string, tag = "1")]
    pub ip_address: String,
}

/// The URI for `community_grpc`: `host:port` or `http://host:port` (no TLS: FastNetMon has none).
pub fn endpoint_uri(addr: &str) -> Result<String, String> {
    let addr = addr.trim();
    if addr.is_empty() {
        return Err("empty".into());
    }
    if addr.starts_with("https://") {
        return Err(format!(
            "`{addr}`: FastNetMon's gRPC API has no TLS; use host:port"
        ));
    }
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    if !uri.starts_with("http://") {
        return Err(format!("`{addr}` is not host:port or an http:// URI"));
    }
    let parsed: tonic::codegen::http::Uri = uri
        .parse()
        .map_err(|e| format!("`{addr}` is not host:port: {e}"))?;
    if parsed.port_u16().is_none() {
        return Err(format!(
            "`{addr}` has no port (FastNetMon listens on 50052)"
        ));
    }
    Ok(uri)
}

/// The ban list from the streamed replies.
pub fn ban_list(replies: &[BanListReply]) -> BanList {
    BanList::from_entries(replies.iter().map(|r| r.ip_address.as_str()))
}

/// A client of FastNetMon Community's gRPC API. The channel connects lazily and reconnects by
/// itself, so FastNetMon may start after us or restart.
pub struct CommunityClient {
    endpoint: Endpoint,
    channel: OnceLock<Channel>,
    addr: String,
    timeout: Duration,
    /// Index into [`GET_BANLIST`] of the method that answered last.
    method: AtomicUsize,
}

impl CommunityClient {
    pub fn new(addr: &str, timeout: Duration) -> Result<CommunityClient, String> {
        let uri = endpoint_uri(addr)?;
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| format!("`{addr}`: {e}"))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true);
        Ok(CommunityClient {
            endpoint,
            channel: OnceLock::new(),
            addr: addr.trim().to_string(),
            timeout,
            method: AtomicUsize::new(0),
        })
    }

    fn channel(&self) -> Channel {
        self.channel
            .get_or_init(|| self.endpoint.connect_lazy())
            .clone()
    }

    /// `GetBanlist`, read to the end of the stream within the timeout.
    pub async fn ban_list(&self) -> Result<BanList, String> {
        let first = self.method.load(Ordering::Relaxed) % GET_BANLIST.len();
        let mut last = String::new();
        for i in 0..GET_BANLIST.len() {
            let index = (first + i) % GET_BANLIST.len();
            match self.get_banlist(GET_BANLIST[index]).await {
                Ok(replies) => {
                    self.method.store(index, Ordering::Relaxed);
                    return Ok(ban_list(&replies));
                }
                Err(Call::Unimplemented(e)) => last = e,
                Err(Call::Failed(e)) => return Err(e),
            }
        }
        Err(last)
    }

    async fn get_banlist(&self, path: &'static str) -> Result<Vec<BanListReply>, Call> {
        let call = async {
            let mut grpc = tonic::client::Grpc::new(self.channel());
            grpc.ready().await.map_err(|e| {
                Call::Failed(format!(
                    "FastNetMon gRPC at {}: {}",
                    self.addr,
                    error_chain(&e)
                ))
            })?;
            let mut stream = grpc
                .server_streaming(
                    tonic::Request::new(BanListRequest {}),
                    PathAndQuery::from_static(path),
                    ProstCodec::<BanListRequest, BanListReply>::default(),
                )
                .await
                .map_err(|s| self.status(path, &s))?
                .into_inner();
            let mut out = Vec::new();
            while let Some(reply) = stream.message().await.map_err(|s| self.status(path, &s))? {
                out.push(reply);
            }
            Ok(out)
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(Call::Failed(format!(
                    "FastNetMon gRPC at {}: {path} timed out after {}",
                    self.addr,
                    humantime::format_duration(self.timeout)
                )))
            })
    }

    fn status(&self, path: &str, s: &tonic::Status) -> Call {
        let msg = format!(
            "FastNetMon gRPC at {}: {path}: {:?}: {}",
            self.addr,
            s.code(),
            s.message()
        );
        if s.code() == tonic::Code::Unimplemented {
            Call::Unimplemented(msg)
        } else {
            Call::Failed(msg)
        }
    }
}

enum Call {
    Unimplemented(String),
    Failed(String),
}

/// What one poll did (tests and logs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PollReport {
    pub ok: bool,
    pub listed: usize,
    pub banned: usize,
    pub unbanned: usize,
}

/// The poll loop of one FastNetMon Community.
pub struct CommunityPoller {
    client: CommunityClient,
    store: Store,
    checker: CheckerHandle,
    health: SourceHealth,
    reconciler: Option<Reconciler>,
    interval: Duration,
}

impl CommunityPoller {
    /// None when `fastnetmon.community_grpc` is unset.
    pub fn new(
        config: &Config,
        store: Store,
        checker: CheckerHandle,
        health: SourceHealth,
    ) -> Result<Option<CommunityPoller>, String> {
        let f = &config.fastnetmon;
        let Some(addr) = &f.community_grpc else {
            return Ok(None);
        };
        Ok(Some(CommunityPoller {
            client: CommunityClient::new(addr, f.api_timeout)?,
            store,
            checker,
            health,
            reconciler: f.reconcile_ban_list.then(|| {
                Reconciler::new(
                    COMMUNITY,
                    "fastnetmon-grpc",
                    "FastNetMon's ban list (Community gRPC GetBanlist)",
                )
            }),
            interval: f.community_poll_interval,
        }))
    }

    pub async fn run(mut self, shutdown: watch::Receiver<bool>) {
        tracing::info!(
            addr = %self.client.addr,
            interval = %humantime::format_duration(self.interval),
            reconcile = self.reconciler.is_some(),
            "polling FastNetMon Community's ban list"
        );
        let interval = self.interval;
        super::run_every(&mut self, interval, shutdown).await;
    }

    pub async fn poll(&mut self) -> PollReport {
        let started = Instant::now();
        let polled_at = now_ms();
        let mut report = PollReport::default();
        let list = match self.client.ban_list().await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(source = COMMUNITY, error = %e, "poll failed");
                self.health
                    .failure(now_ms(), &e, started.elapsed().as_secs_f64() * 1000.0);
                return report;
            }
        };
        list.warn_skipped(COMMUNITY);
        report.listed = list.hosts.len();
        if let Some(r) = &mut self.reconciler {
            let followed = r
                .follow(
                    &list,
                    &self.store,
                    &self.health,
                    &self.checker,
                    polled_at,
                    super::reconcile::Follow::All,
                )
                .await;
            match followed {
                Ok(rec) => {
                    report.banned = rec.banned;
                    report.unbanned = rec.unbanned;
                }
                Err(e) => {
                    tracing::error!(source = COMMUNITY, error = %e, "ban-list reconciliation failed");
                    self.health
                        .failure(now_ms(), &format!("reconciling the ban list: {e}"), 0.0);
                    return report;
                }
            }
        }
        report.ok = true;
        self.health.success(
            now_ms(),
            Cycle {
                ms: started.elapsed().as_secs_f64() * 1000.0,
                hosts: report.listed as u64,
                ..Cycle::default()
            },
        );
        report
    }
}

impl super::Poller for CommunityPoller {
    async fn cycle(&mut self) {
        self.poll().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::net::IpAddr;

    #[test]
    fn decodes_the_captured_ban_list() {
        // `fastnetmon_api_client get_banlist` against Debian's 1.2.4 printed `10.10.10.5/32`
        // (tests/fixtures/community-1.2.4/grpc_get_banlist.txt); this is its reply on the wire.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/community-1.2.4/grpc_get_banlist.txt");
        let text = std::fs::read_to_string(path).expect("fixture");
        let replies: Vec<BanListReply> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let wire = BanListReply {
                    ip_address: l.trim().to_string(),
                }
                .encode_to_vec();
                BanListReply::decode(wire.as_slice()).expect("decode")
            })
            .collect();
        let list = ban_list(&replies);
        assert_eq!(
            list.hosts,
            vec!["10.10.10.5".parse::<IpAddr>().expect("ip")]
        );
        assert!(list.skipped.is_empty());
    }

    #[test]
    fn wire_format_matches_the_proto() {
        // field 1, wire type 2 (length-delimited), "10.0.0.1/32"
        let wire = b"\x0a\x0b10.0.0.1/32";
        let r = BanListReply::decode(&wire[..]).expect("decode");
        assert_eq!(r.ip_address, "10.0.0.1/32");
        // 1.2.8+ adds `string announce_uuid = 2`: skipped, not an error.
        let wire = b"\x0a\x0f2001:db8::1/128\x12\x03abc";
        let r = BanListReply::decode(&wire[..]).expect("decode");
        assert_eq!(
            ban_list(&[r]).hosts,
            vec!["2001:db8::1".parse::<IpAddr>().expect("ip")]
        );
        assert!(BanListRequest {}.encode_to_vec().is_empty());
    }

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            endpoint_uri("127.0.0.1:50052").as_deref(),
            Ok("http://127.0.0.1:50052")
        );
        assert_eq!(
            endpoint_uri("http://[::1]:50052").as_deref(),
            Ok("http://[::1]:50052")
        );
        for bad in [
            "",
            "127.0.0.1",
            "https://127.0.0.1:50052",
            "ftp://x:1",
            "a b:1",
        ] {
            assert!(endpoint_uri(bad).is_err(), "{bad}");
        }
    }
}
