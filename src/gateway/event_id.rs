//! SSE event ids the agent sees: minted by the gateway, never upstream text.
//!
//! An upstream's event id is attacker-controlled text (a hostile server
//! could write a card number into it) and the agent echoes it back in
//! `Last-Event-ID`. So the gateway seals each id, together with the request
//! id of the stream it belongs to, under a key only this gateway process
//! holds (AES-256-GCM with a synthetic nonce: an HMAC of the id and its
//! scope, so the same event replayed gets the same id, and different events
//! never share a nonce), bound to the server,
//! session and principal it was minted for. On resumption the gateway opens
//! the sealed id: the upstream gets its own id back, and the gateway knows
//! which request the resumed stream answers. Nothing is stored, so memory
//! does not grow with streams; an id from another principal or session, or
//! from before a gateway restart, does not open.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::session::owner::Instance;

/// Longest upstream event id the gateway seals; an event whose id is longer
/// is still delivered, without an id (it cannot be resumed from).
pub const MAX_UPSTREAM_EVENT_ID: usize = 256;

/// What a minted id is bound to: only the same server, session and
/// principal can resume from it.
pub struct Scope<'a> {
    pub server: &'a str,
    pub session: Option<&'a str>,
    pub subject: &'a str,
}

impl Scope<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(self.server.len() + self.subject.len() + 64);
        for part in [self.server, self.session.unwrap_or(""), self.subject] {
            aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad
    }
}

/// What a sealed id carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Opened {
    /// The upstream's own event id.
    pub upstream: String,
    /// The JSON-RPC id (raw text) of the request whose stream the event was
    /// on, when it was a POST stream.
    pub request: Option<String>,
    /// That request's method and target (tool, prompt or resource): a
    /// resumed stream is checked as the call it belongs to.
    pub method: Option<String>,
    pub target: Option<String>,
}

/// The call a stream answers, sealed with each of its event ids.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamOf<'a> {
    pub request: Option<&'a str>,
    pub method: Option<&'a str>,
    pub target: Option<&'a str>,
}

/// Length-prefixed fields; `u32::MAX` marks an absent one.
fn put(out: &mut Vec<u8>, field: Option<&str>) {
    match field {
        Some(f) => {
            out.extend_from_slice(&(f.len() as u32).to_be_bytes());
            out.extend_from_slice(f.as_bytes());
        }
        None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
    }
}

fn take(rest: &mut &[u8]) -> Option<Option<String>> {
    let (len, tail) = rest.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len);
    if len == u32::MAX {
        *rest = tail;
        return Some(None);
    }
    let field = tail.get(..len as usize)?;
    *rest = tail.get(len as usize..)?;
    Some(Some(String::from_utf8(field.to_vec()).ok()?))
}

/// The gateway's sealing key.
pub struct EventIds {
    /// Stamped on every id, so a relay routes a resumption here.
    instance: Instance,
    key: LessSafeKey,
    nonces: hmac::Key,
}

