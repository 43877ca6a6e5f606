//! `redact`: keeps personal data and secrets from leaving the perimeter.
//!
//! Every message travelling to the agent (tool results, resource contents,
//! prompts, notifications including logging and progress, sampling and
//! elicitation requests, errors and `error.data`) is walked as JSON: every
//! string, every object key and every number is scanned, and what a detector
//! finds is replaced in place. With `scan_requests`, messages to the server
//! are scanned too. A clean message is allowed untouched; a changed one is
//! rewritten; a detector whose action is `block` refuses the whole message.
//!
//! # Configuration
//!
//! ```toml
//! [plugins.redact]
//! source = "builtin:redact"
//!
//! [plugins.redact.config]
//! default_action = "mask"          # for built-ins not listed below
//! detectors = { card = "partial", ssn = "block", email = "hash", ipv4 = "off" }
//! hmac_key = "a long random string" # required when any action is "hash"
//! scan_requests = false            # also scan messages to the server
//! allow_values = ["127.0.0.1", "support@example.com"]
//! decode = { base64 = "redact", percent = "redact", entities = "redact", json = "redact" }
//! custom = [
//!   { name = "employee_id", regex = "EMP-[0-9]{6}", action = "mask" },
//!   { name = "openai_key", regex = "sk-[A-Za-z0-9_-]{32,}" },
//! ]
//! ```
//!
//! Every key is optional: `{}` runs every built-in detector with `mask`.
//! Unknown keys, unknown detector names, unknown actions, an invalid or
//! empty-matching regex, a custom name that is not `[a-z][a-z0-9_]{0,31}`
//! or repeats a name, `hash` without `hmac_key`, an `hmac_key` shorter than
//! 16 bytes, an empty allowed value, and turning every detector off all fail
//! `init` with a message naming the problem.
//!
//! * `detectors`: built-in name → action. Names: `email`, `phone`, `ssn`,
//!   `card`, `iban`, `ipv4`, `ipv6`, `jwt`, `private_key`, `aws_access_key`,
//!   `aws_secret_key`, `github_token`, `slack_token`, `google_api_key`,
//!   `secret`.
//! * actions: `mask`, `partial`, `hash`, `block`, `off`.
//! * `custom`: `{ name, regex, action = "mask" }`, Rust `regex` syntax
//!   (`\d`, `\w`, `(?i)` work; `\p{..}` classes do not), run on the
//!   normalized text of every string, key and number; a pattern may compile
//!   to at most 1 MiB.
//! * `allow_values`: never redacted; compared with the detected text and
//!   with its canonical form (see `hash`), so `555-123-4567` also allows
//!   `(555) 123-4567`.
//! * `decode`: per encoding layer (`base64`, `percent`, `entities`,
//!   `json`), `redact` (the default: decode, detect, re-encode), `block` (a
//!   finding inside that layer refuses the message) or `off` (not decoded;
//!   the encoded text is still scanned as written). Unknown layers or
//!   values fail `init`. See *Decoding* below.
//!
//! # Actions
//!
//! * `mask`: `[REDACTED:card]`.
//! * `partial`: `[email:***@example.com]` (domain), `[card:****1111]`,
//!   `[phone:****4567]`, `[ssn:***-**-6789]` (last four digits),
//!   `[iban:DE****3000]` (country, last four), `[ipv4:192.168.1.*]`,
//!   `[ipv6:2001:db8:85a3:*]` (first three groups), `[aws_access_key:AKIA****]`,
//!   `[github_token:ghp_****]`, `[slack_token:xoxb-****]`,
//!   `[google_api_key:AIza****]` (the public prefix), custom
//!   `[name:****wxyz]` (last four characters, when there are at least eight).
//!   `jwt`, `private_key`, `secret` and `aws_secret_key` have nothing safe
//!   to keep and are masked.
//! * `hash`: `[email:1a2b3c4d5e6f]`, the first 48 bits of HMAC-SHA256 with
//!   `hmac_key` over `name NUL canonical value`: the same value gives the
//!   same token everywhere, another key gives other tokens. Canonical:
//!   e-mail lowercased; card, SSN, phone digits only (a leading `1` of an
//!   11-digit phone number dropped); IBAN uppercase without spaces; IP
//!   addresses in standard notation; the rest as detected (after
//!   normalization, below).
//! * `block`: the message is refused with JSON-RPC error `-32001` and
//!   `Blocked by policy: the message contains sensitive data (ssn)`: the
//!   detector's name, never the value.
//!
//! # Annotations
//!
//! One count per detector that replaced something, keyed by its name
//! (`email` = 2, `employee_id` = 1). A refusal has the label `blocked` = the
//! detector's name. Values are never annotated or logged.
//!
//! # What is never changed
//!
//! The protocol skeleton passes unscanned: the top-level `jsonrpc`, `id` and
//! `method`; `params._meta.progressToken`; `params.progressToken` of
//! `notifications/progress`; `params.requestId` of `notifications/cancelled`.
//! Booleans and `null` are left alone. Everything else is fair game,
//! including `error.message`, `error.data`, object keys and numbers (a
//! number that is found becomes a string). `error.code` is scanned like any
//! number but a JSON-RPC code is too short to match.
//!
//! # Evasions handled
//!
//! * JSON escapes: strings are decoded before scanning and re-encoded when
//!   changed.
//! * JSON inside strings (`"{\"ssn\":\"123-45-6789\"}"`): parsed and
//!   walked like the message, its layout kept, four levels deep; a fifth
//!   level blocks the message (see *Decoding*).
//! * Encodings: base64, percent-encoding and HTML/XML entities are decoded
//!   before detection, layers within layers (see *Decoding*).
//! * Values split across parts: the text parts of one message (the
//!   `content[]` texts of a result, the `messages[]` of a prompt result or
//!   a sampling request, each `content` a text or a list of parts) are
//!   also scanned joined, with no separator and with a space; a value that
//!   spans parts is replaced in each part it touches (each piece becomes
//!   the value's replacement, counted once).
//! * Numbers: scanned on their integer digits (`4.111111111111111e15`).
//! * Keys: a secret or an e-mail used as an object key is renamed
//!   (`[REDACTED:email]`, then `[REDACTED:email]#2` on collision).
//! * Key context: the value of `password`, `api_key`, `client_secret`,
//!   `githubToken`, `Authorization`, ... is a `secret` as a whole; of
//!   `phone`, `mobile`, `fax` a `phone` when it is 7–15 digits; of `ssn` an
//!   `ssn` when it is 9 valid digits.
//! * Unicode: a string that is not plain ASCII is scanned in a normalized
//!   copy: invisible characters (zero-width space/joiners, word joiner, BOM,
//!   soft hyphen, bidi controls, variation selectors, tags) removed, NFKC
//!   (`１２３-４５-６７８９`, `＠`, `𝟏`), dashes and `。` folded, other
//!   scripts' digits to ASCII. If something is found the string is replaced
//!   by the normalized copy with the replacements; otherwise it is left
//!   exactly as it was.
//!
//! # Detectors
//!
//! * `email`: `local@domain.tld`, TLD of two or more letters.
//! * Separators: between the groups of a phone number, SSN, card or IBAN,
//!   one to three of space, `-`, `.`, `/` in any mix (`4111 - 1111`), and
//!   their Unicode forms: spaces (NBSP, U+2000–U+200A incl. figure and thin
//!   space, narrow NBSP, ideographic), dashes (U+2010–U+2015 incl.
//!   non-breaking hyphen, figure, en and em dash; minus U+2212; small and
//!   full-width hyphen-minus), dots (middle dot, bullet, one-dot leader,
//!   hyphenation point, bullet and dot operators, katakana middle dot,
//!   small and full-width full stop) and slashes (fraction and division
//!   slash, full-width solidus). Checksums and rules still apply.
//! * `phone`: `+` and 8–15 digits (`+44 20 7946 0958`); North American
//!   `555-123-4567`, `555.123.4567`, `555/123/4567`, `555 123 4567`,
//!   `(555) 123-4567`, `1-555-123-4567` and 11 bare digits `15551234567`
//!   (area code 2–9). Ten bare digits or other national formats without
//!   `+` are not matched.
//! * `ssn`: `123-45-6789`, `123 45 6789`, `123.45.6789` (any separators),
//!   and nine bare digits `123456789` when a label ends at most 48 bytes
//!   before them in the same clause (no line break, `,`, `;`, `!`, `?`,
//!   `|` or digit between): `SSN`, `SSN#`, `SS#`, `social security`,
//!   `soc. sec.`, `soc sec`, `socsec`, `tax id`, `taxid`, `taxpayer id`,
//!   `TIN`, any case, `_`/`-` as spaces (`Social_Security_No`,
//!   `customerSSN`), as a word of its own (not `Martin`). SSA-valid (not
//!   area 000, 666, 9xx; not group 00; not serial 0000).
//! * `card`: 13–19 digits, bare or grouped like a card (4, then groups of
//!   4–6), first digit 2–6, Luhn-valid.
//! * `iban`: a known country code, that country's length, mod-97 valid,
//!   with or without separators.
//! * `ipv4`: four octets ≤ 255, not part of a longer dotted run, not right
//!   after `version`, `ver`, `release`, `build`, `firmware`, `revision`,
//!   `rev` or `patch` (`firmware 2.1.0.4`, `AssemblyVersion("1.0.0.0")`).
//! * `ipv6`: a valid address with at least three colons, or `::1`, or a
//!   global-unicast, unique-local or link-local prefix (so `a::b` in code is
//!   not one).
//! * `jwt`: `eyJ….eyJ….sig`.
//! * `private_key`: a `-----BEGIN … PRIVATE KEY-----` block to its END line
//!   (or to the end of the string when cut off).
//! * `aws_access_key`: `AKIA`/`ASIA` + 16. `aws_secret_key`: 40 base64
//!   characters assigned to `aws_secret_access_key` (or `secretAccessKey`).
//! * `github_token`: `ghp_`/`gho_`/`ghs_`/`ghu_`/`ghr_` + 30 or more,
//!   `github_pat_` + 22 or more. `slack_token`: `xoxb-` and friends.
//!   `google_api_key`: `AIza` + 30 or more.
//! * `secret`: assignments in text whose name ends in `password`, `secret`,
//!   `token`, `api_key`, `private_key`, `access_key`, `authorization`, ...
//!   (`DB_PASSWORD=…`, `"api_key": "…"`, `token: …`, `client_secret => …`),
//!   `Bearer <token>`, and the password of `scheme://user:password@host`.
//!   Placeholders (`****`, `null`, `${VAR}`, `<token>`), values shorter
//!   than four characters, and plain lowercase words after `name:` in prose
//!   are not secrets.
//!
//! # Decoding
//!
//! Every string (value or key) is opened in each layer that applies, and
//! what a layer decodes to is a string again, so layers compose (base64 of
//! percent-encoded text, entities inside embedded JSON, a JWT header's
//! JSON, ...):
//!
//! * `entities`: `&#64;` and `&#x40;` (the `;` optional, as browsers do;
//!   a reference to nothing valid is U+FFFD), and the named entities
//!   `&amp; &lt; &gt; &quot; &apos; &nbsp; &commat; &period; &hyphen;
//!   &dash; &ndash; &mdash; &minus; &plus; &lowbar; &colon; &semi; &comma;
//!   &sol; &bsol; &equals; &quest; &excl; &num; &percnt; &dollar; &ast;
//!   &lpar; &rpar; &lsqb; &rsqb; &lcub; &rcub; &verbar; &Tab; &NewLine;
//!   &ensp; &emsp; &thinsp; &shy; &zwj; &zwnj;` (the XML five also in
//!   upper case). Others are left as written.
//! * `percent`: every `%XX`. `+` stays a plus sign (a space only in form
//!   bodies, and `bob+tag@example.com` is an address).
//! * `base64`, standard or URL-safe, padded or not: a resource's `blob`
//!   (any key `blob`) whole, whatever it decodes to; a string that is base64
//!   wrapped in lines (MIME) whole; and in any text, each run of at least
//!   `MIN_BASE64_LEN` (12) base64 characters, and within a run with
//!   slashes each segment between them, when it decodes to text: UTF-8
//!   with at least `MIN_PRINTABLE_PERCENT` (90 %) printable characters.
//!   Runs of only hexadecimal digits (hashes, UUIDs), only digits, or only
//!   letters of one case are not decoded; digests and random ids decode to
//!   binary and are left alone.
//! * `json`: a string that is a JSON object or array is walked like the
//!   message, `MAX_EMBED` (4) levels directly inside each other.
//!
//! A finding inside a layer is replaced in the decoded text, which is
//! encoded again in the same style: for entities and percent-encoding the
//! text before and after the changed stretch is kept as written, and the
//! stretch escapes `&` or `%` and the characters the original escaped (all
//! non-ASCII when it escaped any); base64 keeps its alphabet and padding
//! (line wrapping is not kept). The re-encoded text must decode to the redacted text, or the
//! message is refused. A finding in bytes that are not text (a binary
//! blob, percent-encoded bytes that are not UTF-8) refuses the message:
//! binary cannot be rewritten. A layer whose policy is `block` refuses
//! the message on any finding inside it.
//!
//! Bounds, each refusing the message (`Blocked by policy: the message nests
//! JSON or encodings deeper than can be checked for sensitive data`, label
//! `blocked` = `too_deep`) rather than passing it unscanned: JSON more than
//! `MAX_EMBED` (4) levels inside strings (JSON decoded from another layer
//! starts its own count), more than `MAX_LAYERS` (8) layers of any kind
//! around a value, nesting deeper than 128 inside an embedded JSON text,
//! more than `MAX_DECODED_BYTES` (16 MiB) decoded per message. Decoding
//! never lengthens a text, so the work is at most the layers times the
//! message.
//!
//! # Limits
//!
//! * Not found: names and postal addresses; national phone formats without
//!   `+` (other than North American) and ten bare digits; SSNs without
//!   separators and without a label or an `ssn` key; separators other
//!   than those listed (`_`, `,`, `|`) or more than three in a row; digits
//!   grouped other than the format's (`1 2 3 4 5 6 7 8 9`, `12345 6789`);
//!   a string shorter than six characters (`::1` alone); hex-, base32- or
//!   otherwise encoded values, base64 shorter than 12 characters or cut at
//!   another offset than a run or slash segment starts, `+` for a space in
//!   percent-encoded form bodies; look-alike letters from other scripts
//!   (Cyrillic `а` in an address); a value split across strings that are
//!   not text parts of one message, across SSE messages or messages of one
//!   call (the plugin sees one message at a time), or by visible
//!   characters; a value split across parts that are themselves encoded
//!   (parts are joined as written, not decoded).
//! * Between two findings of one entity- or percent-encoded string, text
//!   is escaped again like anything the original escaped anywhere, so it
//!   may come back with more characters escaped than before (it decodes to
//!   the same text).
//! * Protocol values (ids, cursors, progress tokens) are scanned as
//!   written, not decoded: a base64 cursor is passed as it is.
//! * Found too eagerly: four-part version numbers look like IPv4 unless a
//!   version word is right before them (and an address written
//!   `version 10.0.0.7` is missed); nine valid digits in a clause that
//!   names an SSN are one;
//!   Luhn-valid 13–19 digit numbers starting with 2–6 look like cards; an
//!   unquoted word with a digit after `token:` in prose is a secret.
//! * `partial` keeps the e-mail domain; `hash` tokens are 48 bits, so
//!   distinct values collide once in ~16 million pairs.
//! * A `block` stops at the first blocked finding: the refusal's
//!   annotations name that detector only.
//! * The text block is rewritten to match `structuredContent` only for a
//!   `tools/call` result (`result.content[].text` equal to
//!   `result.structuredContent` as JSON).
//! * Progress tokens and cancelled request ids pass unscanned (a server
//!   could carry data there; clients drop unknown tokens).

