//! ExaBGP 4.2's text API, both ways: the commands we write (`announce route ...`,
//! `withdraw route ...`, `show ...`) and the answers we read back (`show adj-rib out extensive`,
//! `show neighbor extensive`). Pure functions, so every format is unit-tested.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::bgp::{BgpError, Community, LargeCommunity, PeerState, RibPath, Route};

/// Lists what ExaBGP holds to announce, every neighbour, with the attributes.
pub const SHOW_RIB: &str = "show adj-rib out extensive";
/// Every configured neighbour with its session state.
pub const SHOW_NEIGHBORS: &str = "show neighbor extensive";

/// The acknowledgements ExaBGP writes after each command (`exabgp.api.ack = true`).
pub const DONE: &str = "done";
pub const ERROR: &str = "error";

/// Whether a line from ExaBGP acknowledges a command.
pub fn is_ack(line: &str) -> bool {
    matches!(line.trim(), DONE | ERROR)
}

/// `announce route P next-hop NH [community [..]] [large-community [..]]`. ExaBGP answers `done`
/// even to a next hop of the other family and then never sends the route, so that is refused here.
pub fn announce(route: &Route) -> Result<String, BgpError> {
    let prefix = checked_prefix(route)?;
    let mut cmd = format!("announce route {prefix} next-hop {}", route.next_hop);
    if !route.communities.is_empty() {
        cmd.push_str(" community [");
        cmd.push_str(&join(&route.communities));
        cmd.push(']');
    }
    if !route.large_communities.is_empty() {
        cmd.push_str(" large-community [");
        cmd.push_str(&join(&route.large_communities));
        cmd.push(']');
    }
    Ok(cmd)
}

/// `withdraw route P next-hop NH`. ExaBGP withdraws by prefix; the next hop only makes its log
/// line say which route it was.
pub fn withdraw(route: &Route) -> Result<String, BgpError> {
    let prefix = checked_prefix(route)?;
    Ok(format!(
        "withdraw route {prefix} next-hop {}",
        route.next_hop
    ))
}

/// The prefix as ExaBGP reports it (host bits cleared), if the next hop is of its family.
pub fn checked_prefix(route: &Route) -> Result<IpNet, BgpError> {
    match (route.prefix, route.next_hop) {
        (IpNet::V4(_), IpAddr::V4(_)) | (IpNet::V6(_), IpAddr::V6(_)) => Ok(route.prefix.trunc()),
        (prefix, nh) => Err(BgpError::Rejected(format!(
            "{prefix}: next hop {nh} is not of the prefix's address family"
        ))),
    }
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line of `show adj-rib out extensive`:
/// `neighbor 127.0.0.2 local-ip ... family-allowed in-open ipv4 unicast 198.51.100.0/24
/// next-hop 192.0.2.1 community [ 65001:777 65001:778 ] large-community 65001:1:777`.
/// Unicast routes only; other families and other lines give `None`. A community or next hop
/// that does not parse leaves the next hop unknown, so such a path never passes for ours.
pub fn parse_rib_line(line: &str) -> Option<RibPath> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let start = words.windows(3).position(|w| {
        matches!(w[0], "ipv4" | "ipv6") && w[1] == "unicast" && w[2].parse::<IpNet>().is_ok()
    })?;
    let prefix: IpNet = words[start + 2].parse().ok()?;
    let mut next_hop = None;
    let mut communities = Vec::new();
    let mut large_communities = Vec::new();
    let mut garbled = false;
    let mut rest = &words[start + 3..];
    while let Some((&key, tail)) = rest.split_first() {
        rest = tail;
        match key {
            "next-hop" => {
                let (values, tail) = take_value(rest);
                rest = tail;
                match values.as_slice() {
                    [nh] => match nh.parse::<IpAddr>() {
                        Ok(nh) => next_hop = Some(nh),
                        Err(_) => garbled = true,
                    },
                    _ => garbled = true,
                }
            }
            "community" => {
                let (values, tail) = take_value(rest);
                rest = tail;
                for v in values {
                    match parse_community(v) {
                        Some(c) => communities.push(c),
                        None => garbled = true,
                    }
                }
            }
            "large-community" => {
                let (values, tail) = take_value(rest);
                rest = tail;
                for v in values {
                    match v.parse::<LargeCommunity>() {
                        Ok(c) => large_communities.push(c),
                        Err(_) => garbled = true,
                    }
                }
            }
            // Any other attribute (origin, as-path [ .. ], med, ...): skip a bracketed group
            // whole, so nothing inside it is taken for one of the keys above.
            "[" | "(" => rest = skip_group(rest, if key == "[" { "]" } else { ")" }),
            _ => {}
        }
    }
    Some(RibPath {
        prefix,
        next_hop: if garbled { None } else { next_hop },
        communities,
        large_communities,
    })
}

