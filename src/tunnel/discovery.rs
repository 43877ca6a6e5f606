//! Relay discovery: a relay name resolved to every address behind it (all
//! A/AAAA records, the way a Kubernetes headless Service lists its pods),
//! and the plan that brings the gateway's connection slots in line with the
//! latest answer. The pool in [`connector`](super::connector) runs the plan;
//! everything here is pure but [`resolve`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use super::dial::RelayTarget;
use crate::limits;

/// Why a relay name gave no addresses this time.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot resolve {name}: {source}")]
    Lookup {
        name: String,
        source: std::io::Error,
    },
    #[error("{name} resolved to no address")]
    Empty { name: String },
    #[error("resolving {name} timed out")]
    Timeout { name: String },
}

/// Resolves `host:port` with the system resolver (getaddrinfo: `/etc/hosts`,
/// then the DNS servers of `resolv.conf`) to its addresses, deduplicated and
/// sorted, at most [`limits::MAX_RELAY_ADDRESSES`] of them.
pub async fn resolve(name: &str) -> Result<Vec<SocketAddr>, DiscoveryError> {
    let lookup = tokio::net::lookup_host(name);
    let found = tokio::time::timeout(limits::RESOLVE_TIMEOUT, lookup)
        .await
        .map_err(|_| DiscoveryError::Timeout {
            name: name.to_owned(),
        })?
        .map_err(|source| DiscoveryError::Lookup {
            name: name.to_owned(),
            source,
        })?;
    // getaddrinfo lists an address once per socket type it could serve;
    // the set also makes the answer's (rotating) order irrelevant.
    let set: BTreeSet<SocketAddr> = found.collect();
    if set.is_empty() {
        return Err(DiscoveryError::Empty {
            name: name.to_owned(),
        });
    }
    Ok(set.into_iter().take(limits::MAX_RELAY_ADDRESSES).collect())
}

/// The address of every relay to dial: each name's latest good answer, an
/// address given by two names dialled once (as the first name's target),
/// at most [`limits::MAX_RELAY_ADDRESSES`] in all. `answers[i]` is what
/// `names[i]` last resolved to; a name whose lookups have all failed so far
/// has none.
pub fn targets(
    names: &[RelayTarget],
    answers: &[Vec<SocketAddr>],
) -> BTreeMap<SocketAddr, RelayTarget> {
    let mut out = BTreeMap::new();
    for (name, addrs) in names.iter().zip(answers) {
        for &addr in addrs {
            if out.len() >= limits::MAX_RELAY_ADDRESSES {
                return out;
            }
            out.entry(addr).or_insert_with(|| RelayTarget {
                resolved: Some(addr),
                ..name.clone()
            });
        }
    }
    out
}

/// One connection slot of a discovered relay address: the `n`th to `addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SlotKey {
    pub addr: SocketAddr,
    pub n: usize,
}

/// Connections to keep to each of `addresses` relay addresses:
/// `per_relay`, raised so that the total reaches
/// [`limits::MIN_TUNNEL_CONNECTIONS`].
pub fn per_address(addresses: usize, per_relay: usize) -> usize {
    if addresses == 0 {
        return 0;
    }
    per_relay.max(limits::MIN_TUNNEL_CONNECTIONS.div_ceil(addresses))
}

/// What to change to go from the slots `running` to `per_relay`
/// connections (see [`per_address`]) to each address in `wanted`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Slots to start.
    pub start: Vec<SlotKey>,
    /// Slots to drain and stop.
    pub stop: Vec<SlotKey>,
    /// Addresses no slot was running for.
    pub added: Vec<SocketAddr>,
    /// Addresses no slot will run for.
    pub removed: Vec<SocketAddr>,
}

