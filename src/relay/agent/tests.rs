//! Unit tests of `relay::agent`.

use super::*;

#[test]
fn routes() {
    let r = route("/t/abc/crm/mcp").unwrap();
    assert_eq!((r.tunnel, r.server), ("abc", "crm"));
    for bad in [
        "/t/abc/crm",
        "/t//crm/mcp",
        "/t/abc/crm/mcp/x",
        "/x/abc/crm/mcp",
        "/t/abc//mcp",
    ] {
        assert!(route(bad).is_none(), "{bad}");
    }
}

#[test]
fn only_allowlisted_headers_go_down() {
    let mut h = HeaderMap::new();
    h.insert("authorization", "Bearer secret".parse().unwrap());
    h.insert("cookie", "a=b".parse().unwrap());
    h.insert("mcp-session-id", "s1".parse().unwrap());
    h.insert("mcp-param-region", "eu".parse().unwrap());
    h.insert(PRINCIPAL_HEADER, "forged".parse().unwrap());
    let out = forwarded_headers(&h, &Principal::anonymous());
    assert!(out.get("authorization").is_none());
    assert!(out.get("cookie").is_none());
    assert_eq!(out.get("mcp-session-id").unwrap(), "s1");
    assert_eq!(out.get("mcp-param-region").unwrap(), "eu");
    let p = Principal::from_header(out.get(PRINCIPAL_HEADER).unwrap().as_bytes()).unwrap();
    assert_eq!(p, Principal::anonymous());
}