/// A value: one word, or a `[ a b c ]` group (ExaBGP writes one community bare, several in
/// brackets).
fn take_value<'a>(words: &'a [&'a str]) -> (Vec<&'a str>, &'a [&'a str]) {
    match words.split_first() {
        Some((&"[", tail)) => {
            let end = tail.iter().position(|w| *w == "]").unwrap_or(tail.len());
            let rest = tail.get(end + 1..).unwrap_or(&[]);
            (tail[..end].to_vec(), rest)
        }
        Some((&w, tail)) => (vec![w], tail),
        None => (Vec::new(), words),
    }
}

fn skip_group<'a>(words: &'a [&'a str], close: &str) -> &'a [&'a str] {
    match words.iter().position(|w| *w == close) {
        Some(end) => &words[end + 1..],
        None => &[],
    }
}

/// ExaBGP prints the RFC 1997/7999 well-known communities by name.
fn parse_community(word: &str) -> Option<Community> {
    let known = match word {
        "no-export" => Some(0xFFFF_FF01),
        "no-advertise" => Some(0xFFFF_FF02),
        "no-export-subconfed" => Some(0xFFFF_FF03),
        "no-peer" => Some(0xFFFF_FF04),
        "blackhole" => Some(0xFFFF_029A),
        _ => None,
    };
    match known {
        Some(v) => Some(Community(v)),
        None => word.parse().ok(),
    }
}

/// The output of `show neighbor extensive`: a `Neighbor ADDRESS` line per neighbour, then
/// indented `key value` lines, among them `state ESTABLISHED`.
pub fn parse_neighbors<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<PeerState> {
    let mut peers: Vec<PeerState> = Vec::new();
    for line in lines {
        if let Some(address) = line.strip_prefix("Neighbor ") {
            peers.push(PeerState {
                address: address.trim().to_string(),
                state: "unknown".into(),
            });
        } else if let (Some(peer), Some(("state", value))) = (
            peers.last_mut(),
            line.trim().split_once(char::is_whitespace),
        ) {
            peer.state = value.trim().to_ascii_lowercase();
        }
    }
    peers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, nh: &str, communities: &[&str], large: &[&str]) -> Route {
        Route {
            prefix: prefix.parse().unwrap(),
            next_hop: nh.parse().unwrap(),
            communities: communities.iter().map(|c| c.parse().unwrap()).collect(),
            large_communities: large.iter().map(|c| c.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn announces_ipv4_with_communities_and_large_communities() {
        let r = route(
            "198.51.100.0/24",
            "192.0.2.1",
            &["65001:777", "65001:778"],
            &["65001:1:777"],
        );
        assert_eq!(
            announce(&r).unwrap(),
            "announce route 198.51.100.0/24 next-hop 192.0.2.1 community [65001:777 65001:778] \
             large-community [65001:1:777]"
        );
    }

    #[test]
    fn announces_ipv6_and_without_communities() {
        let r = route("2001:db8:1::/48", "100::1", &["65001:777"], &[]);
        assert_eq!(
            announce(&r).unwrap(),
            "announce route 2001:db8:1::/48 next-hop 100::1 community [65001:777]"
        );
        let bare = route("198.51.100.0/24", "192.0.2.1", &[], &[]);
        assert_eq!(
            announce(&bare).unwrap(),
            "announce route 198.51.100.0/24 next-hop 192.0.2.1"
        );
    }

    #[test]
    fn withdraws_by_prefix_with_its_next_hop() {
        let r = route(
            "2001:db8:1::/48",
            "100::1",
            &["65001:777"],
            &["65001:1:777"],
        );
        assert_eq!(
            withdraw(&r).unwrap(),
            "withdraw route 2001:db8:1::/48 next-hop 100::1"
        );
    }

    #[test]
    fn host_bits_are_cleared() {
        let r = route("198.51.100.7/24", "192.0.2.1", &[], &[]);
        assert!(announce(&r)
            .unwrap()
            .starts_with("announce route 198.51.100.0/24 "));
    }

    #[test]
    fn next_hop_of_the_other_family_is_refused_locally() {
        // ExaBGP would answer `done` and never send it.
        let r = route("198.51.100.0/24", "100::1", &[], &[]);
        assert!(matches!(announce(&r), Err(BgpError::Rejected(_))));
        assert!(matches!(withdraw(&r), Err(BgpError::Rejected(_))));
    }

    // Lines as ExaBGP 4.2.21 wrote them in the lab.
    const RIB: &str = "\
neighbor 127.0.9.2 local-ip 127.0.0.1 local-as 65001 peer-as 65000 router-id 127.0.0.1 family-allowed in-open ipv4 unicast 198.51.100.0/24 next-hop 192.0.2.1 community 65001:777 large-community 65001:1:777
neighbor 127.0.9.2 local-ip 127.0.0.1 local-as 65001 peer-as 65000 router-id 127.0.0.1 family-allowed in-open ipv4 unicast 198.51.101.0/24 next-hop 192.0.2.1
neighbor 127.0.9.2 local-ip 127.0.0.1 local-as 65001 peer-as 65000 router-id 127.0.0.1 family-allowed in-open ipv6 unicast 2001:db8:1::/48 next-hop 100::1 community [ 65001:777 65001:778 ]";

    #[test]
    fn reads_back_the_adj_rib_out() {
        let paths: Vec<RibPath> = RIB.lines().filter_map(parse_rib_line).collect();
        assert_eq!(paths.len(), 3);
        let ours = route(
            "198.51.100.0/24",
            "192.0.2.1",
            &["65001:777"],
            &["65001:1:777"],
        );
        assert!(ours.matches(&paths[0]));
        assert!(route("198.51.101.0/24", "192.0.2.1", &[], &[]).matches(&paths[1]));
        let v6 = route(
            "2001:db8:1::/48",
            "100::1",
            &["65001:778", "65001:777"],
            &[],
        );
        assert!(v6.matches(&paths[2]), "{:?}", paths[2]);
    }

    #[test]
    fn what_we_announce_reads_back_as_ours() {
        for r in [
            route("198.51.100.0/24", "192.0.2.1", &["65001:777"], &[]),
            route(
                "2001:db8:5::/48",
                "100::1",
                &["65001:666", "65535:666"],
                &["65001:2:666", "65001:3:1"],
            ),
        ] {
            // ExaBGP echoes the attributes in its own syntax: spaces inside brackets, names for
            // well-known communities.
            let echoed = announce(&r)
                .unwrap()
                .replace("announce route ", "neighbor 127.0.0.2 ipv4 unicast ")
                .replace(
                    "neighbor 127.0.0.2 ipv4 unicast 2001",
                    "neighbor 127.0.0.2 ipv6 unicast 2001",
                )
                .replace('[', "[ ")
                .replace(']', " ]")
                .replace("65535:666", "blackhole");
            let seen = parse_rib_line(&echoed).unwrap();
            assert!(r.matches(&seen), "{echoed} -> {seen:?}");
        }
    }

    #[test]
    fn other_attributes_are_skipped() {
        let line = "neighbor 127.0.0.2 ipv4 unicast 198.51.100.0/24 next-hop 192.0.2.1 origin igp \
                    as-path [ 65001 65002 ] med 10 atomic-aggregate community no-export \
                    extended-community target:65001:1";
        let p = parse_rib_line(line).unwrap();
        assert_eq!(p.next_hop, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(p.communities, vec![Community(0xFFFF_FF01)]);
    }

    #[test]
    fn unparsable_attributes_never_pass_for_ours() {
        let p = parse_rib_line(
            "neighbor 127.0.0.2 ipv4 unicast 198.51.100.0/24 next-hop 192.0.2.1 community 0x1234",
        )
        .unwrap();
        assert_eq!(p.next_hop, None);
        assert!(!route("198.51.100.0/24", "192.0.2.1", &[], &[]).matches(&p));
    }

    #[test]
    fn lines_that_are_not_unicast_routes_are_ignored() {
        for line in [
            "",
            "done",
            "neighbor 127.0.0.2 up",
            "neighbor 127.0.0.2 ipv4 flow destination-ipv4 198.51.100.0/24 discard",
            "Peer            AS        up/down state       |     #sent     #recvd",
        ] {
            assert_eq!(parse_rib_line(line), None, "{line}");
        }
    }

    #[test]
    fn reads_neighbor_states() {
        let out = "Neighbor 127.0.9.2

  Session                         Local
   local                      127.0.0.1
   state                    ESTABLISHED
   up for                       0:00:04

  Setup                           Local          Remote
   AS                             65001           65000
Neighbor 127.0.9.4

  Session                         Local
   local                      127.0.0.1
   state                           IDLE
   down for                     0:00:04";
        let peers = parse_neighbors(out.lines());
        assert_eq!(
            peers,
            vec![
                PeerState {
                    address: "127.0.9.2".into(),
                    state: "established".into()
                },
                PeerState {
                    address: "127.0.9.4".into(),
                    state: "idle".into()
                },
            ]
        );
    }

    #[test]
    fn acks_are_done_and_error_only() {
        assert!(is_ack("done") && is_ack("error\n") && !is_ack("shutdown 1 2"));
    }
}
