//! Walks a JSON text token by token and redacts every string, object key and
//! number in place.
//!
//! The walker works on the text rather than on a parsed `Value`: untouched
//! parts are copied byte for byte (ids keep their exact spelling, keys their
//! order), every token actually present is scanned, and a clean message
//! costs no allocation beyond the strings that need unescaping.
//!
//! Over 400 lines: the walk is one state machine over the token stream, and
//! the token readers below it are only used by it. The encoding layers a
//! string is opened in live in `layers`.

pub mod layers;
mod parts;

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use portcullis_plugin_sdk::Value;

use crate::config::{Action, Config, allow_key};
use crate::detect::{self, Hint, Hit, hinted, key_hint, tail};
use crate::normalize::normalize;
use crate::render::{canonical, render};
use crate::swar;

/// JSON directly inside JSON strings is opened this many levels deep; JSON
/// deeper than that blocks the message.
pub const MAX_EMBED: u8 = 4;
/// Nesting allowed inside an embedded JSON text (the host already limits
/// the message itself); deeper blocks the message.
pub const MAX_EMBED_NESTING: usize = 128;

/// Why a walk stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// A detector whose action is `block` found something.
    Block(usize),
    /// Not JSON this walker can read.
    Malformed,
    /// JSON or encodings nested deeper than the walker opens, or more
    /// encoded text than it decodes per message.
    TooDeep,
}

/// How deep a value sits: JSON texts opened inside strings, and layers of
/// any kind (JSON and encodings) opened around it.
#[derive(Clone, Copy, Debug, Default)]
struct Depth {
    json: u8,
    layers: u8,
}

/// Where a value sits in the JSON-RPC message (top level only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Tag {
    #[default]
    None,
    Top,
    Params,
    Meta,
    Result,
    Structured,
    Content,
    ContentItem,
    ContentText,
    /// `messages` of a prompt result or a sampling request, one item, its
    /// `content`.
    Messages,
    MessageItem,
    MessageContent,
}

/// The context of the next value.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    hint: Hint,
    /// Protocol values passed through unscanned.
    protect: bool,
    /// A `blob`: base64 whatever it decodes to.
    blob: bool,
    tag: Tag,
}

struct Frame {
    obj: bool,
    /// Offset of the `{` or `[`.
    start: usize,
    /// The tag of this container.
    own: Tag,
    /// The context of the current child value.
    child: Slot,
    /// Key names, collected only when a key is renamed.
    keys: Option<Box<Keys>>,
}

struct Keys {
    original: HashSet<String>,
    renamed: HashSet<String>,
    /// Per new name, the next `#n` suffix to try: every smaller one is
    /// taken, so an object of many keys renamed alike costs one try each.
    next: HashMap<String, usize>,
}

#[cfg(test)]
thread_local! {
    /// Names tried by `unique_key` on this thread.
    static TRIED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Keys {
    fn taken(&self, name: &str) -> bool {
        #[cfg(test)]
        TRIED.with(|n| n.set(n.get() + 1));
        self.original.contains(name) || self.renamed.contains(name)
    }
}

/// Output positions kept to make a JSON text block match
/// `structuredContent` afterwards.
#[derive(Default)]
struct Spans {
    /// `result.structuredContent`: input start/end, output start/end.
    structured: Option<[usize; 4]>,
    /// `result.content[].text` strings that look like JSON: the original
    /// text and the output span of the string token.
    texts: Vec<(String, usize, usize)>,
    /// Input spans of the text parts (`content[].text`,
    /// `messages[].content.text`), in order.
    parts: Vec<(usize, usize)>,
}

/// The output of a walk, built only once something changes.
struct Out<'t> {
    src: &'t str,
    buf: String,
    last: usize,
    changed: bool,
}

impl<'t> Out<'t> {
    fn new(src: &'t str) -> Self {
        Out {
            src,
            buf: String::new(),
            last: 0,
            changed: false,
        }
    }

    /// Replaces input `start..end` with `with` (JSON text).
    fn replace(&mut self, start: usize, end: usize, with: &str) {
        if !self.changed {
            self.buf.reserve(self.src.len() + 64);
            self.changed = true;
        }
        self.buf.push_str(&self.src[self.last..start]);
        self.buf.push_str(with);
        self.last = end;
    }

