//! Values split across the text parts of one message: the `content[]`
//! texts of a result, the `messages[]` of a prompt result or a sampling
//! request. The parts are also scanned joined, with no separator (a value
//! cut in two) and with a space (digit groups in separate parts); a value
//! that spans parts has its piece masked in every part it touches.

use std::cmp::Reverse;

use super::{Redactor, Stop, encode, string_token};
use crate::detect::Hint;
use crate::normalize::normalize;
use crate::render::render;

/// What the parts are joined with for the joined scans.
const JOINERS: [&str; 2] = ["", " "];

/// A piece of one part to replace: byte range of its normalized text, the
/// replacement, and on the value's first piece its detector (counted once).
type Cut = (usize, usize, String, Option<usize>);

impl Redactor<'_> {
    /// When a value spans two or more `parts` (input spans of string
    /// tokens of `text`): `text` with every piece masked, and a fresh
    /// redactor that counted those values. `None` otherwise.
    pub(super) fn split(
        &self,
        text: &str,
        parts: &[(usize, usize)],
    ) -> Result<Option<(String, Self)>, Stop> {
        if parts.len() < 2 {
            return Ok(None);
        }
        let mut texts = Vec::with_capacity(parts.len());
        for &(start, _) in parts {
            let (_, s) = string_token(text, start)?;
            texts.push(normalize(&s).into_owned());
        }
        let mut fresh = Redactor::new(self.cfg);
        let mut cuts: Vec<Vec<Cut>> = vec![Vec::new(); parts.len()];
        for joiner in JOINERS {
            fresh.spanning(&texts, joiner, &mut cuts)?;
        }
        if cuts.iter().all(Vec::is_empty) {
            return Ok(None);
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for ((&(start, end), part), mut cuts) in parts.iter().zip(&texts).zip(cuts) {
            if cuts.is_empty() {
                continue;
            }
            // Earliest first, longest first; overlapping pieces (the same
            // value found with both joiners) once.
            cuts.sort_unstable_by_key(|c| (c.0, Reverse(c.1)));
            let mut new = String::with_capacity(part.len());
            let mut at = 0;
            for (a, b, with, first) in cuts {
                if a < at {
                    continue;
                }
                new.push_str(part.get(at..a).unwrap_or_default());
                new.push_str(&with);
                at = b;
                if let Some(n) = first.and_then(|d| fresh.counts.get_mut(d)) {
                    *n += 1;
                }
            }
            new.push_str(part.get(at..).unwrap_or_default());
            out.push_str(text.get(last..start).unwrap_or_default());
            out.push_str(&encode(&new));
            last = end;
        }
        out.push_str(text.get(last..).unwrap_or_default());
        Ok(Some((out, fresh)))
    }

    /// Scans `texts` joined with `joiner`; adds a cut to each part a
    /// finding spans.
    fn spanning(
        &mut self,
        texts: &[String],
        joiner: &str,
        cuts: &mut [Vec<Cut>],
    ) -> Result<(), Stop> {
        let joined = texts.join(joiner);
        if !self.find(&joined, Hint::None)? {
            return Ok(());
        }
        let mut offsets = Vec::with_capacity(texts.len());
        let mut at = 0;
        for t in texts {
            offsets.push(at);
            at += t.len() + joiner.len();
        }
        let part_at = |pos: usize| offsets.partition_point(|&o| o <= pos).saturating_sub(1);
        let hits = std::mem::take(&mut self.hits);
        for h in &hits {
            let (first, last) = (part_at(h.start), part_at(h.end.saturating_sub(1)));
            if first == last {
                continue;
            }
            let Some(det) = self.cfg.detectors.get(h.det) else {
                return Err(Stop::Block(h.det));
            };
            let with = render(
                det,
                joined.get(h.start..h.end).unwrap_or_default(),
                self.cfg.hmac.as_ref(),
            );
            let mut first_piece = Some(h.det);
            for k in first..=last {
                let (Some(&o), Some(t), Some(c)) = (offsets.get(k), texts.get(k), cuts.get_mut(k))
                else {
                    continue;
                };
                let (a, b) = (h.start.max(o) - o, h.end.min(o + t.len()).saturating_sub(o));
                if a < b {
                    c.push((a, b, with.clone(), first_piece.take()));
                }
            }
        }
        self.hits = hits;
        Ok(())
    }
}
