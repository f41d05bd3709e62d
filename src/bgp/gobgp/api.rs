//! The slice of gobgpd's v3 gRPC API (`package apipb`) this backend uses, as hand-written prost
//! messages: no .proto files or protoc at build time. Field numbers are those of
//! `api/gobgp.proto` and `api/attribute.proto` in gobgp v3; prost skips fields we do not declare.

use prost::Message;
use prost_types::Any;

pub const ADD_PATH: &str = "/apipb.GobgpApi/AddPath";
pub const DELETE_PATH: &str = "/apipb.GobgpApi/DeletePath";
pub const LIST_PATH: &str = "/apipb.GobgpApi/ListPath";
pub const LIST_PEER: &str = "/apipb.GobgpApi/ListPeer";

/// `TableType.GLOBAL` (v3 numbering; v4 renumbered it to 1).
pub const TABLE_GLOBAL: i32 = 0;
pub const AFI_IP: i32 = 1;
pub const AFI_IP6: i32 = 2;
pub const SAFI_UNICAST: i32 = 1;
/// `TableLookupOption.LOOKUP_EXACT`.
pub const LOOKUP_EXACT: i32 = 0;
/// `OriginAttribute.origin` for IGP.
pub const ORIGIN_IGP: u32 = 0;

const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// Message names as gobgpd resolves them from an `Any`'s type_url.
pub mod names {
    pub const IP_ADDRESS_PREFIX: &str = "apipb.IPAddressPrefix";
    pub const ORIGIN: &str = "apipb.OriginAttribute";
    pub const NEXT_HOP: &str = "apipb.NextHopAttribute";
    pub const MP_REACH: &str = "apipb.MpReachNLRIAttribute";
    pub const COMMUNITIES: &str = "apipb.CommunitiesAttribute";
    pub const LARGE_COMMUNITIES: &str = "apipb.LargeCommunitiesAttribute";
}

/// Packs `msg` into an `Any` named `name` (one of [`names`]).
pub fn pack<M: Message>(name: &str, msg: &M) -> Any {
    Any {
        type_url: format!("{TYPE_URL_PREFIX}{name}"),
        value: msg.encode_to_vec(),
    }
}

/// The message name of an `Any` (the part after the last `/` of its type_url, as gobgpd reads it).
pub fn any_name(any: &Any) -> &str {
    any.type_url.rsplit('/').next().unwrap_or("")
}

/// Decodes `any` as `M` if it is named `name`; `None` for another type, `Some(Err)` if garbled.
pub fn unpack<M: Message + Default>(
    any: &Any,
    name: &str,
) -> Option<Result<M, prost::DecodeError>> {
    (any_name(any) == name).then(|| M::decode(any.value.as_slice()))
}

