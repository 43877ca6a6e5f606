//! The layers a string is opened in before detection: JSON inside it, HTML
//! entities, percent-encoding, base64 (the whole string, a `blob`, or runs
//! inside text). Each decoded text is scanned like any string, so layers
//! compose (base64 of percent-encoded text, entities inside embedded
//! JSON, ...). A finding inside a layer is re-encoded in that layer's
//! encoding, or refuses the message when the layer's policy is `block`,
//! the decoded bytes are not text (a binary blob), or the re-encoded text
//! would not decode back to the redacted one.

use serde::de::IgnoredAny;

use super::{Depth, MAX_EMBED, Redactor, Stop, looks_like_json};
use crate::config::Layer;
use crate::decode;
use crate::detect::Hint;

/// Layers of any kind (JSON and encodings) opened around a value; a layer
/// deeper than this blocks the message.
pub const MAX_LAYERS: u8 = 8;
/// Bytes decoded per message, all layers together; more blocks the
/// message. Decoding never lengthens a text, so this is eight layers of a
/// 2 MiB message.
pub const MAX_DECODED_BYTES: usize = 16 << 20;

impl Depth {
    fn json(self) -> Depth {
        Depth {
            json: self.json.saturating_add(1),
            layers: self.layers.saturating_add(1),
        }
    }
}

