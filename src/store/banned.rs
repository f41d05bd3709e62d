//! The banned hosts and their newest samples, kept in memory beside the database: what every
//! checker cycle, Advanced poll and `/write` push reads in full.
//!
//! Read from SQLite, that was one pass over every banned host per cycle: at 100,000 banned
//! hosts (a carpet-bombing attack, most of them below thresholds) about 150 ms of the 180 ms a
//! crossing notification then waited for its route (see BENCHMARKS.md). The recorder is the one
//! writer of hosts and samples, so it keeps this index as it writes: each job's changes are
//! published once the job is acknowledged (before its callers hear so), and a job that fails
//! publishes nothing. After a failure that rolled back work already published, the recorder
//! loads the index again from its own connection; until then, and until its first load at
//! start, readers get `None` and read the database instead, as before.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use ipnet::IpNet;

use super::read::BannedNow;
use crate::clock::Millis;
use crate::fastnetmon::Traffic;

/// One change to the index, in the order the recorder made it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Change {
    /// The host is banned from `since` (its ban's observation time).
    Banned {
        ip: IpAddr,
        since: Millis,
    },
    Unbanned {
        ip: IpAddr,
    },
    /// The host's newest sample, if it is not older than the one it has (as in
    /// `latest_samples`); nothing for a host that is not banned.
    Sample {
        ip: IpAddr,
        at: Millis,
        traffic: Traffic,
    },
}

/// A banned host's newest sample, if it has one.
type Newest = Option<(Millis, Traffic)>;

#[derive(Default)]
struct State {
    /// The database was read into the maps, and every change acknowledged since applied.
    valid: bool,
    /// Each banned host's ban time (its key in `hosts`), in address order: the hosts inside a
    /// prefix are a range of it.
    since: BTreeMap<IpAddr, Millis>,
    /// Oldest ban first, as readers want them: sorting 100,000 hosts at every read took half
    /// of a checker cycle.
    hosts: BTreeMap<(Millis, IpAddr), Newest>,
}

impl State {
    fn ban(&mut self, ip: IpAddr, since: Millis, newest: Newest) {
        if let Some(old) = self.since.insert(ip, since) {
            self.hosts.remove(&(old, ip));
        }
        self.hosts.insert((since, ip), newest);
    }
}

#[derive(Default)]
pub(super) struct BannedIndex {
    state: Mutex<State>,
}

impl BannedIndex {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing here can panic while the lock is held, but a poisoned lock still holds a
        // consistent map: every change is applied whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies acknowledged changes, in order (none while the index is not valid).
    pub fn publish(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let mut s = self.lock();
        if !s.valid {
            return;
        }
        for c in changes {
            match *c {
                Change::Banned { ip, since } => s.ban(ip, since, None),
                Change::Unbanned { ip } => {
                    if let Some(since) = s.since.remove(&ip) {
                        s.hosts.remove(&(since, ip));
                    }
                }
                Change::Sample { ip, at, traffic } => {
                    let Some(&since) = s.since.get(&ip) else {
                        continue;
                    };
                    if let Some(newest) = s.hosts.get_mut(&(since, ip)) {
                        if newest.is_none_or(|(newest, _)| at >= newest) {
                            *newest = Some((at, traffic));
                        }
                    }
                }
            }
        }
    }

    /// Something acknowledged may have been rolled back, or something rolled back published:
    /// readers go to the database until the recorder loads the index again.
    pub fn invalidate(&self) {
        let mut s = self.lock();
        s.valid = false;
        s.since = BTreeMap::new();
        s.hosts = BTreeMap::new();
    }

    pub fn is_valid(&self) -> bool {
        self.lock().valid
    }

    /// Replaces the index with what the database holds (read by the writer, so that nothing
    /// changed between the read and this).
    pub fn load(&self, banned: Vec<BannedNow>) {
        let mut state = State {
            valid: true,
            ..State::default()
        };
        for b in banned {
            state.ban(b.ip, b.since, b.sample);
        }
        *self.lock() = state;
    }

    /// Every banned host with its newest sample, oldest ban first; `None` while the index is
    /// not valid.
    pub fn snapshot(&self) -> Option<Vec<BannedNow>> {
        let s = self.lock();
        s.valid.then(|| {
            s.hosts
                .iter()
                .map(|(&(since, ip), &sample)| BannedNow { ip, since, sample })
                .collect()
        })
    }

    /// The banned hosts inside `net` with their newest samples, oldest ban first (as in
    /// `snapshot`); `None` while the index is not valid. A range of the address map: as cheap
    /// with a million banned hosts elsewhere as with none.
    pub fn within(&self, net: IpNet) -> Option<Vec<BannedNow>> {
        let s = self.lock();
        if !s.valid {
            return None;
        }
        let mut out: Vec<BannedNow> = s
            .since
            .range(net.network()..=net.broadcast())
            .filter_map(|(&ip, &since)| {
                let sample = *s.hosts.get(&(since, ip))?;
                Some(BannedNow { ip, since, sample })
            })
            .collect();
        drop(s);
        out.sort_unstable_by_key(|b| (b.since, b.ip));
        Some(out)
    }