    /// Where input offset `at` (not before the last replacement) lands in
    /// the output.
    fn pos(&self, at: usize) -> usize {
        self.buf.len() + (at - self.last)
    }

    fn finish(mut self) -> Option<String> {
        if !self.changed {
            return None;
        }
        self.buf.push_str(&self.src[self.last..]);
        Some(self.buf)
    }
}

/// One message's scan: the configuration, counts per detector, scratch.
pub struct Redactor<'c> {
    cfg: &'c Config,
    /// Replacements made, per detector index.
    pub counts: Vec<u64>,
    hits: Vec<Hit>,
    /// Replacements made so far, and the detector of the last one: a layer
    /// whose policy is `block` refuses the message when it grew.
    replaced: u64,
    last_det: usize,
    /// Bytes decoded so far (bounded by `layers::MAX_DECODED_BYTES`).
    decoded: usize,
}

impl<'c> Redactor<'c> {
    pub fn new(cfg: &'c Config) -> Self {
        Redactor {
            cfg,
            counts: vec![0; cfg.detectors.len()],
            hits: Vec::new(),
            replaced: 0,
            last_det: usize::MAX,
            decoded: 0,
        }
    }

    /// Redacts one JSON-RPC message. `method` is the host's (for responses,
    /// the request's). `Ok(None)`: nothing found.
    pub fn message(&mut self, text: &str, method: Option<&str>) -> Result<Option<String>, Stop> {
        let (out, spans) = self.walk(text, Some(method), Depth::default())?;
        let (input, out, spans) = match self.split(text, &spans.parts)? {
            // A value split across parts: walk again with its pieces masked.
            Some((masked, redactor)) => {
                *self = redactor;
                let (out, spans) = self.walk(&masked, Some(method), Depth::default())?;
                let out = out.unwrap_or_else(|| masked.clone());
                (Cow::Owned(masked), Some(out), spans)
            }
            None => (Cow::Borrowed(text), out, spans),
        };
        let Some(mut out) = out else { return Ok(None) };
        if let Some(st) = spans.structured {
            same_as_structured(&input, &mut out, st, spans.texts);
        }
        Ok(Some(out))
    }

