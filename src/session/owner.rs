//! Which gateway owns a session: the routing half of gateway replicas.
//!
//! Several gateways may serve one tunnel. A session lives in exactly one of
//! them (its upstream session, its stdio process, its event-id key), so
//! every request of a session must reach that one. Each gateway process
//! picks a random [`Instance`] at start, announces it when it opens a
//! tunnel connection, and writes it in front of every id it hands an agent:
//! the `Mcp-Session-Id`s it mints and the SSE event ids it seals
//! (`{instance}.{id}`). A relay reads the owner back from the request
//! alone ([`owner_of`]), so any relay replica routes it without sharing
//! state with the others, and one that has no connection of that owner
//! answers as for an expired session: the agent initializes a new one.
//!
//! The prefix routes; it does not authorize. An agent that writes another
//! instance into an id only reaches that gateway, which refuses a session it
//! did not bind to this agent ([`super::SessionTable`] fails closed), as
//! every gateway already does. So the prefix needs no MAC: knowing an
//! instance grants nothing, and the relay keeps its own early check of the
//! session's principal.

use std::fmt;

use http::HeaderMap;

/// Hex digits of an instance id (64 random bits).
const INSTANCE_HEX: usize = 16;

/// Header of the tunnel upgrade request naming the dialling gateway's
/// instance.
pub const INSTANCE_HEADER: &str = "portcullis-instance";

/// The SSE resumption header.
pub const LAST_EVENT_ID_HEADER: &str = "last-event-id";

/// One gateway process: 64 random bits, fixed for its lifetime. A restarted
/// gateway is a new instance, so sessions of the old one end cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Instance([u8; INSTANCE_HEX]);

impl Instance {
    /// A fresh random instance.
    pub fn random() -> Instance {
        let mut bytes = [0u8; INSTANCE_HEX / 2];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        let mut hex = [b'0'; INSTANCE_HEX];
        // The lengths match, so this cannot fail; zeros would still parse.
        let _ = hex::encode_to_slice(bytes, &mut hex);
        Instance(hex)
    }

    /// Parses the text form: exactly 16 lower-case hex digits.
    pub fn parse(text: &str) -> Option<Instance> {
        let bytes: [u8; INSTANCE_HEX] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            .then_some(Instance(bytes))
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        // Only hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// `id` as the agent sees it: this instance in front.
    pub fn stamp(&self, id: &str) -> String {
        format!("{}.{id}", self.as_str())
    }

    /// The id this instance stamped, without the stamp; `None` for an id
    /// stamped by another instance, or not at all.
    pub fn unstamp<'a>(&self, id: &'a str) -> Option<&'a str> {
        id.strip_prefix(self.as_str())?.strip_prefix('.')
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The instance stamped on an id, if it carries one.
pub fn stamped(id: &str) -> Option<Instance> {
    let (head, rest) = id.split_once('.')?;
    if rest.is_empty() {
        return None;
    }
    Instance::parse(head)
}

/// What ties a request to one gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Its `Mcp-Session-Id` was minted by this instance.
    Session(Instance),
    /// Its `Last-Event-ID` was sealed by this instance (a stream resumed
    /// without a session).
    Stream(Instance),
}

impl Owner {
    pub fn instance(&self) -> Instance {
        match self {
            Owner::Session(i) | Owner::Stream(i) => *i,
        }
    }
}

/// The gateway a request must reach, read from its headers alone: the
/// session's owner, else the resumed stream's; `None` when any gateway of
/// the tunnel may serve it (a new session, a stateless request, or an id
/// without a stamp, which the gateway that gets it judges).
pub fn owner_of(headers: &HeaderMap) -> Option<Owner> {
    let one = |name: &str| {
        let mut all = headers.get_all(name).iter();
        match (all.next(), all.next()) {
            (Some(v), None) => v.to_str().ok().and_then(stamped),
            _ => None,
        }
    };
    // A request that presents a session is the session's, whatever else
    // it carries; two ids or an unstamped one route nowhere in particular,
    // and the gateway that gets it refuses or judges it.
    if headers.contains_key(crate::mcp::era::SESSION_HEADER) {
        return one(crate::mcp::era::SESSION_HEADER).map(Owner::Session);
    }
    one(LAST_EVENT_ID_HEADER).map(Owner::Stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_stamped_id_names_its_instance_and_only_it_unstamps_it() {
        let a = Instance::random();
        let b = Instance::random();
        assert_ne!(a, b);
        let id = a.stamp("0123abcd");
        assert_eq!(stamped(&id), Some(a));
        assert_eq!(a.unstamp(&id), Some("0123abcd"));
        assert_eq!(b.unstamp(&id), None);
        assert_eq!(a.unstamp("0123abcd"), None);
        assert_eq!(Instance::parse(a.as_str()), Some(a));
    }

    #[test]
    fn ids_without_a_well_formed_stamp_name_no_owner() {
        for id in [
            "",
            "abc",
            "0123456789abcdef",
            "0123456789abcdef.",
            "0123456789ABCDEF.x",
            "0123456789abcde.x",
            "0123456789abcdef0.x",
            "g123456789abcdef.x",
            ".0123456789abcdef",
        ] {
            assert_eq!(stamped(id), None, "{id:?}");
        }
        assert!(stamped("0123456789abcdef.x").is_some());
    }

    #[test]
    fn the_session_decides_then_the_stream_and_repeated_headers_name_none() {
        let (a, b) = (Instance::random(), Instance::random());
        let mut h = HeaderMap::new();
        assert_eq!(owner_of(&h), None);
        h.insert(
            LAST_EVENT_ID_HEADER,
            HeaderValue::from_str(&b.stamp("ev")).unwrap(),
        );
        assert_eq!(owner_of(&h), Some(Owner::Stream(b)));
        h.insert(
            crate::mcp::era::SESSION_HEADER,
            HeaderValue::from_str(&a.stamp("s")).unwrap(),
        );
        assert_eq!(owner_of(&h), Some(Owner::Session(a)));
        h.append(
            crate::mcp::era::SESSION_HEADER,
            HeaderValue::from_str(&b.stamp("s")).unwrap(),
        );
        // Two session ids: the relay does not pick one (the gateway refuses
        // the request), nor falls back to the stream.
        assert_eq!(owner_of(&h), None);
    }
}
