//! Unit tests of `session`.

use super::*;

fn p(subject: &str, groups: &[&str]) -> Principal {
    Principal::named(subject, groups.iter().map(|g| (*g).to_owned()).collect())
}

fn req<'a>(at: (&'a str, &'a str), session: Option<&'a str>, who: &'a Principal) -> Presented<'a> {
    Presented {
        scope: at.0,
        server: at.1,
        session,
        who,
    }
}

fn held(owner: PrincipalId) -> Bound {
    Bound {
        owner,
        upstream: None,
    }
}

const IDLE: Duration = Duration::from_secs(60);
const CRM: (&str, &str) = ("t1", "crm");

#[test]
fn only_the_owner_is_admitted_and_unknown_ids_follow_the_rule() {
    let t = SessionTable::new(8, IDLE);
    let (a, b) = (p("a", &["x"]), p("b", &["x"]));
    assert!(t.bind("t1", "crm", "s1", &a));
    assert_eq!(t.check(&req(CRM, Some("s1"), &a), Unknown::Refuse), Ok(()));
    // Groups change; the agent does not.
    let a_later = p("a", &["y"]);
    assert_eq!(
        t.check(&req(CRM, Some("s1"), &a_later), Unknown::Refuse),
        Ok(())
    );
    for unknown in [Unknown::Pass, Unknown::Refuse] {
        let stranger = t.check(&req(CRM, Some("s1"), &b), unknown);
        assert_eq!(stranger, Err(SessionRefused::NotOwner));
    }
    // The same id on another server or in another scope is another session.
    for at in [("t1", "hr"), ("t2", "crm")] {
        assert_eq!(t.check(&req(at, Some("s1"), &b), Unknown::Pass), Ok(()));
        let unbound = t.check(&req(at, Some("s1"), &a), Unknown::Refuse);
        assert_eq!(unbound, Err(SessionRefused::Unbound));
    }
    assert_eq!(t.check(&req(CRM, None, &b), Unknown::Refuse), Ok(()));
    // A stranger cannot take a bound id over.
    assert!(!t.bind("t1", "crm", "s1", &b));
    assert_eq!(t.check(&req(CRM, Some("s1"), &a), Unknown::Refuse), Ok(()));
}

#[test]
fn the_least_recently_used_binding_is_evicted_and_then_refused() {
    let mut s = Scope::default();
    let now = Instant::now();
    let a = p("a", &[]).id();
    for i in 0u8..3 {
        assert!(s.bind([i; 32], held(a), now, IDLE, 3));
    }
    // Using the oldest makes the second the least recently used.
    assert_eq!(s.check([0; 32], a, now, IDLE), Some(true));
    assert!(s.bind([3; 32], held(a), now, IDLE, 3));
    assert_eq!(s.entries.len(), 3);
    assert_eq!(s.by_use.len(), 3);
    assert_eq!(s.check([1; 32], a, now, IDLE), None);
    for kept in [0, 2, 3] {
        assert_eq!(s.check([kept; 32], a, now, IDLE), Some(true));
    }
}

#[test]
fn an_idle_binding_expires_and_use_keeps_it_alive() {
    let mut s = Scope::default();
    let t0 = Instant::now();
    let a = p("a", &[]).id();
    assert!(s.bind([1; 32], held(a), t0, IDLE, 8));
    assert!(s.bind([2; 32], held(a), t0, IDLE, 8));
    let t1 = t0 + IDLE / 2;
    assert_eq!(s.check([2; 32], a, t1, IDLE), Some(true));
    let t2 = t0 + IDLE;
    assert_eq!(s.check([1; 32], a, t2, IDLE), None);
    assert_eq!(s.check([2; 32], a, t2, IDLE), Some(true));
    assert_eq!(s.check([2; 32], a, t2 + IDLE, IDLE), None);
    assert!(s.entries.is_empty() && s.by_use.is_empty());
}

#[test]
fn exchanges_bind_new_sessions_and_end_deleted_ones() {
    let t = SessionTable::new(8, IDLE);
    let a = p("a", &[]);
    let (new, s9) = (req(CRM, None, &a), req(CRM, Some("s9"), &a));
    let mut minted = HeaderMap::new();
    let minted = &mut minted;
    minted.insert(SESSION_HEADER, "s9".parse().unwrap());
    let (ok, mut none) = (StatusCode::OK, HeaderMap::new());
    // Only a session-less POST answered with success binds.
    t.learn(&new, &Method::POST, StatusCode::BAD_GATEWAY, minted);
    t.learn(&new, &Method::GET, ok, minted);
    t.learn(&req(CRM, Some("s1"), &a), &Method::POST, ok, minted);
    assert!(t.is_empty("t1"));
    t.learn(&new, &Method::POST, ok, minted);
    assert_eq!(t.check(&s9, Unknown::Refuse), Ok(()));
    // A DELETE the upstream refused leaves the session.
    t.learn(
        &s9,
        &Method::DELETE,
        StatusCode::METHOD_NOT_ALLOWED,
        &mut none,
    );
    assert_eq!(t.len("t1"), 1);
    t.learn(&s9, &Method::DELETE, ok, &mut none);
    assert!(t.is_empty("t1"));
    // An upstream that no longer knows the session ended it.
    t.learn(&new, &Method::POST, ok, minted);
    t.learn(&s9, &Method::POST, StatusCode::NOT_FOUND, &mut none);
    assert!(t.is_empty("t1"));
}