    /// Walks one JSON text. `top` is `Some(method)` for the message itself,
    /// `None` for JSON found inside a string.
    fn walk(
        &mut self,
        text: &str,
        top: Option<Option<&str>>,
        depth: Depth,
    ) -> Result<(Option<String>, Spans), Stop> {
        enum St {
            Value,
            After,
            Key,
        }
        let b = text.as_bytes();
        let method = top.flatten();
        let mut out = Out::new(text);
        let mut spans = Spans::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut slot = Slot {
            tag: if top.is_some() { Tag::Top } else { Tag::None },
            ..Slot::default()
        };
        let mut i = 0;
        let mut st = St::Value;
        loop {
            match st {
                St::Value => {
                    i = ws(b, i);
                    let Some(&c) = b.get(i) else {
                        return Err(Stop::Malformed);
                    };
                    let start = i;
                    let out_start = out.pos(i);
                    match c {
                        b'{' | b'[' => {
                            if top.is_none() && stack.len() >= MAX_EMBED_NESTING {
                                return Err(Stop::TooDeep);
                            }
                            let obj = c == b'{';
                            let child = match (obj, slot.tag) {
                                (true, _) => Slot::default(),
                                (false, Tag::Content | Tag::MessageContent) => Slot {
                                    tag: Tag::ContentItem,
                                    ..Slot::default()
                                },
                                (false, Tag::Messages) => Slot {
                                    tag: Tag::MessageItem,
                                    ..Slot::default()
                                },
                                // Array items keep the array's key hint.
                                (false, _) => Slot {
                                    hint: slot.hint,
                                    ..Slot::default()
                                },
                            };
                            if slot.tag == Tag::Structured {
                                spans.structured = Some([start, 0, out_start, 0]);
                            }
                            stack.push(Frame {
                                obj,
                                start,
                                own: slot.tag,
                                child,
                                keys: None,
                            });
                            i = ws(b, i + 1);
                            if b.get(i) == Some(if obj { &b'}' } else { &b']' }) {
                                i += 1;
                                close(&mut stack, &mut spans, &out, i);
                                st = St::After;
                            } else if obj {
                                st = St::Key;
                            } else {
                                slot = child;
                            }
                            continue;
                        }
                        b'"' => {
                            let (end, s) = string_token(text, i)?;
                            if slot.protect {
                                // A protocol value cannot be rewritten
                                // without breaking the exchange: a hit in
                                // it blocks the message instead.
                                if self.text(&s, Hint::None)?.is_some() {
                                    return Err(self.blocked());
                                }
                            } else {
                                let new = self.string(&s, slot.hint, slot.blob, depth)?;
                                if let Some(new) = &new {
                                    out.replace(i, end, &encode(new));
                                }
                                if slot.tag == Tag::ContentText {
                                    spans.parts.push((i, end));
                                    if looks_like_json(&s) {
                                        spans.texts.push((s.into_owned(), out_start, out.pos(end)));
                                    }
                                }
                            }
                            i = end;
                        }
                        b'-' | b'0'..=b'9' => {
                            let end = i + detect_number_end(tail(b, i));
                            let new = self.number(&text[i..end], slot.hint)?;
                            match new {
                                Some(_) if slot.protect => return Err(self.blocked()),
                                Some(new) => out.replace(i, end, &encode(&new)),
                                None => {}
                            }
                            i = end;
                        }
                        b't' if tail(b, i).starts_with(b"true") => i += 4,
                        b'f' if tail(b, i).starts_with(b"false") => i += 5,
                        b'n' if tail(b, i).starts_with(b"null") => i += 4,
                        _ => return Err(Stop::Malformed),
                    }
                    if slot.tag == Tag::Structured {
                        spans.structured = Some([start, i, out_start, out.pos(i)]);
                    }
                    st = St::After;
                }
                St::After => {
                    i = ws(b, i);
                    let Some(frame) = stack.last() else {
                        return if i == b.len() {
                            Ok((out.finish(), spans))
                        } else {
                            Err(Stop::Malformed)
                        };
                    };
                    match (b.get(i), frame.obj) {
                        (Some(b','), true) => {
                            i += 1;
                            st = St::Key;
                        }
                        (Some(b','), false) => {
                            i += 1;
                            slot = frame.child;
                            st = St::Value;
                        }
                        (Some(b'}'), true) | (Some(b']'), false) => {
                            i += 1;
                            close(&mut stack, &mut spans, &out, i);
                        }
                        _ => return Err(Stop::Malformed),
                    }
                }
                St::Key => {
                    i = ws(b, i);
                    if b.get(i) != Some(&b'"') {
                        return Err(Stop::Malformed);
                    }
                    let (end, key) = string_token(text, i)?;
                    let Some(frame) = stack.last_mut() else {
                        return Err(Stop::Malformed);
                    };
                    let child = child_slot(frame.own, &key, method);
                    if let Some(new) = self.string(&key, Hint::None, false, depth)? {
                        let unique = unique_key(text, frame, new);
                        out.replace(i, end, &encode(&unique));
                    }
                    frame.child = child;
                    slot = child;
                    i = ws(b, end);
                    if b.get(i) != Some(&b':') {
                        return Err(Stop::Malformed);
                    }
                    i += 1;
                    st = St::Value;
                }
            }
        }
    }

    /// A string value or key (decoded). Returns the new decoded text.
    ///
    /// JSON inside it is walked (its layout kept), encodings are opened
    /// (`layers`); a secret key's value is masked whole instead.
    fn string(
        &mut self,
        s: &str,
        hint: Hint,
        blob: bool,
        depth: Depth,
    ) -> Result<Option<String>, Stop> {
        if matches!(hint, Hint::Secret | Hint::AwsSecret) {
            return self.text(s, hint);
        }
        if let Some(new) = self.embedded(s, depth)? {
            return Ok(new);
        }
        if let Some(new) = self.layers(s, hint, blob, depth)? {
            return Ok(Some(new));
        }
        self.text(s, hint)
    }

    /// The refusal for a hit in a protected value: the first hit's detector.
    fn blocked(&self) -> Stop {
        Stop::Block(self.hits.first().map_or(usize::MAX, |h| h.det))
    }

    /// A number token: detection runs on its integer digits (`4.1e15` is
    /// `4100000000000000`); a hit turns the number into a string.
    fn number(&mut self, tok: &str, hint: Hint) -> Result<Option<String>, Stop> {
        let digits = integer_digits(tok);
        // Cards need 13 digits, bare phone numbers 11.
        if hint == Hint::None && self.cfg.custom.is_empty() && digits.len() < 11 {
            return Ok(None);
        }
        self.text(&digits, hint)
    }