#[derive(Clone, PartialEq, Message)]
pub struct Family {
    #[prost(int32, tag = "1")]
    pub afi: i32,
    #[prost(int32, tag = "2")]
    pub safi: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Path {
    #[prost(message, optional, tag = "1")]
    pub nlri: Option<Any>,
    #[prost(message, repeated, tag = "2")]
    pub pattrs: Vec<Any>,
    #[prost(bool, tag = "4")]
    pub best: bool,
    #[prost(bool, tag = "5")]
    pub is_withdraw: bool,
    #[prost(message, optional, tag = "9")]
    pub family: Option<Family>,
    #[prost(uint32, tag = "10")]
    pub source_asn: u32,
    #[prost(string, tag = "11")]
    pub source_id: String,
    #[prost(string, tag = "15")]
    pub neighbor_ip: String,
    #[prost(bytes = "vec", tag = "16")]
    pub uuid: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AddPathRequest {
    #[prost(int32, tag = "1")]
    pub table_type: i32,
    #[prost(string, tag = "2")]
    pub vrf_id: String,
    #[prost(message, optional, tag = "3")]
    pub path: Option<Path>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AddPathResponse {
    #[prost(bytes = "vec", tag = "1")]
    pub uuid: Vec<u8>,
}

/// A DeletePath request. gobgpd reads one with neither `path` nor `uuid` as "delete every local
/// path", so the fields are private and [`DeletePathRequest::withdraw`] is the only constructor
/// here: it always carries the one path to withdraw.
#[derive(Clone, PartialEq, Message)]
pub struct DeletePathRequest {
    #[prost(int32, tag = "1")]
    table_type: i32,
    #[prost(string, tag = "2")]
    vrf_id: String,
    #[prost(message, optional, tag = "3")]
    family: Option<Family>,
    #[prost(message, optional, tag = "4")]
    path: Option<Path>,
    #[prost(bytes = "vec", tag = "5")]
    uuid: Vec<u8>,
}

impl DeletePathRequest {
    /// Withdraws `path` (by its NLRI) from the global table.
    pub fn withdraw(mut path: Path) -> Self {
        // gobgpd needs either a next hop or is_withdraw on a DeletePath's path.
        path.is_withdraw = true;
        debug_assert!(path.nlri.is_some(), "a DeletePath path must name its NLRI");
        debug_assert!(
            path.family.is_some(),
            "a DeletePath path must carry its family"
        );
        DeletePathRequest {
            table_type: TABLE_GLOBAL,
            vrf_id: String::new(),
            family: path.family.clone(),
            path: Some(path),
            uuid: Vec::new(),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_ref()
    }

    /// Whether this request names exactly one path: the check made right before sending, so a
    /// request that gobgpd would read as "delete all" never leaves this process.
    pub fn names_one_path(&self) -> bool {
        self.path
            .as_ref()
            .is_some_and(|p| p.is_withdraw && p.nlri.is_some() && p.family.is_some())
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct TableLookupPrefix {
    #[prost(string, tag = "1")]
    pub prefix: String,
    #[prost(int32, tag = "2")]
    pub lookup_option: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct ListPathRequest {
    #[prost(int32, tag = "1")]
    pub table_type: i32,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, optional, tag = "3")]
    pub family: Option<Family>,
    #[prost(message, repeated, tag = "4")]
    pub prefixes: Vec<TableLookupPrefix>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ListPathResponse {
    #[prost(message, optional, tag = "1")]
    pub destination: Option<Destination>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Destination {
    #[prost(string, tag = "1")]
    pub prefix: String,
    #[prost(message, repeated, tag = "2")]
    pub paths: Vec<Path>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ListPeerRequest {
    #[prost(string, tag = "1")]
    pub address: String,
    #[prost(bool, tag = "2")]
    pub enable_advertised: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct ListPeerResponse {
    #[prost(message, optional, tag = "1")]
    pub peer: Option<Peer>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Peer {
    #[prost(message, optional, tag = "2")]
    pub conf: Option<PeerConf>,
    #[prost(message, optional, tag = "5")]
    pub state: Option<PeerState>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PeerConf {
    #[prost(string, tag = "4")]
    pub neighbor_address: String,
    #[prost(uint32, tag = "5")]
    pub peer_as: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct PeerState {
    #[prost(string, tag = "5")]
    pub neighbor_address: String,
    #[prost(uint32, tag = "6")]
    pub peer_as: u32,
    #[prost(int32, tag = "13")]
    pub session_state: i32,
}

/// `PeerState.SessionState` as the lower-case words operators know from `gobgp neighbor`.
pub fn session_state_name(state: i32) -> &'static str {
    match state {
        1 => "idle",
        2 => "connect",
        3 => "active",
        4 => "opensent",
        5 => "openconfirm",
        6 => "established",
        _ => "unknown",
    }
}

pub const SESSION_ESTABLISHED: i32 = 6;

#[derive(Clone, PartialEq, Message)]
pub struct IpAddressPrefix {
    #[prost(uint32, tag = "1")]
    pub prefix_len: u32,
    #[prost(string, tag = "2")]
    pub prefix: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct OriginAttribute {
    #[prost(uint32, tag = "1")]
    pub origin: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct NextHopAttribute {
    #[prost(string, tag = "1")]
    pub next_hop: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct MpReachNlriAttribute {
    #[prost(message, optional, tag = "1")]
    pub family: Option<Family>,
    #[prost(string, repeated, tag = "2")]
    pub next_hops: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub nlris: Vec<Any>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommunitiesAttribute {
    #[prost(uint32, repeated, tag = "1")]
    pub communities: Vec<u32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct LargeCommunity {
    #[prost(uint32, tag = "1")]
    pub global_admin: u32,
    #[prost(uint32, tag = "2")]
    pub local_data1: u32,
    #[prost(uint32, tag = "3")]
    pub local_data2: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct LargeCommunitiesAttribute {
    #[prost(message, repeated, tag = "1")]
    pub communities: Vec<LargeCommunity>,
}
