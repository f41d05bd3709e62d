// Invariants shared by the targets that produce a `Notification`.

use fnm_escalator::fastnetmon::{Action, Notification, ParseError, Scope};

pub fn check_result(r: &Result<Notification, ParseError>) {
    match r {
        Ok(n) => check_notification(n),
        Err(e) => assert!(
            !e.to_string().trim().is_empty(),
            "empty error message: {e:?}"
        ),
    }
}

pub fn check_notification(n: &Notification) {
    assert_eq!(Action::parse(n.action.as_str()), Some(n.action));
    match &n.scope {
        Scope::Host { ip } => {
            // A valid address that survives a text round trip.
            let back: std::net::IpAddr = ip.to_string().parse().expect("host ip round trip");
            assert_eq!(&back, ip);
        }
        Scope::Hostgroup { networks, .. } => {
            for net in networks {
                assert_eq!(net.trunc(), *net, "host bits left in {net}");
                assert!(net.prefix_len() <= net.max_prefix_len());
            }
        }
    }
    // Whatever was accepted can be stored and answered as JSON.
    serde_json::to_string(n).expect("a parsed notification serialises");
}