    /// Plain text: detect, resolve overlaps, replace.
    fn text(&mut self, s: &str, hint: Hint) -> Result<Option<String>, Stop> {
        if s.len() < 6 && hint == Hint::None && self.cfg.custom.is_empty() {
            return Ok(None);
        }
        let cfg = self.cfg;
        let norm = normalize(s);
        let norm: &str = &norm;
        if !self.find(norm, hint)? {
            return Ok(None);
        }
        let kept = self.hits.len();
        let mut out = String::with_capacity(norm.len() + 16 * kept);
        let mut last = 0;
        for h in &self.hits {
            let Some(det) = cfg.detectors.get(h.det) else {
                return Err(Stop::Block(h.det));
            };
            out.push_str(&norm[last..h.start]);
            out.push_str(&render(det, &norm[h.start..h.end], cfg.hmac.as_ref()));
            last = h.end;
            if let Some(n) = self.counts.get_mut(h.det) {
                *n += 1;
            }
            self.replaced += 1;
            self.last_det = h.det;
        }
        out.push_str(&norm[last..]);
        Ok(Some(out))
    }

    /// Runs the detectors on normalized text: `self.hits` holds the
    /// findings to replace, earliest first, none overlapping, allowed
    /// values left out. False when there are none; a finding whose action
    /// is `block` stops the walk.
    fn find(&mut self, norm: &str, hint: Hint) -> Result<bool, Stop> {
        let cfg = self.cfg;
        self.hits.clear();
        detect::scan(norm, cfg.enabled, &mut self.hits);
        for (det, re) in &cfg.custom {
            for m in re.find_iter(norm) {
                if !m.is_empty() {
                    self.hits.push(Hit {
                        start: m.start(),
                        end: m.end(),
                        det: *det,
                    });
                }
            }
        }
        if hint != Hint::None
            && let Some(kind) = hinted(norm, hint, cfg.enabled)
        {
            let start = norm.len() - norm.trim_start().len();
            let end = norm.trim_end().len();
            self.hits.push(Hit {
                start,
                end,
                det: kind.index(),
            });
        }
        if self.hits.is_empty() {
            return Ok(false);
        }

        // Earliest first, then longest, then the more specific detector.
        self.hits
            .sort_unstable_by_key(|h| (h.start, Reverse(h.end), h.det));
        let mut last_end = None;
        self.hits.retain(|&h| {
            if last_end.is_some_and(|e| h.start < e) || Self::allowed(cfg, norm, h) {
                return false;
            }
            last_end = Some(h.end);
            true
        });
        if self.hits.is_empty() {
            return Ok(false);
        }
        // Every hit names one of `cfg.detectors` (built-ins at their index,
        // custom patterns after); one that did not blocks the message.
        if let Some(h) = self.hits.iter().find(|h| {
            cfg.detectors
                .get(h.det)
                .is_none_or(|d| d.action == Action::Block)
        }) {
            return Err(Stop::Block(h.det));
        }
        Ok(true)
    }

    fn allowed(cfg: &Config, norm: &str, h: Hit) -> bool {
        let allow = &cfg.allow;
        if allow.is_empty() {
            return false;
        }
        let v = &norm[h.start..h.end];
        if allow.contains(v) {
            return true;
        }
        match cfg.detectors.get(h.det).and_then(|d| d.kind) {
            Some(kind) => allow.contains(&allow_key(kind, &canonical(Some(kind), v))),
            None => false,
        }
    }
}

