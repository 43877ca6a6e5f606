//! The encodings opened before detection and closed again after it:
//! HTML/XML entities, percent-encoding and base64. Each decoder reports
//! what it needs to re-encode losslessly; each encoder's output decodes to
//! exactly its input (the walker checks, and blocks when it does not).
//!
//! Re-encoding keeps the original's style: percent and entities escape the
//! characters the original escaped (plus `%` or `&`, so nothing decodes
//! twice), base64 keeps its alphabet (standard or URL-safe) and padding.
//!
//! Over 400 lines: three small codecs that share the escaped-set and
//! origin bookkeeping, the table of named entities, and their unit tests.

/// Base64 runs shorter than this (in characters) are not decoded: short
/// tokens decode to nothing a detector could find (the shortest e-mail
/// address, `jo@ab.io`, is 12 characters of base64).
pub const MIN_BASE64_LEN: usize = 12;
/// Decoded base64 is text when it is UTF-8 and at least this share (in
/// percent) of its characters are printable (tab, newline and carriage
/// return count as printable).
pub const MIN_PRINTABLE_PERCENT: usize = 90;

/// Per byte of a decoded text (and one past its end), the offset in the
/// original it came from: an unchanged stretch of the original can be kept
/// as it was written.
pub type Origins = Vec<usize>;

/// A set of bytes: the ones the original escaped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Escaped([u64; 4]);

impl Escaped {
    fn add(&mut self, b: u8) {
        if let Some(w) = self.0.get_mut(usize::from(b >> 6)) {
            *w |= 1 << (b & 63);
        }
    }

    fn has(self, b: u8) -> bool {
        self.0
            .get(usize::from(b >> 6))
            .is_some_and(|w| w & (1 << (b & 63)) != 0)
    }

    /// True when some byte of a multi-byte character was escaped.
    fn non_ascii(self) -> bool {
        self.0.get(2..).is_some_and(|w| w.iter().any(|&w| w != 0))
    }
}

// ---------------------------------------------------------------------------
// Percent-encoding
// ---------------------------------------------------------------------------

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes every `%XX` of `s` (`+` stays `+`: a space only in form
/// bodies, and `bob+tag@example.com` is an address). `None` when `s` has
/// no `%XX`. The bytes may not be UTF-8.
pub fn percent_decode(s: &str) -> Option<(Vec<u8>, Escaped, Origins)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut from = Vec::new();
    let mut esc = Escaped::default();
    let mut last = 0;
    let mut i = 0;
    while let Some(p) = b.get(i..).and_then(|t| t.iter().position(|&c| c == b'%')) {
        i += p;
        let pair = (
            b.get(i + 1).copied().and_then(hex_val),
            b.get(i + 2).copied().and_then(hex_val),
        );
        if let (Some(h), Some(l)) = pair {
            out.extend_from_slice(b.get(last..i)?);
            from.extend(last..=i);
            let v = (h << 4) | l;
            out.push(v);
            esc.add(v);
            i += 3;
            last = i;
        } else {
            i += 1;
        }
    }
    if last == 0 {
        return None;
    }
    out.extend_from_slice(b.get(last..)?);
    from.extend(last..=b.len());
    Some((out, esc, from))
}