/// The [`Plan`] from `running` to `wanted`. An empty `wanted` is the caller's
/// to refuse (a DNS hiccup must not drop every connection); given one, the
/// plan stops everything.
pub fn plan(running: &BTreeSet<SlotKey>, wanted: &BTreeSet<SocketAddr>, per_relay: usize) -> Plan {
    let k = per_address(wanted.len(), per_relay);
    let want: BTreeSet<SlotKey> = wanted
        .iter()
        .flat_map(|&addr| (0..k).map(move |n| SlotKey { addr, n }))
        .collect();
    let before: BTreeSet<SocketAddr> = running.iter().map(|s| s.addr).collect();
    Plan {
        start: want.difference(running).copied().collect(),
        stop: running.difference(&want).copied().collect(),
        added: wanted.difference(&before).copied().collect(),
        removed: before.difference(wanted).copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn set(addrs: &[&str]) -> BTreeSet<SocketAddr> {
        addrs.iter().map(|s| a(s)).collect()
    }

    fn slots(keys: &[(&str, usize)]) -> BTreeSet<SlotKey> {
        keys.iter()
            .map(|&(s, n)| SlotKey { addr: a(s), n })
            .collect()
    }

    fn keys(keys: &[(&str, usize)]) -> Vec<SlotKey> {
        slots(keys).into_iter().collect()
    }

    const A: &str = "10.0.0.1:8443";
    const B: &str = "10.0.0.2:8443";
    const C: &str = "[fd00::3]:8443";

    #[test]
    fn a_single_relay_address_still_gets_two_connections() {
        assert_eq!(per_address(1, 1), 2);
        assert_eq!(per_address(2, 1), 1);
        assert_eq!(per_address(3, 1), 1);
        assert_eq!(per_address(1, 3), 3);
        assert_eq!(per_address(5, 2), 2);
        assert_eq!(per_address(0, 4), 0);
    }

    #[test]
    fn the_first_answer_starts_every_slot() {
        let p = plan(&BTreeSet::new(), &set(&[A, B]), 1);
        assert_eq!(p.start, keys(&[(A, 0), (B, 0)]));
        assert!(p.stop.is_empty());
        assert_eq!(p.added, vec![a(A), a(B)]);
        assert!(p.removed.is_empty());
    }

    #[test]
    fn the_same_answer_changes_nothing() {
        let running = slots(&[(A, 0), (A, 1), (B, 0), (B, 1)]);
        assert_eq!(plan(&running, &set(&[B, A]), 2), Plan::default());
    }

    #[test]
    fn an_address_that_appears_is_dialled_and_one_that_goes_is_drained() {
        let running = slots(&[(A, 0), (B, 0)]);
        let p = plan(&running, &set(&[B, C]), 1);
        assert_eq!(p.start, keys(&[(C, 0)]));
        assert_eq!(p.stop, keys(&[(A, 0)]));
        assert_eq!(p.added, vec![a(C)]);
        assert_eq!(p.removed, vec![a(A)]);
    }

    #[test]
    fn going_down_to_one_address_doubles_up_on_it_and_back() {
        let two = slots(&[(A, 0), (B, 0)]);
        let p = plan(&two, &set(&[A]), 1);
        assert_eq!(p.start, keys(&[(A, 1)]));
        assert_eq!(p.stop, keys(&[(B, 0)]));
        assert_eq!(p.removed, vec![a(B)]);

        let one = slots(&[(A, 0), (A, 1)]);
        let p = plan(&one, &set(&[A, B]), 1);
        assert_eq!(p.start, keys(&[(B, 0)]));
        assert_eq!(p.stop, keys(&[(A, 1)]));
        assert_eq!(p.added, vec![a(B)]);
        assert!(p.removed.is_empty());
    }

    #[test]
    fn an_empty_answer_would_stop_everything_so_callers_refuse_it() {
        let p = plan(&slots(&[(A, 0), (A, 1)]), &BTreeSet::new(), 1);
        assert_eq!(p.stop.len(), 2);
        assert!(p.start.is_empty());
    }

    fn target(addr: &str, server_name: &str) -> RelayTarget {
        RelayTarget {
            server_name: server_name.into(),
            ..RelayTarget::new(addr)
        }
    }

    #[test]
    fn targets_dial_each_address_once_verifying_its_names_certificate() {
        let names = [
            target("relays.test:8443", "relays.test"),
            target("other.test:8443", "override.test"),
        ];
        let answers = [vec![a(A), a(B)], vec![a(B), a(C)]];
        let t = targets(&names, &answers);
        assert_eq!(
            t.keys().copied().collect::<Vec<_>>(),
            vec![a(A), a(B), a(C)]
        );
        assert_eq!(t[&a(B)].server_name, "relays.test");
        assert_eq!(t[&a(B)].addr, "relays.test:8443");
        assert_eq!(t[&a(B)].resolved, Some(a(B)));
        assert_eq!(t[&a(C)].server_name, "override.test");
        // A name that never resolved contributes nothing.
        assert_eq!(targets(&names, &[vec![], vec![a(C)]]).len(), 1);
    }

    #[test]
    fn a_huge_answer_is_cut_to_the_address_limit() {
        let names = [target("relays.test:8443", "relays.test")];
        let many: Vec<SocketAddr> = (0..1000u32)
            .map(|i| SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + i), 8443)))
            .collect();
        assert_eq!(targets(&names, &[many]).len(), limits::MAX_RELAY_ADDRESSES);
    }

    #[tokio::test]
    async fn resolving_gives_every_address_once() {
        let got = resolve("127.0.0.1:8443").await.unwrap();
        assert_eq!(got, vec![a("127.0.0.1:8443")]);
        let err = resolve("no-such-relay.invalid:8443").await.unwrap_err();
        assert!(err.to_string().contains("no-such-relay.invalid"), "{err}");
    }
}