/// The context of the value under `key` in a container tagged `parent`.
fn child_slot(parent: Tag, key: &str, method: Option<&str>) -> Slot {
    let protect = Slot {
        protect: true,
        ..Slot::default()
    };
    let tag = |tag| Slot {
        tag,
        ..Slot::default()
    };
    match (parent, key) {
        (Tag::Top, "jsonrpc" | "id" | "method") => return protect,
        // Opaque handles the peer must get back unchanged: pagination
        // cursors, multi-round request state, task ids.
        (Tag::Params, "cursor" | "requestState" | "taskId") => return protect,
        (Tag::Result, "nextCursor" | "requestState" | "taskId") => return protect,
        (Tag::Top, "params") => return tag(Tag::Params),
        (Tag::Top, "result") => return tag(Tag::Result),
        (Tag::Params, "_meta") => return tag(Tag::Meta),
        (Tag::Meta, "progressToken") => return protect,
        (Tag::Params, "progressToken") if method == Some("notifications/progress") => {
            return protect;
        }
        (Tag::Params, "requestId") if method == Some("notifications/cancelled") => {
            return protect;
        }
        (Tag::Result, "structuredContent") => return tag(Tag::Structured),
        (Tag::Result, "content") => return tag(Tag::Content),
        (Tag::ContentItem | Tag::MessageContent, "text") => return tag(Tag::ContentText),
        (Tag::Result | Tag::Params, "messages") => return tag(Tag::Messages),
        (Tag::MessageItem, "content") => return tag(Tag::MessageContent),
        _ => {}
    }
    let hint = if key.is_ascii() {
        key_hint(key)
    } else {
        key_hint(&normalize(key))
    };
    Slot {
        hint,
        blob: key == "blob",
        ..Slot::default()
    }
}

fn close(stack: &mut Vec<Frame>, spans: &mut Spans, out: &Out<'_>, end: usize) {
    if let Some(frame) = stack.pop()
        && frame.own == Tag::Structured
        && let Some(st) = &mut spans.structured
    {
        st[1] = end;
        st[3] = out.pos(end);
    }
}

/// A renamed key must not collide with another key of the same object (the
/// gateway refuses duplicate keys): `[REDACTED:email]`, then
/// `[REDACTED:email]#2`, ...
fn unique_key(text: &str, frame: &mut Frame, new: String) -> String {
    let keys = frame.keys.get_or_insert_with(|| {
        Box::new(Keys {
            original: object_keys(text, frame.start),
            renamed: HashSet::new(),
            next: HashMap::new(),
        })
    });
    let mut candidate = new.clone();
    if keys.taken(&candidate) {
        let mut n = keys.next.get(&new).copied().unwrap_or(2);
        loop {
            candidate = format!("{new}#{n}");
            n += 1;
            if !keys.taken(&candidate) {
                break;
            }
        }
        keys.next.insert(new, n);
    }
    keys.renamed.insert(candidate.clone());
    candidate
}

/// The keys of the object starting at `start` (best effort).
fn object_keys(text: &str, start: usize) -> HashSet<String> {
    let b = text.as_bytes();
    let mut keys = HashSet::new();
    let mut i = start + 1;
    loop {
        i = ws(b, i);
        if b.get(i) != Some(&b'"') {
            return keys;
        }
        let Ok((end, key)) = string_token(text, i) else {
            return keys;
        };
        keys.insert(key.into_owned());
        i = ws(b, end);
        if b.get(i) != Some(&b':') {
            return keys;
        }
        let Some(end) = skip_value(text, i + 1) else {
            return keys;
        };
        i = ws(b, end);
        if b.get(i) != Some(&b',') {
            return keys;
        }
        i += 1;
    }
}

/// The end of the value starting at (or after whitespace from) `i`.
fn skip_value(text: &str, mut i: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut depth = 0usize;
    loop {
        i = ws(b, i);
        match *b.get(i)? {
            b'"' => i = string_token(text, i).ok()?.0,
            b'{' | b'[' => {
                depth += 1;
                i += 1;
                continue;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                i += 1;
            }
            b',' | b':' if depth > 0 => {
                i += 1;
                continue;
            }
            _ => {
                let l = tail(b, i)
                    .iter()
                    .take_while(|&&c| {
                        !matches!(c, b',' | b':' | b'}' | b']') && !c.is_ascii_whitespace()
                    })
                    .count();
                if l == 0 {
                    return None;
                }
                i += l;
            }
        }
        if depth == 0 {
            return Some(i);
        }
    }
}

/// If a `result.content[].text` holds JSON equal to `structuredContent`,
/// it becomes the redacted `structuredContent` text, so both copies agree.
fn same_as_structured(
    text: &str,
    out: &mut String,
    [in_start, in_end, out_start, out_end]: [usize; 4],
    texts: Vec<(String, usize, usize)>,
) {
    if texts.is_empty() || in_end <= in_start || out_end <= out_start {
        return;
    }
    let Ok(original) = serde_json::from_str::<Value>(&text[in_start..in_end]) else {
        return;
    };
    let replacement = encode(&out[out_start..out_end]);
    // One pass that copies the output once: replacing each span in place
    // would move the rest of the output once per text.
    let mut rebuilt: Option<String> = None;
    let mut last = 0;
    for (t, start, end) in texts {
        if serde_json::from_str::<Value>(&t).is_ok_and(|v| v == original) {
            let r = rebuilt.get_or_insert_with(|| String::with_capacity(out.len()));
            r.push_str(&out[last..start]);
            r.push_str(&replacement);
            last = end;
        }
    }
    if let Some(mut r) = rebuilt {
        r.push_str(&out[last..]);
        *out = r;
    }
}