/// Percent-encodes `%` and what the original escaped (every non-ASCII byte
/// when it escaped any).
pub fn percent_encode(s: &str, esc: Escaped) -> String {
    let all_non_ascii = esc.non_ascii();
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_ascii() {
            let b = c as u8;
            if b == b'%' || esc.has(b) {
                push_pct(&mut out, b);
            } else {
                out.push(c);
            }
        } else if all_non_ascii {
            let mut buf = [0; 4];
            for &b in c.encode_utf8(&mut buf).as_bytes() {
                push_pct(&mut out, b);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn push_pct(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    for nibble in [b >> 4, b & 15] {
        if let Some(&h) = HEX.get(usize::from(nibble)) {
            out.push(char::from(h));
        }
    }
}

// ---------------------------------------------------------------------------
// HTML/XML entities
// ---------------------------------------------------------------------------

/// The named entities decoded: XML's five, the HTML names of the
/// characters detectors look at (`@`, `.`, `+`, dashes, spaces, digits'
/// neighbours in URLs and assignments).
const NAMED: &[(&str, char)] = &[
    ("amp", '&'),
    ("lt", '<'),
    ("gt", '>'),
    ("quot", '"'),
    ("apos", '\''),
    ("nbsp", '\u{A0}'),
    ("commat", '@'),
    ("period", '.'),
    ("hyphen", '\u{2010}'),
    ("dash", '\u{2010}'),
    ("ndash", '\u{2013}'),
    ("mdash", '\u{2014}'),
    ("minus", '\u{2212}'),
    ("plus", '+'),
    ("lowbar", '_'),
    ("colon", ':'),
    ("semi", ';'),
    ("comma", ','),
    ("sol", '/'),
    ("bsol", '\\'),
    ("equals", '='),
    ("quest", '?'),
    ("excl", '!'),
    ("num", '#'),
    ("percnt", '%'),
    ("dollar", '$'),
    ("ast", '*'),
    ("lpar", '('),
    ("rpar", ')'),
    ("lsqb", '['),
    ("rsqb", ']'),
    ("lcub", '{'),
    ("rcub", '}'),
    ("verbar", '|'),
    ("Tab", '\t'),
    ("NewLine", '\n'),
    ("ensp", '\u{2002}'),
    ("emsp", '\u{2003}'),
    ("thinsp", '\u{2009}'),
    ("shy", '\u{AD}'),
    ("zwj", '\u{200D}'),
    ("zwnj", '\u{200C}'),
];

/// Longest numeric reference read (`&#x0000000040;`).
const MAX_NUMERIC_DIGITS: usize = 10;

/// The entity at `b[i]` (an `&`): the character and its length.
fn entity(b: &[u8], i: usize) -> Option<(char, usize)> {
    let rest = b.get(i + 1..)?;
    if let Some(num) = rest.strip_prefix(b"#") {
        let (hex, digits) = match num.first() {
            Some(b'x' | b'X') => (true, num.get(1..)?),
            _ => (false, num),
        };
        let n = digits
            .iter()
            .take(MAX_NUMERIC_DIGITS + 1)
            .take_while(|&&c| {
                if hex {
                    c.is_ascii_hexdigit()
                } else {
                    c.is_ascii_digit()
                }
            })
            .count();
        if n == 0 || n > MAX_NUMERIC_DIGITS {
            return None;
        }
        let text = std::str::from_utf8(digits.get(..n)?).ok()?;
        let v = u32::from_str_radix(text, if hex { 16 } else { 10 }).ok()?;
        // HTML: a reference to nothing valid is U+FFFD; `;` is optional.
        let c = char::from_u32(v)
            .filter(|&c| c != '\0')
            .unwrap_or('\u{FFFD}');
        let semi = usize::from(digits.get(n) == Some(&b';'));
        return Some((c, 2 + usize::from(hex) + n + semi));
    }
    let n = rest
        .iter()
        .take(8)
        .take_while(|c| c.is_ascii_alphanumeric())
        .count();
    if rest.get(n) != Some(&b';') {
        return None;
    }
    let name = std::str::from_utf8(rest.get(..n)?).ok()?;
    let c = NAMED
        .iter()
        .find(|(k, _)| *k == name || (k.len() <= 4 && k.eq_ignore_ascii_case(name)))?
        .1;
    Some((c, n + 2))
}

/// Decodes the entities of `s`. `None` when it has none.
pub fn entities_decode(s: &str) -> Option<(String, Escaped, Origins)> {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut from = Vec::new();
    let mut esc = Escaped::default();
    let mut last = 0;
    let mut i = 0;
    while let Some(p) = b.get(i..).and_then(|t| t.iter().position(|&c| c == b'&')) {
        i += p;
        match entity(b, i) {
            Some((c, len)) => {
                out.push_str(s.get(last..i)?);
                from.extend(last..i);
                from.extend(std::iter::repeat_n(i, c.len_utf8()));
                out.push(c);
                let mut buf = [0; 4];
                for &byte in c.encode_utf8(&mut buf).as_bytes() {
                    esc.add(byte);
                }
                i += len;
                last = i;
            }
            None => i += 1,
        }
    }
    if last == 0 {
        return None;
    }
    out.push_str(s.get(last..)?);
    from.extend(last..=b.len());
    Some((out, esc, from))
}

/// Escapes `&` and what the original escaped (every non-ASCII character,
/// as `&#x..;`, when it escaped any).
pub fn entities_encode(s: &str, esc: Escaped) -> String {
    let all_non_ascii = esc.non_ascii();
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        let escape = if c.is_ascii() {
            c == '&' || esc.has(c as u8)
        } else {
            all_non_ascii
        };
        if !escape {
            out.push(c);
            continue;
        }
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c if c.is_ascii() => out.push_str(&format!("&#{};", c as u32)),
            c => out.push_str(&format!("&#x{:x};", c as u32)),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Base64
// ---------------------------------------------------------------------------

/// How a base64 text was written, to write the redacted one alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    /// `-` and `_` rather than `+` and `/`.
    pub url_safe: bool,
    /// `=` at the end.
    pub padded: bool,
}

/// Each byte's base64 value (either alphabet), or [`NOT_B64`]: one table
/// lookup per byte in the scans below, instead of a chain of range tests.
// PANIC SAFETY: evaluated at compile time, where an index out of bounds is a
// build error, never a panic.
#[allow(clippy::indexing_slicing)]
const B64: [u8; 256] = {
    let mut t = [NOT_B64; 256];
    let mut i = 0;
    while i < 26 {
        t[b'A' as usize + i] = i as u8;
        t[b'a' as usize + i] = 26 + i as u8;
        if i < 10 {
            t[b'0' as usize + i] = 52 + i as u8;
        }
        i += 1;
    }
    t[b'+' as usize] = 62;
    t[b'-' as usize] = 62;
    t[b'/' as usize] = 63;
    t[b'_' as usize] = 63;
    t
};
const NOT_B64: u8 = 0xFF;

fn b64_val(c: u8) -> Option<u8> {
    // PANIC SAFETY: a `u8` indexes a 256-entry table.
    #[allow(clippy::indexing_slicing)]
    let v = B64[usize::from(c)];
    (v != NOT_B64).then_some(v)
}

/// A character of a base64 run (either alphabet; `=` only at its end).
pub fn is_b64(c: u8) -> bool {
    b64_val(c).is_some()
}

/// Decodes `s` (ASCII whitespace ignored, `=` padding optional, one
/// alphabet). `None` when it is not base64.
pub fn base64_decode(s: &str) -> Option<(Vec<u8>, Style)> {
    let body = s.trim_end_matches(|c: char| c == '=' || c.is_ascii_whitespace());
    let pads = s
        .get(body.len()..)
        .map_or(0, |t| t.bytes().filter(|&c| c == b'=').count());
    let standard = body.bytes().any(|c| c == b'+' || c == b'/');
    let url_safe = body.bytes().any(|c| c == b'-' || c == b'_');
    if standard && url_safe {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 3);
    let (mut acc, mut bits, mut n) = (0u32, 0u32, 0usize);
    for c in body.bytes() {
        if c.is_ascii_whitespace() {
            continue;
        }
        acc = (acc << 6) | u32::from(b64_val(c)?);
        bits += 6;
        n += 1;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    let padded = pads > 0;
    if n % 4 == 1 || pads > 2 || (padded && !(n + pads).is_multiple_of(4)) || out.is_empty() {
        return None;
    }
    Some((out, Style { url_safe, padded }))
}

/// Encodes `data` in `style`.
pub fn base64_encode(data: &[u8], style: Style) -> String {
    let alphabet: &[u8; 64] = if style.url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let v = chunk
            .iter()
            .enumerate()
            .fold(0u32, |v, (i, &b)| v | u32::from(b) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for k in 0..4 {
            if k < chars {
                if let Some(&c) = alphabet.get(((v >> (18 - 6 * k)) & 63) as usize) {
                    out.push(char::from(c));
                }
            } else if style.padded {
                out.push('=');
            }
        }
    }
    out
}

/// `bytes` as text when they are UTF-8 and mostly printable.
pub fn as_text(bytes: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(bytes).ok()?;
    let (mut all, mut printable) = (0usize, 0usize);
    for c in s.chars() {
        all += 1;
        if !c.is_control() || matches!(c, '\t' | '\n' | '\r') {
            printable += 1;
        }
    }
    (all > 0 && printable * 100 >= all * MIN_PRINTABLE_PERCENT).then_some(s)
}

/// The runs of `s` worth decoding as base64: byte ranges of at least
/// [`MIN_BASE64_LEN`] base64 characters (with their `=` padding), not all
/// hexadecimal digits (hashes and UUIDs), not all letters of one case or
/// all digits.
pub fn base64_runs(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let is = |i: usize| b.get(i).copied().is_some_and(is_b64);
    let mut runs = Vec::new();
    // Skip search. `i` is where a run may begin (the byte before it is not
    // base64). A run of at least MIN_BASE64_LEN beginning in
    // `i..=probe` holds `probe`: when `probe` is not base64, none begins
    // there; when it is, its run begins after the last non-base64 byte
    // before it. Ordinary text (short words) is crossed looking at about
    // one byte in three instead of every byte.
    let mut i = 0;
    while i + MIN_BASE64_LEN <= b.len() {
        let probe = i + MIN_BASE64_LEN - 1;
        if !is(probe) {
            i = probe + 1;
            continue;
        }
        let mut start = probe;
        while start > i && is(start - 1) {
            start -= 1;
        }
        if start > i {
            // Shorter than MIN_BASE64_LEN so far: look again from there.
            i = start;
            continue;
        }
        let mut body = probe + 1;
        while is(body) {
            body += 1;
        }
        let mut end = body;
        while end - body < 2 && b.get(end) == Some(&b'=') {
            end += 1;
        }
        if let Some(run) = b.get(start..body)
            && worth_decoding(run)
        {
            runs.push((start, end));
        }
        // Past the padding, or past the byte that ended the run.
        i = if end > body { end } else { body + 1 };
    }
    runs
}

fn worth_decoding(run: &[u8]) -> bool {
    let all = |f: fn(&u8) -> bool| run.iter().all(f);
    !(all(u8::is_ascii_hexdigit)
        || all(u8::is_ascii_lowercase)
        || all(u8::is_ascii_uppercase)
        || all(u8::is_ascii_digit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent() {
        let (d, esc, from) = percent_decode("bob%40example.com%20x%2").unwrap();
        assert_eq!(d, b"bob@example.com x%2");
        assert_eq!(from.len(), d.len() + 1);
        assert_eq!((from[3], from[4], from[d.len()]), (3, 6, 23));
        assert_eq!(percent_encode("a@b c%", esc), "a%40b%20c%25");
        assert!(percent_decode("100% sure").is_none());
        let (d, esc, _) = percent_decode("caf%C3%A9").unwrap();
        assert_eq!(std::str::from_utf8(&d).unwrap(), "café");
        assert_eq!(percent_encode("né", esc), "n%C3%A9");
    }

    #[test]
    fn entities() {
        let cases = [
            ("bob&#64;example&period;com", "bob@example.com"),
            ("bob&#x40;ex&#X2e;com", "bob@ex.com"),
            ("bob&#64example.com", "bob@example.com"),
            ("a &AMP; b &lt;i&gt; &commat;", "a & b <i> @"),
            ("x&#0;y&#xD800;", "x\u{FFFD}y\u{FFFD}"),
        ];
        for (input, want) in cases {
            assert_eq!(entities_decode(input).unwrap().0, want, "{input}");
        }
        assert!(entities_decode("fish & chips &unknown;").is_none());
        let (d, esc, from) = entities_decode("&lt;b&gt;&nbsp;").unwrap();
        assert_eq!(from, [0, 4, 5, 9, 9, 15]);
        assert_eq!(d.len() + 1, from.len());
        assert_eq!(entities_encode("<a> & é", esc), "&lt;a&gt; &amp; &#xe9;");
    }

    /// The runs as a byte-at-a-time scan finds them: maximal runs of
    /// base64 characters, each with up to two `=`.
    fn runs_one_byte_at_a_time(s: &str) -> Vec<(usize, usize)> {
        let b = s.as_bytes();
        let mut runs = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if !is_b64(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && is_b64(b[i]) {
                i += 1;
            }
            let mut end = i;
            while end - i < 2 && b.get(end) == Some(&b'=') {
                end += 1;
            }
            if i - start >= MIN_BASE64_LEN && worth_decoding(&b[start..i]) {
                runs.push((start, end));
            }
            i = end.max(i + 1);
        }
        runs
    }

    #[test]
    fn the_skip_search_finds_every_run_a_full_scan_finds() {
        // Texts of short and long words over an alphabet of base64
        // characters, separators and padding, from a fixed-seed generator.
        let alphabet = b"aZ09+/-_aZ09+/-_aZ09xyQWaf= .\n:%";
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 80) as usize;
            let word = 1 + (next() % 20) as usize;
            let s: String = (0..len)
                .map(|k| {
                    let r = next();
                    if k % word == word - 1 && r % 3 == 0 {
                        ' '
                    } else {
                        char::from(alphabet[(r % alphabet.len() as u64) as usize])
                    }
                })
                .collect();
            assert_eq!(base64_runs(&s), runs_one_byte_at_a_time(&s), "{s:?}");
        }
        for s in [
            "",
            "Ym9iQGV4YW1w",
            "Ym9iQGV4YW1",
            " Ym9iQGV4YW1wbGUuY29t== x Ym9iQGV4YW1wbGUuY29t=Ym9iQGV4YW1wbGUuY29t",
        ] {
            assert_eq!(base64_runs(s), runs_one_byte_at_a_time(s), "{s:?}");
        }
    }

    #[test]
    fn base64() {
        for (text, url, pad) in [
            ("bob@example.com", false, true),
            ("bob@example.com??>", true, false),
            ("x", false, true),
        ] {
            let style = Style {
                url_safe: url,
                padded: pad,
            };
            let e = base64_encode(text.as_bytes(), style);
            let (d, s) = base64_decode(&e).unwrap();
            assert_eq!(d, text.as_bytes());
            if e.contains(['-', '_', '+', '/']) {
                assert_eq!(s.url_safe, url, "{e}");
            }
            assert_eq!(s.padded, pad && e.contains('='), "{e}");
        }
        assert_eq!(
            base64_decode("Ym9iQGV4\nYW1wbGUu\r\nY29t").unwrap().0,
            b"bob@example.com"
        );
        assert!(base64_decode("abcde").is_none());
        assert!(base64_decode("ab+c_d==").is_none());
        assert!(as_text(b"bob@example.com").is_some());
        assert!(as_text(&[0x89, b'P', b'N', b'G', 0, 0, 0, 13]).is_none());
        let s = "id 0123456789abcdef0123456789abcdef and Ym9iQGV4YW1wbGUuY29t= ok";
        let runs = base64_runs(s);
        assert_eq!(runs.len(), 1);
        assert_eq!(&s[runs[0].0..runs[0].1], "Ym9iQGV4YW1wbGUuY29t=");
    }
}
