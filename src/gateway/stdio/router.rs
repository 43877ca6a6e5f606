//! Which stream each message from a stdio server goes to: no process and no
//! HTTP here, only the rules, so they are tested on their own.
//!
//! - A response (or error) goes to the request in flight with its id, whose
//!   entry it removes; one that answers nothing in flight is dropped.
//! - A request or notification from the server goes to the newest request
//!   in flight whose client reads a stream (SSE), else to the session's GET
//!   stream, else into a bounded backlog that the next GET stream drains
//!   (full: the oldest message is dropped).
//! - Ids the gateway put in place of the agent's (stateless requests) are
//!   restored on the way out, and a `notifications/cancelled` naming the
//!   agent's id is re-addressed to the one the child knows.
//!
//! Past 400 lines because of its unit tests, which are most of the file.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::mcp::{Kind, McpError};

/// One request written to the child and not answered yet.
pub(super) struct Pending {
    /// The id on the wire to the child (JSON text).
    pub id: String,
    /// The agent's id, when the gateway replaced it (stateless requests).
    pub restore: Option<String>,
    /// Whether its client reads a stream, so server messages may go there.
    pub sse: bool,
    pub tx: mpsc::Sender<Bytes>,
}

/// A request id already in flight on the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request id {0} is already in flight")]
pub(super) struct DuplicateId(pub String);

impl From<DuplicateId> for McpError {
    fn from(e: DuplicateId) -> McpError {
        McpError::InvalidRequest(e.to_string())
    }
}

/// Where [`Router::route`] sends one server message.
#[derive(Debug)]
pub(super) enum Route {
    /// Send `bytes` on `tx`; when that stream is gone, `requeue` says
    /// whether the message waits for the next GET stream
    /// ([`Router::requeue`]) or is lost with it (a response whose client
    /// abandoned the request).
    Deliver {
        tx: mpsc::Sender<Bytes>,
        bytes: Bytes,
        requeue: bool,
    },
    /// Kept in the backlog for the next GET stream; `dropped_oldest` when
    /// the backlog was full and lost its oldest message to make room.
    Backlogged { dropped_oldest: bool },
    /// Nowhere to go (a response to nothing in flight, or one whose id
    /// cannot be restored).
    Dropped,
}

/// The routing state of one stdio session.
pub(super) struct Router {
    /// In-flight requests, oldest first.
    pending: Vec<Pending>,
    get_stream: Option<mpsc::Sender<Bytes>>,
    backlog: VecDeque<Bytes>,
    /// Messages the backlog holds at most.
    backlog_cap: usize,
}

/// `raw` (one JSON-RPC object) with its `id` replaced by `id` (JSON text).
pub(super) fn with_id(raw: &[u8], id: &str) -> Option<Bytes> {
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(raw).ok()?;
    v.insert("id".into(), serde_json::from_str(id).ok()?);
    serde_json::to_vec(&v).ok().map(Bytes::from)
}

impl Router {
    /// An empty router whose backlog holds `backlog_cap` messages.
    pub fn new(backlog_cap: usize) -> Router {
        Router {
            pending: Vec::new(),
            get_stream: None,
            backlog: VecDeque::new(),
            backlog_cap,
        }
    }

    /// Files a request about to be written to the child; an id already in
    /// flight is refused (its answer could not be told apart).
    pub fn register(&mut self, p: Pending) -> Result<(), DuplicateId> {
        if self.pending.iter().any(|q| q.id == p.id) {
            return Err(DuplicateId(p.id));
        }
        self.pending.push(p);
        Ok(())
    }

    /// Forgets the request written as `id` (timed out, or never written):
    /// a late answer to it is dropped.
    pub fn forget(&mut self, id: &str) {
        self.pending.retain(|p| p.id != id);
    }

    /// Takes every request in flight (the process ended) and closes the GET
    /// stream.
    pub fn take_all(&mut self) -> Vec<Pending> {
        self.get_stream = None;
        std::mem::take(&mut self.pending)
    }

    /// Opens a GET stream on `tx`, first handing it the backlog.
    pub fn open_get_stream(&mut self, tx: mpsc::Sender<Bytes>) {
        while let Some(b) = self.backlog.pop_front() {
            let _ = tx.try_send(b);
        }
        self.get_stream = Some(tx);
    }