// ---------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------

fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// The string token starting at the quote at `i`: where it ends (after the
/// closing quote) and its decoded text. Lone surrogates decode to U+FFFD.
fn string_token(text: &str, i: usize) -> Result<(usize, Cow<'_, str>), Stop> {
    let b = text.as_bytes();
    let mut j = swar::quote_or_backslash(b, i + 1);
    if b.get(j) == Some(&b'"') {
        return Ok((j + 1, Cow::Borrowed(&text[i + 1..j])));
    }
    let mut s = String::with_capacity(j - i + 16);
    s.push_str(&text[i + 1..j.min(b.len())]);
    loop {
        match b.get(j) {
            None => return Err(Stop::Malformed),
            Some(b'"') => return Ok((j + 1, Cow::Owned(s))),
            Some(b'\\') => {
                let e = *b.get(j + 1).ok_or(Stop::Malformed)?;
                j += 2;
                match e {
                    b'"' => s.push('"'),
                    b'\\' => s.push('\\'),
                    b'/' => s.push('/'),
                    b'b' => s.push('\u{8}'),
                    b'f' => s.push('\u{c}'),
                    b'n' => s.push('\n'),
                    b'r' => s.push('\r'),
                    b't' => s.push('\t'),
                    b'u' => {
                        let hi = hex4(b, j)?;
                        j += 4;
                        let c = if (0xD800..0xDC00).contains(&hi)
                            && b.get(j) == Some(&b'\\')
                            && b.get(j + 1) == Some(&b'u')
                        {
                            match hex4(b, j + 2)? {
                                lo @ 0xDC00..0xE000 => {
                                    j += 6;
                                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                                }
                                _ => None,
                            }
                        } else {
                            char::from_u32(hi)
                        };
                        s.push(c.unwrap_or('\u{FFFD}'));
                    }
                    _ => return Err(Stop::Malformed),
                }
            }
            Some(_) => {
                let end = swar::quote_or_backslash(b, j);
                s.push_str(&text[j..end]);
                j = end;
            }
        }
    }
}

fn hex4(b: &[u8], j: usize) -> Result<u32, Stop> {
    let h = b.get(j..j + 4).ok_or(Stop::Malformed)?;
    let s = std::str::from_utf8(h).map_err(|_| Stop::Malformed)?;
    u32::from_str_radix(s, 16).map_err(|_| Stop::Malformed)
}

/// Encodes `s` as a JSON string literal.
pub fn encode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut last = 0;
    loop {
        let i = swar::json_escape(b, last);
        let Some(&c) = b.get(i) else { break };
        // The bytes escaped are ASCII, so `i` is a character boundary.
        out.push_str(s.get(last..i).unwrap_or_default());
        match c {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => out.push_str(&format!("\\u{c:04x}")),
        }
        last = i + 1;
    }
    out.push_str(s.get(last..).unwrap_or_default());
    out.push('"');
    out
}

fn detect_number_end(b: &[u8]) -> usize {
    b.iter()
        .take_while(|&&c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
        .count()
}

/// The digits of an integer-valued number without sign (`-4.1e3` →
/// `4100`); other numbers as written.
fn integer_digits(tok: &str) -> Cow<'_, str> {
    let t = tok.strip_prefix('-').unwrap_or(tok);
    if t.bytes().all(|c| c.is_ascii_digit()) {
        return Cow::Borrowed(t);
    }
    let (mant, exp) = match t.find(['e', 'E']) {
        Some(p) => match t[p + 1..].parse::<i32>() {
            Ok(e) if e.abs() <= 40 => (&t[..p], e),
            _ => return Cow::Borrowed(tok),
        },
        None => (t, 0),
    };
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    if !int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit()) {
        return Cow::Borrowed(tok);
    }
    let mut digits = String::with_capacity(int.len() + frac.len() + 40);
    digits.push_str(int);
    digits.push_str(frac);
    let shift = exp - frac.len() as i32;
    if shift >= 0 {
        digits.extend(std::iter::repeat_n('0', shift as usize));
    } else {
        let cut = digits.len().saturating_sub((-shift) as usize);
        if !digits[cut..].bytes().all(|c| c == b'0') {
            return Cow::Borrowed(tok);
        }
        digits.truncate(cut);
    }
    let trimmed = digits.trim_start_matches('0');
    Cow::Owned(if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    })
}

