//! Duplicates and reordering (PRODUCT.md section 5): two FastNetMon instances sending the same
//! events, redeliveries of the same notification, and any delivery order end in the state that
//! one in-order stream gives. A property test over random event histories.

use std::collections::BTreeMap;

use fnm_escalator::fastnetmon::notification::parse_json;
use fnm_escalator::store::{Incoming, Store};
use proptest::prelude::*;
use serde_json::json;

const HOSTS: [&str; 4] = ["198.51.100.1", "198.51.100.2", "2001:db8::1", "10.154.0.9"];

/// One event as FastNetMon saw it: a host, ban or unban, at its place in time.
#[derive(Debug, Clone)]
struct Event {
    host: usize,
    ban: bool,
    at: i64,
}

/// A notification as delivered: which event, from which instance.
#[derive(Debug, Clone)]
struct Delivery {
    event: usize,
    instance: char,
}

fn incoming(e: &Event, instance: char, seq: usize) -> Incoming {
    let action = if e.ban { "ban" } else { "unban" };
    let body = json!({"ip": HOSTS[e.host], "action": action, "alert_scope": "host"}).to_string();
    Incoming {
        notification: parse_json(body.as_bytes()).expect("parse"),
        // The second instance sees each event a little later (under the 1 s between events).
        observed_at: if instance == 'b' {
            e.at + (seq as i64 * 37) % 500 + 1
        } else {
            e.at
        },
        received_at: e.at + 5_000,
        // Each instance keys its own notifications; a redelivery reuses the key.
        idempotency_key: Some(format!("{instance}-{seq}")),
        source: "web_callback".into(),
        actor: format!("fastnetmon-{instance}"),
        payload: body,
    }
}

/// Each host's state after recording `deliveries` into a fresh store.
fn final_state(events: &[Event], deliveries: &[Delivery]) -> BTreeMap<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.db").display().to_string())
            .await
            .expect("store");
        for d in deliveries {
            store
                .record_notification(incoming(&events[d.event], d.instance, d.event))
                .await
                .expect("record");
        }
        let mut out = BTreeMap::new();
        for h in HOSTS {
            let row = store.get_host(h.parse().expect("ip")).await.expect("get");
            out.insert(
                h.to_string(),
                row.map_or("unknown".to_string(), |r| r.state),
            );
        }
        let mut banned: Vec<String> = store
            .banned_hosts()
            .await
            .expect("banned")
            .into_iter()
            .map(|r| r.ip)
            .collect();
        banned.sort();
        out.insert("banned".into(), banned.join(","));
        out
    })
}

fn history() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec((0..HOSTS.len(), any::<bool>()), 1..16).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (host, ban))| Event {
                host,
                ban,
                // A second apart, in the recent past.
                at: 1_790_000_000_000 + (i as i64) * 1_000,
            })
            .collect()
    })
}

/// Every event from instances `a` and `b`, some redelivered, all shuffled.
fn scrambled(events: Vec<Event>) -> impl Strategy<Value = (Vec<Event>, Vec<Delivery>)> {
    let n = events.len();
    prop::collection::vec(0..n, 0..n + 1)
        .prop_flat_map(move |redelivered| {
            let mut d: Vec<Delivery> = (0..n)
                .flat_map(|event| {
                    [
                        Delivery {
                            event,
                            instance: 'a',
                        },
                        Delivery {
                            event,
                            instance: 'b',
                        },
                    ]
                })
                .collect();
            d.extend(redelivered.into_iter().map(|event| Delivery {
                event,
                instance: 'a',
            }));
            Just(d).prop_shuffle()
        })
        .prop_map(move |d| (events.clone(), d))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn duplicated_and_reordered_delivery_ends_in_the_in_order_state(
        (events, deliveries) in history().prop_flat_map(scrambled)
    ) {
        let in_order: Vec<Delivery> = (0..events.len())
            .map(|event| Delivery { event, instance: 'a' })
            .collect();
        let want = final_state(&events, &in_order);
        let got = final_state(&events, &deliveries);
        prop_assert_eq!(got, want);
    }
}