    /// How many banned hosts each prefix holds, in address order, where `covering` gives a
    /// host's prefix (one holding it); `None` while the index is not valid. One pass over the
    /// addresses: a host in the prefix of the one before it is counted without calling
    /// `covering`.
    pub fn prefixes(&self, covering: impl Fn(IpAddr) -> IpNet) -> Option<Vec<(IpNet, usize)>> {
        let s = self.lock();
        if !s.valid {
            return None;
        }
        let mut out: Vec<(IpNet, usize)> = Vec::new();
        for &ip in s.since.keys() {
            match out.last_mut() {
                Some((net, n)) if net.contains(&ip) => *n += 1,
                _ => out.push((covering(ip), 1)),
            }
        }
        Some(out)
    }

    /// Each banned host and since when, oldest ban first; `None` while the index is not valid.
    pub fn since(&self) -> Option<Vec<(IpAddr, Millis)>> {
        let s = self.lock();
        s.valid
            .then(|| s.hosts.keys().map(|&(since, ip)| (ip, since)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn traffic(in_pps: u64) -> Traffic {
        Traffic {
            in_pps,
            ..Traffic::default()
        }
    }

    fn loaded() -> BannedIndex {
        let index = BannedIndex::default();
        index.load(Vec::new());
        index
    }

    #[test]
    fn reads_nothing_until_loaded_and_after_invalidation() {
        let index = BannedIndex::default();
        assert!(index.snapshot().is_none());
        index.publish(&[Change::Banned {
            ip: ip("10.0.0.1"),
            since: 1,
        }]);
        index.load(Vec::new());
        assert_eq!(
            index.snapshot(),
            Some(Vec::new()),
            "nothing published while invalid"
        );
        index.invalidate();
        assert!(index.snapshot().is_none() && index.since().is_none());
    }

    #[test]
    fn applies_bans_unbans_and_newest_samples_in_order() {
        let index = loaded();
        let (a, b) = (ip("10.0.0.1"), ip("2001:db8::1"));
        index.publish(&[
            Change::Banned { ip: b, since: 20 },
            Change::Sample {
                ip: b,
                at: 30,
                traffic: traffic(5),
            },
            // An older sample never replaces a newer one; a host not banned gets none.
            Change::Sample {
                ip: b,
                at: 25,
                traffic: traffic(9),
            },
            Change::Sample {
                ip: a,
                at: 30,
                traffic: traffic(7),
            },
            Change::Banned { ip: a, since: 10 },
        ]);
        assert_eq!(
            index.snapshot(),
            Some(vec![
                BannedNow {
                    ip: a,
                    since: 10,
                    sample: None
                },
                BannedNow {
                    ip: b,
                    since: 20,
                    sample: Some((30, traffic(5)))
                },
            ])
        );
        assert_eq!(index.since(), Some(vec![(a, 10), (b, 20)]));
        index.publish(&[Change::Unbanned { ip: a }, Change::Unbanned { ip: a }]);
        assert_eq!(index.since(), Some(vec![(b, 20)]));
        // Banned again at another time, a host moves (and is there once).
        index.publish(&[
            Change::Banned { ip: a, since: 40 },
            Change::Banned { ip: b, since: 50 },
        ]);
        assert_eq!(index.since(), Some(vec![(a, 40), (b, 50)]));
    }

    #[test]
    fn the_hosts_of_a_prefix_are_read_alone_oldest_ban_first() {
        let index = BannedIndex::default();
        assert!(index.within("10.0.0.0/24".parse().unwrap()).is_none());
        index.load(Vec::new());
        let mut changes = Vec::new();
        // Inside 10.0.1.0/24: its first and last addresses, banned last and first.
        for (i, host) in ["10.0.1.255", "10.0.1.7", "10.0.1.0"].iter().enumerate() {
            changes.push(Change::Banned {
                ip: ip(host),
                since: 100 - i as Millis,
            });
        }
        // Around it, and in the other family.
        for host in ["10.0.0.255", "10.0.2.0", "::a00:105", "2001:db8::1"] {
            changes.push(Change::Banned {
                ip: ip(host),
                since: 1,
            });
        }
        changes.push(Change::Sample {
            ip: ip("10.0.1.7"),
            at: 200,
            traffic: traffic(3),
        });
        index.publish(&changes);
        let inside = index.within("10.0.1.0/24".parse().unwrap()).unwrap();
        assert_eq!(
            inside,
            vec![
                BannedNow {
                    ip: ip("10.0.1.0"),
                    since: 98,
                    sample: None
                },
                BannedNow {
                    ip: ip("10.0.1.7"),
                    since: 99,
                    sample: Some((200, traffic(3)))
                },
                BannedNow {
                    ip: ip("10.0.1.255"),
                    since: 100,
                    sample: None
                },
            ]
        );
        let v6 = index.within("2001:db8::/48".parse().unwrap()).unwrap();
        assert_eq!(
            v6.iter().map(|b| b.ip).collect::<Vec<_>>(),
            [ip("2001:db8::1")]
        );
        assert_eq!(
            index.within("10.0.3.0/24".parse().unwrap()),
            Some(Vec::new())
        );
    }
}