#[test]
fn a_minting_table_never_lets_the_upstreams_id_through() {
    let t = SessionTable::minting(8, IDLE);
    let (a, b) = (p("a", &[]), p("b", &[]));
    let upstream = "4111-1111-1111-1111";
    let mut h = HeaderMap::new();
    h.insert(SESSION_HEADER, upstream.parse().unwrap());
    t.learn(&req(CRM, None, &a), &Method::POST, StatusCode::OK, &mut h);
    let ours = h.get(SESSION_HEADER).unwrap().to_str().unwrap().to_owned();
    assert_ne!(ours, upstream);
    assert_eq!(ours.len(), 32);
    assert!(ours.bytes().all(|c| c.is_ascii_hexdigit()));
    // Only the agent's id is bound, to its owner, and maps back.
    assert_eq!(t.check(&req(CRM, Some(&ours), &a), Unknown::Refuse), Ok(()));
    let stranger = t.check(&req(CRM, Some(&ours), &b), Unknown::Refuse);
    assert_eq!(stranger, Err(SessionRefused::NotOwner));
    let upstreams = t.check(&req(CRM, Some(upstream), &a), Unknown::Refuse);
    assert_eq!(upstreams, Err(SessionRefused::Unbound));
    assert_eq!(t.upstream_id("t1", "crm", &ours).as_deref(), Some(upstream));
    // Within the session the upstream's echo becomes the agent's id.
    let mut echo = HeaderMap::new();
    echo.insert(SESSION_HEADER, upstream.parse().unwrap());
    let within = req(CRM, Some(&ours), &a);
    t.learn(&within, &Method::POST, StatusCode::OK, &mut echo);
    assert_eq!(echo.get(SESSION_HEADER).unwrap(), ours.as_str());
    // Malformed or repeated ids are dropped and bind nothing.
    for bad in [&["sess 1"][..], &["s1", "s2"], &[""]] {
        let mut h = HeaderMap::new();
        for v in bad {
            h.append(SESSION_HEADER, v.parse().unwrap());
        }
        t.learn(&req(CRM, None, &a), &Method::POST, StatusCode::OK, &mut h);
        assert!(h.get(SESSION_HEADER).is_none(), "{bad:?}");
    }
    assert_eq!(t.len("t1"), 1);
    // A failed initialize binds nothing and passes no id.
    let mut h = HeaderMap::new();
    h.insert(SESSION_HEADER, "s2".parse().unwrap());
    t.learn(
        &req(CRM, None, &a),
        &Method::POST,
        StatusCode::BAD_GATEWAY,
        &mut h,
    );
    assert!(h.get(SESSION_HEADER).is_none());
    // DELETE ends the binding and its mapping.
    t.learn(
        &within,
        &Method::DELETE,
        StatusCode::OK,
        &mut HeaderMap::new(),
    );
    assert_eq!(t.upstream_id("t1", "crm", &ours), None);
    assert!(t.is_empty("t1"));
}

#[test]
fn a_stamped_table_mints_ids_that_name_its_gateway() {
    let t = SessionTable::minting(8, IDLE);
    let instance = super::owner::Instance::random();
    t.stamp(instance);
    // The first stamp wins: a table belongs to one gateway.
    t.stamp(super::owner::Instance::random());
    let a = p("a", &[]);
    let mut h = HeaderMap::new();
    h.insert(SESSION_HEADER, "upstream-1".parse().unwrap());
    t.learn(&req(CRM, None, &a), &Method::POST, StatusCode::OK, &mut h);
    let ours = h.get(SESSION_HEADER).unwrap().to_str().unwrap().to_owned();
    assert_eq!(super::owner::stamped(&ours), Some(instance));
    assert!(super::valid_session_id(&ours));
    assert_eq!(t.check(&req(CRM, Some(&ours), &a), Unknown::Refuse), Ok(()));
    // The same random part under another gateway's stamp is not bound.
    let tail = instance.unstamp(&ours).unwrap();
    let other = super::owner::Instance::random().stamp(tail);
    assert_eq!(
        t.check(&req(CRM, Some(&other), &a), Unknown::Refuse),
        Err(SessionRefused::Unbound)
    );
}