mod config;
#[cfg(test)]
mod corpus;
mod decode;
mod detect;
mod normalize;
mod render;
mod swar;
#[cfg(test)]
mod tests;
mod walk;

use portcullis_plugin_sdk::{
    ConfiguredPlugin, Context, Direction, Interests, Verdict, allow, codes, deny, log_info, rewrite,
};

use config::Config;
use walk::{Redactor, Stop};

/// The plugin: scans messages with the configured detectors.
pub struct Redact;

impl ConfiguredPlugin for Redact {
    const NAME: &'static str = "redact";
    type Config = Config;

    fn parse(config: &str) -> Result<Config, String> {
        config::parse(config)
    }

    fn announce(cfg: &Config) {
        log_info(&cfg.summary());
    }

    /// Every method; to the agent only, unless `scan_requests`.
    fn interests(cfg: &Config) -> Interests {
        if cfg.scan_requests {
            Interests::all()
        } else {
            Interests::all().directions([Direction::ToClient])
        }
    }

    /// Scans one message.
    fn decide(cfg: &Config, ctx: &Context, message: &str) -> Verdict {
        if ctx.is_to_server() && !cfg.scan_requests {
            return allow();
        }
        let mut r = Redactor::new(cfg);
        match r.message(message, ctx.method.as_deref()) {
            Ok(None) => allow(),
            Ok(Some(new)) => {
                let mut v = rewrite(new);
                for (det, &n) in cfg.detectors.iter().zip(&r.counts) {
                    if n > 0 {
                        v = v.with_count(det.name.as_str(), n);
                    }
                }
                v
            }
            Err(Stop::Block(det)) => {
                // `det` is one of this configuration's detectors (walk.rs
                // blocks on a hit naming no detector, under this name).
                let name = cfg
                    .detectors
                    .get(det)
                    .map_or("unknown", |d| d.name.as_str());
                deny(
                    codes::POLICY_DENIED,
                    format!("Blocked by policy: the message contains sensitive data ({name})"),
                    format!("redact: {name} found, and its action is block"),
                )
                .with_label("blocked", name)
            }
            Err(Stop::TooDeep) => deny(
                codes::POLICY_DENIED,
                "Blocked by policy: the message nests JSON or encodings deeper than can be checked for sensitive data",
                "redact: JSON or encodings nested beyond the scanner's limits",
            )
            .with_label("blocked", "too_deep"),
            // Unreachable for messages the gateway accepted; refuse rather than
            // let unscanned data out.
            Err(Stop::Malformed) => deny(
                codes::POLICY_DENIED,
                "Blocked by policy: the message could not be checked for sensitive data",
                "redact: the message is not JSON the scanner can read",
            )
            .with_label("blocked", "unreadable"),
        }
    }
}

portcullis_plugin_sdk::export_plugin!(Redact);