    /// A `notifications/cancelled` (`raw`) naming one of the agent's
    /// in-flight requests, re-addressed to the id the child knows it by;
    /// `None` when it names none the gateway re-numbered.
    pub fn restamp_cancel(&self, raw: &[u8]) -> Option<Bytes> {
        let mut v: serde_json::Value = serde_json::from_slice(raw).ok()?;
        let theirs = v.pointer("/params/requestId")?.to_string();
        let wire = self
            .pending
            .iter()
            .find(|p| p.restore.as_deref() == Some(theirs.as_str()))
            .map(|p| p.id.clone())?;
        *v.pointer_mut("/params/requestId")? = serde_json::from_str(&wire).ok()?;
        serde_json::to_vec(&v).ok().map(Bytes::from)
    }

    /// Decides where one message from the child goes: `kind`, its `id`
    /// (JSON text, responses) and its bytes.
    pub fn route(&mut self, kind: Kind, id: Option<&str>, raw: Bytes) -> Route {
        match kind {
            Kind::Response | Kind::Error => {
                let id = id.unwrap_or("");
                let Some(i) = self.pending.iter().position(|p| p.id == id) else {
                    return Route::Dropped;
                };
                let p = self.pending.remove(i);
                // The agent's id back in place of the gateway's.
                let bytes = match p.restore {
                    Some(theirs) => match with_id(&raw, &theirs) {
                        Some(b) => b,
                        None => return Route::Dropped,
                    },
                    None => raw,
                };
                Route::Deliver {
                    tx: p.tx,
                    bytes,
                    requeue: false,
                }
            }
            Kind::Request | Kind::Notification => {
                let newest = self
                    .pending
                    .iter()
                    .rev()
                    .find(|p| p.sse)
                    .map(|p| p.tx.clone());
                match newest.or_else(|| self.get_stream.clone()) {
                    Some(tx) => Route::Deliver {
                        tx,
                        bytes: raw,
                        requeue: true,
                    },
                    None => {
                        let full = self.backlog.len() >= self.backlog_cap;
                        if full {
                            self.backlog.pop_front();
                        }
                        self.backlog.push_back(raw);
                        Route::Backlogged {
                            dropped_oldest: full,
                        }
                    }
                }
            }
        }
    }