impl EventIds {
    /// A fresh random key for the gateway `instance`; `None` only if the
    /// system has no randomness.
    pub fn new(instance: Instance) -> Option<EventIds> {
        let rng = SystemRandom::new();
        let mut bytes = [0u8; 32];
        rng.fill(&mut bytes).ok()?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).ok()?;
        rng.fill(&mut bytes).ok()?;
        Some(EventIds {
            instance,
            key: LessSafeKey::new(key),
            nonces: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        })
    }

    /// The id the agent sees for `upstream` on a stream answering `stream`;
    /// `None` when the upstream id is too long to carry.
    pub fn seal(&self, scope: &Scope<'_>, upstream: &str, stream: StreamOf<'_>) -> Option<String> {
        let long = |f: Option<&str>| f.is_some_and(|f| f.len() > 4096);
        if upstream.len() > MAX_UPSTREAM_EVENT_ID
            || long(stream.request)
            || long(stream.method)
            || long(stream.target)
        {
            return None;
        }
        let mut plain = Vec::with_capacity(64 + upstream.len());
        put(&mut plain, Some(upstream));
        put(&mut plain, stream.request);
        put(&mut plain, stream.method);
        put(&mut plain, stream.target);
        let aad = scope.aad();
        let mut ctx = hmac::Context::with_key(&self.nonces);
        ctx.update(&aad);
        ctx.update(&plain);
        let tag = ctx.sign();
        let nonce: [u8; NONCE_LEN] = tag.as_ref().get(..NONCE_LEN)?.try_into().ok()?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut plain,
            )
            .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&plain);
        Some(self.instance.stamp(&URL_SAFE_NO_PAD.encode(out)))
    }

    /// Opens an id this gateway minted for `scope`; `None` for anything else.
    pub fn open(&self, scope: &Scope<'_>, minted: &str) -> Option<Opened> {
        if minted.len() > 2 * (MAX_UPSTREAM_EVENT_ID + 3 * 4096 + 64) {
            return None;
        }
        let mut raw = URL_SAFE_NO_PAD
            .decode(self.instance.unstamp(minted)?)
            .ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let mut sealed = raw.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&raw).ok()?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(scope.aad()), &mut sealed)
            .ok()?;
        let mut rest: &[u8] = plain;
        let upstream = take(&mut rest)??;
        let request = take(&mut rest)?;
        let method = take(&mut rest)?;
        let target = take(&mut rest)?;
        rest.is_empty().then_some(Opened {
            upstream,
            request,
            method,
            target,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: Scope<'static> = Scope {
        server: "crm",
        session: Some("s1"),
        subject: "alice",
    };

    #[test]
    fn minted_ids_open_only_for_their_scope() {
        let instance = Instance::random();
        let ids = EventIds::new(instance).unwrap();
        let call = StreamOf {
            request: Some("7"),
            method: Some("tools/call"),
            target: Some("lookup"),
        };
        let minted = ids.seal(&ALICE, "4111 1111 1111 1111", call).unwrap();
        assert!(!minted.contains("4111"), "upstream text shows: {minted}");
        assert_eq!(
            ids.open(&ALICE, &minted),
            Some(Opened {
                upstream: "4111 1111 1111 1111".into(),
                request: Some("7".into()),
                method: Some("tools/call".into()),
                target: Some("lookup".into()),
            })
        );
        let others = [
            Scope {
                subject: "bob",
                ..ALICE
            },
            Scope {
                session: Some("s2"),
                ..ALICE
            },
            Scope {
                session: None,
                ..ALICE
            },
            Scope {
                server: "hr",
                ..ALICE
            },
        ];
        for scope in &others {
            assert_eq!(ids.open(scope, &minted), None);
        }
        // It names its gateway, for the relays' routing.
        assert_eq!(crate::session::owner::stamped(&minted), Some(instance));
        // Another gateway process (another key) cannot open it either, even
        // one claiming the same instance.
        assert_eq!(EventIds::new(instance).unwrap().open(&ALICE, &minted), None);
        // A replayed event gets the id it had; other events, other ids.
        assert_eq!(
            ids.seal(&ALICE, "e1", StreamOf::default()),
            ids.seal(&ALICE, "e1", StreamOf::default())
        );
        assert_ne!(
            ids.seal(&ALICE, "e1", StreamOf::default()),
            ids.seal(&ALICE, "e2", StreamOf::default())
        );
        assert_ne!(
            ids.seal(&ALICE, "e1", StreamOf::default()),
            ids.seal(
                &ALICE,
                "e1",
                StreamOf {
                    request: Some("1"),
                    ..StreamOf::default()
                }
            )
        );
    }

    #[test]
    fn garbage_and_tampering_do_not_open() {
        let instance = Instance::random();
        let ids = EventIds::new(instance).unwrap();
        let minted = ids.seal(&ALICE, "e1", StreamOf::default()).unwrap();
        let sealed = instance.unstamp(&minted).unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = instance.stamp(&URL_SAFE_NO_PAD.encode(bytes));
        let unstamped = sealed.to_owned();
        let restamped = Instance::random().stamp(sealed);
        for bad in [
            "",
            "x",
            "!!!!",
            &tampered,
            &unstamped,
            &restamped,
            &"A".repeat(100_000),
        ] {
            assert_eq!(ids.open(&ALICE, bad), None, "{bad:.20}");
        }
        assert_eq!(
            ids.open(&ALICE, &minted).map(|o| (o.upstream, o.request)),
            Some(("e1".into(), None))
        );
        assert_eq!(
            ids.seal(
                &ALICE,
                &"x".repeat(MAX_UPSTREAM_EVENT_ID + 1),
                StreamOf::default()
            ),
            None
        );
    }
}
