//! FastNetMon's InfluxDB export, as pushed to `POST /write`: which host points become samples,
//! at what time. FastNetMon sends all hosts of one family in one request and leaves out hosts
//! whose counters are all zero, so a banned host missing from a push of its family is at zero.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::clock::Millis;
use crate::fastnetmon::line_protocol::Samples;
use crate::fastnetmon::Traffic;
use crate::store::SampleIn;

use super::INFLUXDB;

/// A point's own timestamp is used only if it is at most this old (and not in the future);
/// otherwise FastNetMon's clock is off and the receive time is the better guess.
pub const MAX_POINT_AGE: Millis = 10 * 60 * 1000;

/// The `precision` query parameter of InfluxDB's `/write` (default nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    Minutes,
    Hours,
}

impl Precision {
    pub fn parse(p: Option<&str>) -> Result<Precision, String> {
        Ok(match p.unwrap_or("ns") {
            "" | "n" | "ns" => Precision::Nanoseconds,
            "u" | "us" | "µ" | "µs" => Precision::Microseconds,
            "ms" => Precision::Milliseconds,
            "s" => Precision::Seconds,
            "m" => Precision::Minutes,
            "h" => Precision::Hours,
            other => {
                return Err(format!(
                    "`{}` is not one of ns, u, ms, s, m, h",
                    crate::fastnetmon::notification::snippet(other)
                ))
            }
        })
    }

    /// A timestamp in this precision as Unix milliseconds (None on overflow).
    pub fn to_millis(self, ts: i64) -> Option<Millis> {
        match self {
            Precision::Nanoseconds => Some(ts.div_euclid(1_000_000)),
            Precision::Microseconds => Some(ts.div_euclid(1_000)),
            Precision::Milliseconds => Some(ts),
            Precision::Seconds => ts.checked_mul(1_000),
            Precision::Minutes => ts.checked_mul(60_000),
            Precision::Hours => ts.checked_mul(3_600_000),
        }
    }
}

/// When a point was measured: its timestamp if sane, else when it was received.
pub fn sample_time(ts: Option<i64>, precision: Precision, received_at: Millis) -> Millis {
    match ts.and_then(|t| precision.to_millis(t)) {
        Some(t) if t <= received_at && received_at - t <= MAX_POINT_AGE => t,
        _ => received_at,
    }
}

/// What one push gives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Push {
    /// Samples of banned hosts, zeros for the absent ones included.
    pub samples: Vec<SampleIn>,
    /// Banned hosts given a zero sample because the push of their family left them out.
    pub zero_filled: usize,
    /// Host points of hosts that are not banned (not stored: the decision never looks at them,
    /// and a push carries every active host of the network).
    pub not_banned: usize,
}

/// Samples for the banned hosts out of one push.
pub fn plan(
    samples: &Samples,
    banned: &HashSet<IpAddr>,
    precision: Precision,
    received_at: Millis,
) -> Push {
    let mut push = Push::default();
    let mut seen: HashSet<IpAddr> = HashSet::new();
    // The newest time among each family's points: when the absent hosts were at zero.
    let mut family_time: HashMap<bool, Millis> = HashMap::new();
    for h in &samples.hosts {
        let at = sample_time(h.timestamp_ns, precision, received_at);
        let t = family_time.entry(h.ip.is_ipv4()).or_insert(at);
        *t = (*t).max(at);
        seen.insert(h.ip);
        if banned.contains(&h.ip) {
            push.samples.push(SampleIn {
                ip: h.ip,
                at,
                source: INFLUXDB.into(),
                traffic: h.traffic,
            });
        } else {
            push.not_banned += 1;
        }
    }
    let mut absent: Vec<&IpAddr> = banned.iter().filter(|ip| !seen.contains(ip)).collect();
    absent.sort();
    for ip in absent {
        if let Some(at) = family_time.get(&ip.is_ipv4()) {
            push.samples.push(SampleIn {
                ip: *ip,
                at: *at,
                source: INFLUXDB.into(),
                traffic: Traffic::default(),
            });
            push.zero_filled += 1;
        }
    }
    push
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastnetmon::line_protocol::{parse, samples};

    const NOW: Millis = 1_795_612_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn precision_and_time_window() {
        let ns = (NOW - 5_000) * 1_000_000;
        assert_eq!(
            sample_time(Some(ns), Precision::Nanoseconds, NOW),
            NOW - 5_000
        );
        assert_eq!(
            sample_time(Some((NOW - 5_000) / 1000), Precision::Seconds, NOW),
            NOW - 5_000
        );
        assert_eq!(
            sample_time(Some((NOW - 5_000) * 1000), Precision::Microseconds, NOW),
            NOW - 5_000
        );
        // In the future, too old, overflowing, missing: the receive time.
        assert_eq!(
            sample_time(Some((NOW + 1) * 1_000_000), Precision::Nanoseconds, NOW),
            NOW
        );
        assert_eq!(
            sample_time(
                Some((NOW - MAX_POINT_AGE - 1) * 1_000_000),
                Precision::Nanoseconds,
                NOW
            ),
            NOW
        );
        assert_eq!(sample_time(Some(i64::MAX), Precision::Hours, NOW), NOW);
        assert_eq!(sample_time(Some(-5), Precision::Nanoseconds, NOW), NOW);
        assert_eq!(sample_time(None, Precision::Nanoseconds, NOW), NOW);
        assert!(Precision::parse(Some("weeks")).is_err());
        assert_eq!(Precision::parse(None), Ok(Precision::Nanoseconds));
        assert_eq!(Precision::parse(Some("u")), Ok(Precision::Microseconds));
    }

    #[test]
    fn banned_hosts_absent_from_a_push_of_their_family_are_at_zero() {
        let t = (NOW - 1_000) * 1_000_000;
        let body = format!(
            "hosts_traffic,host=10.0.0.1 bits_incoming=800,packets_incoming=1 {t}\n\
             hosts_traffic,host=10.0.0.9 bits_incoming=1 {t}\n"
        );
        let s = samples(&parse(&body).points);
        let banned: HashSet<IpAddr> = [ip("10.0.0.1"), ip("10.0.0.2"), ip("2001:db8::1")].into();
        let push = plan(&s, &banned, Precision::Nanoseconds, NOW);
        assert_eq!(push.not_banned, 1);
        assert_eq!(
            push.zero_filled, 1,
            "only the IPv4 host: no IPv6 points came"
        );
        let got: Vec<(IpAddr, Millis, u64)> = push
            .samples
            .iter()
            .map(|s| (s.ip, s.at, s.traffic.in_bps))
            .collect();
        assert_eq!(
            got,
            vec![
                (ip("10.0.0.1"), NOW - 1_000, 800),
                (ip("10.0.0.2"), NOW - 1_000, 0)
            ]
        );
    }

    #[test]
    fn a_push_without_host_points_fills_nothing() {
        let s = samples(&parse("total_traffic,direction=incoming bits=0 1\n").points);
        let banned: HashSet<IpAddr> = [ip("10.0.0.1")].into();
        assert_eq!(
            plan(&s, &banned, Precision::Nanoseconds, NOW),
            Push::default()
        );
    }
}