    /// A server message whose stream the agent closed: it waits for the
    /// next GET stream, if the backlog has room.
    pub fn requeue(&mut self, bytes: Bytes) {
        if self.get_stream.as_ref().is_some_and(|g| g.is_closed()) {
            self.get_stream = None;
        }
        if self.backlog.len() < self.backlog_cap {
            self.backlog.push_back(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::error::TryRecvError;

    const CAP: usize = 3;

    fn pending(id: &str, sse: bool) -> (Pending, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(8);
        let p = Pending {
            id: id.into(),
            restore: None,
            sse,
            tx,
        };
        (p, rx)
    }

    fn response(id: &str) -> Bytes {
        Bytes::from(format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#))
    }

    fn note(n: u32) -> Bytes {
        Bytes::from(format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"n":{n}}}}}"#
        ))
    }

    /// Sends a routed message the way the reader does; the bytes sent.
    fn deliver(r: &mut Router, route: Route) -> Option<Bytes> {
        match route {
            Route::Deliver { tx, bytes, requeue } => match tx.try_send(bytes.clone()) {
                Ok(()) => Some(bytes),
                Err(e) => {
                    if requeue {
                        r.requeue(e.into_inner());
                    }
                    None
                }
            },
            Route::Backlogged { .. } | Route::Dropped => None,
        }
    }

    fn id_of(b: &Bytes) -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(b).unwrap()["id"].clone()
    }

    #[test]
    fn a_response_goes_to_its_request_and_only_once() {
        let mut r = Router::new(CAP);
        let (p, mut rx) = pending("1", false);
        r.register(p).unwrap();
        let route = r.route(Kind::Response, Some("1"), response("1"));
        assert!(deliver(&mut r, route).is_some());
        assert_eq!(rx.try_recv().unwrap(), response("1"));
        // The entry is gone: the same answer again goes nowhere.
        let again = r.route(Kind::Response, Some("1"), response("1"));
        assert!(matches!(again, Route::Dropped), "{again:?}");
    }

    #[test]
    fn out_of_order_answers_reach_their_own_requests() {
        let mut r = Router::new(CAP);
        let (a, mut rx_a) = pending("1", false);
        let (b, mut rx_b) = pending("\"b\"", false);
        r.register(a).unwrap();
        r.register(b).unwrap();
        let route = r.route(Kind::Error, Some("\"b\""), response("\"b\""));
        deliver(&mut r, route);
        let route = r.route(Kind::Response, Some("1"), response("1"));
        deliver(&mut r, route);
        assert_eq!(id_of(&rx_b.try_recv().unwrap()), "b");
        assert_eq!(id_of(&rx_a.try_recv().unwrap()), 1);
        // Each answered entry is gone with its sender: nothing more comes.
        assert_eq!(rx_a.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(rx_b.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn a_response_to_an_unknown_id_is_dropped() {
        let mut r = Router::new(CAP);
        let (p, mut rx) = pending("1", true);
        r.register(p).unwrap();
        for id in [Some("2"), Some("\"1\""), None] {
            let route = r.route(Kind::Response, id, response("2"));
            assert!(matches!(route, Route::Dropped), "{id:?}: {route:?}");
        }
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "nothing reached 1");
        assert!(r.backlog.is_empty(), "a stray response is not kept");
    }

    #[test]
    fn a_duplicate_id_in_flight_is_refused() {
        let mut r = Router::new(CAP);
        let (first, mut rx) = pending("7", false);
        let (second, _rx2) = pending("7", false);
        r.register(first).unwrap();
        assert_eq!(r.register(second).err(), Some(DuplicateId("7".into())));
        // The first request still gets its answer.
        let route = r.route(Kind::Response, Some("7"), response("7"));
        deliver(&mut r, route);
        assert_eq!(rx.try_recv().unwrap(), response("7"));
        // Once answered, the id may be used again.
        let (third, _rx3) = pending("7", false);
        assert_eq!(r.register(third), Ok(()));
    }

    #[test]
    fn a_late_answer_to_a_forgotten_request_is_dropped() {
        let mut r = Router::new(CAP);
        let (p, mut rx) = pending("1", false);
        r.register(p).unwrap();
        r.forget("1");
        let route = r.route(Kind::Response, Some("1"), response("1"));
        assert!(matches!(route, Route::Dropped), "{route:?}");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn a_response_for_an_abandoned_request_is_lost_not_backlogged() {
        let mut r = Router::new(CAP);
        let (p, rx) = pending("1", true);
        r.register(p).unwrap();
        drop(rx); // the agent closed its stream
        let route = r.route(Kind::Response, Some("1"), response("1"));
        assert!(deliver(&mut r, route).is_none());
        assert!(r.backlog.is_empty(), "a response never waits for a GET");
        assert!(r.pending.is_empty());
    }

    #[test]
    fn server_messages_go_to_the_newest_streaming_request() {
        let mut r = Router::new(CAP);
        let (old, mut rx_old) = pending("1", true);
        let (new, mut rx_new) = pending("2", true);
        let (json_only, mut rx_json) = pending("3", false);
        for p in [old, new, json_only] {
            r.register(p).unwrap();
        }
        let (get, mut rx_get) = mpsc::channel(8);
        r.open_get_stream(get);
        let route = r.route(Kind::Notification, None, note(1));
        deliver(&mut r, route);
        assert_eq!(rx_new.try_recv().unwrap(), note(1));
        assert_eq!(rx_old.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(rx_json.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(rx_get.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn with_no_stream_in_flight_server_messages_go_to_the_get_stream() {
        let mut r = Router::new(CAP);
        let (json_only, _rx) = pending("1", false);
        r.register(json_only).unwrap();
        let (get, mut rx_get) = mpsc::channel(8);
        r.open_get_stream(get);
        let route = r.route(Kind::Request, None, note(1));
        deliver(&mut r, route);
        assert_eq!(rx_get.try_recv().unwrap(), note(1));
    }

    #[test]
    fn the_backlog_is_bounded_and_drained_in_order_by_the_next_get() {
        let mut r = Router::new(CAP);
        for n in 1..=5 {
            let route = r.route(Kind::Notification, None, note(n));
            let dropped = n > CAP as u32;
            assert!(
                matches!(route, Route::Backlogged { dropped_oldest } if dropped_oldest == dropped),
                "{n}: {route:?}"
            );
        }
        assert_eq!(r.backlog.len(), CAP);
        let (get, mut rx_get) = mpsc::channel(8);
        r.open_get_stream(get);
        let got: Vec<Bytes> = std::iter::from_fn(|| rx_get.try_recv().ok()).collect();
        assert_eq!(
            got,
            vec![note(3), note(4), note(5)],
            "the oldest went first"
        );
        assert!(r.backlog.is_empty());
    }

    #[test]
    fn a_server_message_whose_stream_closed_waits_for_the_next_get() {
        let mut r = Router::new(CAP);
        let (get, rx_get) = mpsc::channel(8);
        r.open_get_stream(get);
        drop(rx_get);
        let route = r.route(Kind::Notification, None, note(1));
        assert!(deliver(&mut r, route).is_none());
        assert!(r.get_stream.is_none(), "the closed GET stream is forgotten");
        let (get, mut rx_get) = mpsc::channel(8);
        r.open_get_stream(get);
        assert_eq!(rx_get.try_recv().unwrap(), note(1));
    }

    #[test]
    fn requeueing_respects_the_bound() {
        let mut r = Router::new(CAP);
        for n in 1..=5 {
            r.requeue(note(n));
        }
        assert_eq!(
            r.backlog.iter().cloned().collect::<Vec<_>>(),
            vec![note(1), note(2), note(3)],
            "a full backlog keeps what it has"
        );
    }

    #[test]
    fn restored_ids_replace_the_gateways_on_the_way_out() {
        let mut r = Router::new(CAP);
        let (mut p, mut rx) = pending("41", false);
        p.restore = Some("\"agent-a\"".into());
        r.register(p).unwrap();
        let route = r.route(Kind::Response, Some("41"), response("41"));
        deliver(&mut r, route);
        assert_eq!(id_of(&rx.try_recv().unwrap()), "agent-a");
    }

    #[test]
    fn a_cancel_is_readdressed_to_the_wire_id() {
        let mut r = Router::new(CAP);
        let (mut p, _rx) = pending("41", false);
        p.restore = Some("\"agent-a\"".into());
        r.register(p).unwrap();
        let cancel = |id: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{id}}}}}"#
            )
        };
        let out = r.restamp_cancel(cancel("\"agent-a\"").as_bytes()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["params"]["requestId"], 41);
        assert_eq!(r.restamp_cancel(cancel("\"other\"").as_bytes()), None);
    }

    #[test]
    fn a_cancelled_request_stays_in_flight_until_answered() {
        // The agent's cancel is passed on; whether the server still answers
        // is its choice, and an answer that comes goes where it belongs.
        let mut r = Router::new(CAP);
        let (mut p, mut rx) = pending("41", true);
        p.restore = Some("7".into());
        r.register(p).unwrap();
        let cancel =
            br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7}}"#;
        assert!(r.restamp_cancel(cancel).is_some());
        let route = r.route(Kind::Error, Some("41"), response("41"));
        deliver(&mut r, route);
        assert_eq!(id_of(&rx.try_recv().unwrap()), 7);
        assert!(r.pending.is_empty());
    }

    #[test]
    fn ending_the_process_takes_every_request_and_the_get_stream() {
        let mut r = Router::new(CAP);
        let (a, _ra) = pending("1", false);
        let (b, _rb) = pending("2", true);
        r.register(a).unwrap();
        r.register(b).unwrap();
        let (get, _rx_get) = mpsc::channel(8);
        r.open_get_stream(get);
        let ids: Vec<String> = r.take_all().into_iter().map(|p| p.id).collect();
        assert_eq!(ids, vec!["1", "2"]);
        assert!(r.pending.is_empty() && r.get_stream.is_none());
    }
}