/// Cheap check before trying to parse a string as JSON.
fn looks_like_json(s: &str) -> bool {
    let t = s.trim_ascii();
    t.len() >= 2
        && matches!(
            (t.as_bytes().first(), t.as_bytes().last()),
            (Some(b'{'), Some(b'}')) | (Some(b'['), Some(b']'))
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let cases = [
            ("4111111111111111", "4111111111111111"),
            ("-4111111111111111", "4111111111111111"),
            ("4.111111111111111e15", "4111111111111111"),
            ("4111111111111111.0", "4111111111111111"),
            ("41111111111111110E-1", "4111111111111111"),
            ("1.5", "1.5"),
            ("0", "0"),
            ("1e400", "1e400"),
        ];
        for (tok, want) in cases {
            assert_eq!(integer_digits(tok), want, "{tok}");
        }
    }

    #[test]
    fn strings() {
        let text = r#""a\"b\\c\u00e9\ud83d\ude00\ud800x\n""#;
        let (end, s) = string_token(text, 0).unwrap();
        assert_eq!(end, text.len());
        assert_eq!(s, "a\"b\\cé😀\u{FFFD}x\n");
        assert_eq!(encode("a\"b\\c\n\u{1}é"), r#""a\"b\\c\n\u0001é""#);
        assert_eq!(skip_value(r#" {"a":[1,{"b":"}"}]} ,"#, 0), Some(20));
    }

    /// 5,000 keys of one object that all redact to `[REDACTED:email]`:
    /// each gets a distinct name after about one try, where trying the
    /// suffixes from `#2` up each time would be 12.5 million tries.
    #[test]
    fn a_flood_of_keys_renamed_alike_costs_a_try_or_two_each() {
        let n = 5_000;
        let keys: Vec<String> = (0..n)
            .map(|i| format!("\"u{i}@example.com\":{i}"))
            .collect();
        let msg = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"structuredContent":{{{}}}}}}}"#,
            keys.join(",")
        );
        let cfg = crate::config::parse("{}").unwrap();
        TRIED.with(|t| t.set(0));
        let out = Redactor::new(&cfg)
            .message(&msg, Some("tools/call"))
            .unwrap();
        let tried = TRIED.with(std::cell::Cell::get);
        assert!(tried <= 3 * n, "{tried} names tried for {n} keys");
        let out: Value = serde_json::from_str(&out.unwrap()).unwrap();
        let sc = out["result"]["structuredContent"].as_object().unwrap();
        assert_eq!(sc.len(), n, "no key lost or merged");
        assert_eq!(sc["[REDACTED:email]"], 0);
        assert_eq!(sc[&format!("[REDACTED:email]#{n}")], n - 1);
    }

    /// Every text block equal to `structuredContent` is replaced, in one
    /// pass over the output.
    #[test]
    fn many_texts_equal_to_structured_content_all_follow_it() {
        let sc = r#"{"e":"bob@example.com"}"#;
        let n = 2_000;
        let items: Vec<String> = (0..n)
            .map(|_| format!(r#"{{"type":"text","text":{}}}"#, encode(sc)))
            .collect();
        let msg = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"content":[{}],"structuredContent":{sc}}}}}"#,
            items.join(",")
        );
        let cfg = crate::config::parse("{}").unwrap();
        let out = Redactor::new(&cfg)
            .message(&msg, Some("tools/call"))
            .unwrap();
        let out: Value = serde_json::from_str(&out.unwrap()).unwrap();
        let want = r#"{"e":"[REDACTED:email]"}"#;
        assert_eq!(out["result"]["structuredContent"].to_string(), want);
        let content = out["result"]["content"].as_array().unwrap();
        assert_eq!(content.len(), n);
        assert!(content.iter().all(|c| c["text"] == want));
    }
}