impl Redactor<'_> {
    /// JSON inside a string, walked like the message: `Some` with the new
    /// text (or `None` when clean) when `s` is JSON, `None` when it is not.
    pub(super) fn embedded(
        &mut self,
        s: &str,
        depth: Depth,
    ) -> Result<Option<Option<String>>, Stop> {
        let layer = self.cfg.decode.json;
        if layer == Layer::Off || !looks_like_json(s) {
            return Ok(None);
        }
        if depth.json >= MAX_EMBED || depth.layers >= MAX_LAYERS {
            return match serde_json::from_str::<IgnoredAny>(s) {
                Ok(_) => Err(Stop::TooDeep),
                Err(_) => Ok(None),
            };
        }
        let saved = self.counts.clone();
        let before = self.replaced;
        match self.walk(s, None, depth.json()) {
            Ok((new, _)) => {
                self.check(layer, before)?;
                Ok(Some(new))
            }
            Err(Stop::Malformed) => {
                self.counts = saved;
                self.replaced = before;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The encodings `s` is written in, opened one at a time (each decoded
    /// text is a string again, so the next layer is opened by the
    /// recursion). `Some` with the new text when something was found.
    pub(super) fn layers(
        &mut self,
        s: &str,
        hint: Hint,
        blob: bool,
        depth: Depth,
    ) -> Result<Option<String>, Stop> {
        let d = self.cfg.decode;
        if d.entities != Layer::Off
            && s.contains('&')
            && let Some((text, esc, from)) = decode::entities_decode(s)
        {
            let Some(new) = self.inside(d.entities, &text, hint, depth, s.len())? else {
                return Ok(None);
            };
            let enc = splice(s, &text, &new, &from, |m| decode::entities_encode(m, esc));
            let back = decode::entities_decode(&enc).map(|(t, _, _)| t);
            return self.lossless(back.as_deref().unwrap_or(&enc) == new, enc);
        }
        if d.percent != Layer::Off
            && s.contains('%')
            && let Some((bytes, esc, from)) = decode::percent_decode(s)
        {
            return match String::from_utf8(bytes) {
                Ok(text) => {
                    let Some(new) = self.inside(d.percent, &text, hint, depth, s.len())? else {
                        return Ok(None);
                    };
                    let enc = splice(s, &text, &new, &from, |m| decode::percent_encode(m, esc));
                    let back = decode::percent_decode(&enc).map(|(b, _, _)| b);
                    self.lossless(
                        back.as_deref().unwrap_or(enc.as_bytes()) == new.as_bytes(),
                        enc,
                    )
                }
                Err(e) => self.binary(e.as_bytes(), depth),
            };
        }
        if d.base64 == Layer::Off {
            return Ok(None);
        }
        let t = s.trim_ascii();
        let wrapped = t.len() >= decode::MIN_BASE64_LEN
            && t.bytes().any(|c| c.is_ascii_whitespace())
            && t.bytes()
                .all(|c| decode::is_b64(c) || c == b'=' || c.is_ascii_whitespace());
        if (blob || wrapped)
            && let Some((bytes, style)) = decode::base64_decode(t)
        {
            match decode::as_text(&bytes) {
                Some(text) => {
                    let new = self.inside(d.base64, text, hint, depth, s.len())?;
                    return Ok(new.map(|new| decode::base64_encode(new.as_bytes(), style)));
                }
                None if blob => return self.binary(&bytes, depth),
                None => {}
            }
        }
        self.base64_runs(s, hint, depth)
    }

    /// Base64 runs inside text (or a whole string without whitespace),
    /// each decoded on its own; a run inside a path is tried whole, then
    /// between its slashes.
    fn base64_runs(&mut self, s: &str, hint: Hint, depth: Depth) -> Result<Option<String>, Stop> {
        let layer = self.cfg.decode.base64;
        let mut out = String::new();
        let mut last = 0;
        for (start, end) in decode::base64_runs(s) {
            let Some(run) = s.get(start..end) else {
                continue;
            };
            let mut pieces = vec![(start, run)];
            if run.contains('/') {
                let mut at = start;
                for seg in run.split('/') {
                    if seg.len() >= decode::MIN_BASE64_LEN {
                        pieces.push((at, seg));
                    }
                    at += seg.len() + 1;
                }
            }
            for (at, piece) in pieces {
                let Some((bytes, style)) = decode::base64_decode(piece) else {
                    continue;
                };
                let Some(text) = decode::as_text(&bytes) else {
                    continue;
                };
                let whole = piece.len() == s.len();
                let hint = if whole { hint } else { Hint::None };
                if let Some(new) = self.inside(layer, text, hint, depth, piece.len())? {
                    out.push_str(s.get(last..at).unwrap_or_default());
                    out.push_str(&decode::base64_encode(new.as_bytes(), style));
                    last = at + piece.len();
                }
                break;
            }
        }
        if last == 0 {
            return Ok(None);
        }
        out.push_str(s.get(last..).unwrap_or_default());
        // The text around the runs.
        Ok(Some(self.text(&out, hint)?.unwrap_or(out)))
    }

    /// Scans a decoded `text` one layer deeper. `Some` with its redacted
    /// text when something was found (and the layer's policy allows).
    fn inside(
        &mut self,
        layer: Layer,
        text: &str,
        hint: Hint,
        depth: Depth,
        len: usize,
    ) -> Result<Option<String>, Stop> {
        let deeper = self.deeper(depth, len)?;
        let before = self.replaced;
        let new = self.string(text, hint, false, deeper)?;
        self.check(layer, before)?;
        Ok(new)
    }

    /// Decoded bytes that are not text: anything found in them (read as
    /// text, invalid sequences replaced) blocks the message, since binary
    /// cannot be re-encoded with a redaction inside.
    fn binary(&mut self, bytes: &[u8], depth: Depth) -> Result<Option<String>, Stop> {
        let text = String::from_utf8_lossy(bytes);
        let deeper = self.deeper(depth, bytes.len())?;
        match self.string(&text, Hint::None, false, deeper)? {
            Some(_) => Err(Stop::Block(self.last_det)),
            None => Ok(None),
        }
    }

    /// One layer deeper, within the limits.
    fn deeper(&mut self, depth: Depth, len: usize) -> Result<Depth, Stop> {
        self.decoded = self.decoded.saturating_add(len);
        if depth.layers >= MAX_LAYERS || self.decoded > MAX_DECODED_BYTES {
            return Err(Stop::TooDeep);
        }
        // JSON inside a decoded text starts a new run of JSON levels (a JWT
        // header is JSON in base64): MAX_LAYERS bounds them all.
        Ok(Depth {
            json: 0,
            layers: depth.layers + 1,
        })
    }

    /// A finding inside a layer whose policy is `block` refuses the message.
    fn check(&self, layer: Layer, before: u64) -> Result<(), Stop> {
        if layer == Layer::Block && self.replaced > before {
            return Err(Stop::Block(self.last_det));
        }
        Ok(())
    }

    /// The re-encoded text, when it decodes back to the redacted one.
    fn lossless(&self, round_trips: bool, encoded: String) -> Result<Option<String>, Stop> {
        if round_trips {
            Ok(Some(encoded))
        } else {
            Err(Stop::Block(self.last_det))
        }
    }
}

/// `new`, the redacted `text` that was decoded from `orig`, written like
/// `orig`: what comes before and after the changed stretch is kept as it
/// was written, the stretch is encoded with `encode`.
fn splice(
    orig: &str,
    text: &str,
    new: &str,
    from: &[usize],
    encode: impl Fn(&str) -> String,
) -> String {
    let (t, n) = (text.as_bytes(), new.as_bytes());
    let mut pre = t.iter().zip(n).take_while(|(a, b)| a == b).count();
    while !(text.is_char_boundary(pre) && new.is_char_boundary(pre)) {
        pre -= 1;
    }
    let room = t.len().min(n.len()) - pre;
    let mut suf = t
        .iter()
        .rev()
        .zip(n.iter().rev())
        .take(room)
        .take_while(|(a, b)| a == b)
        .count();
    while !(text.is_char_boundary(t.len() - suf) && new.is_char_boundary(n.len() - suf)) {
        suf -= 1;
    }
    let kept = (
        from.get(pre).and_then(|&a| orig.get(..a)),
        from.get(t.len() - suf).and_then(|&b| orig.get(b..)),
        new.get(pre..n.len() - suf),
    );
    match kept {
        (Some(head), Some(tail), Some(mid)) => format!("{head}{}{tail}", encode(mid)),
        _ => encode(new),
    }
}
