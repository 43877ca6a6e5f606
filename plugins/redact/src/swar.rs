//! Byte searches eight bytes at a time (SWAR: a `u64` as eight lanes), for
//! the JSON string scans every message goes through: finding the end of a
//! string token and the bytes its re-encoding must escape. A byte-at-a-time
//! loop costs several instructions per byte, and more inside the component
//! (each iteration also checks the epoch deadline); these test a whole
//! word with a handful of integer operations, natively and in Wasm alike.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Nonzero when some byte of `x` is below `n` (`n` ≤ 128): exact for
/// whether one is, which is all the searches ask.
#[inline]
fn has_less(x: u64, n: u8) -> u64 {
    x.wrapping_sub(LO * u64::from(n)) & !x & HI
}

/// Nonzero when some byte of `x` is `b`.
#[inline]
fn has_byte(x: u64, b: u8) -> u64 {
    has_less(x ^ (LO * u64::from(b)), 1)
}

/// The first index at or after `from` whose byte satisfies `hit`, testing
/// whole words with `word` first (`word` is nonzero when some byte of the
/// word satisfies `hit`); `b.len()` when none does.
#[inline]
fn find(b: &[u8], from: usize, word: impl Fn(u64) -> u64, hit: impl Fn(u8) -> bool) -> usize {
    let mut i = from;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        if word(u64::from_le_bytes(w)) != 0 {
            break;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if hit(c) {
            return i;
        }
        i += 1;
    }
    b.len()
}

/// The first `"` or `\` at or after `from` (`b.len()` when there is none).
pub fn quote_or_backslash(b: &[u8], from: usize) -> usize {
    find(
        b,
        from,
        |w| has_byte(w, b'"') | has_byte(w, b'\\'),
        |c| c == b'"' || c == b'\\',
    )
}

/// The first byte at or after `from` that a JSON string literal must
/// escape: `"`, `\` or a control character (`b.len()` when there is none).
pub fn json_escape(b: &[u8], from: usize) -> usize {
    find(
        b,
        from,
        |w| has_less(w, 0x20) | has_byte(w, b'"') | has_byte(w, b'\\'),
        |c| c < 0x20 || c == b'"' || c == b'\\',
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_tests_find_what_the_byte_loop_finds() {
        // Every byte value at every position of a word, and past it.
        for v in 0..=255u8 {
            for at in 0..19 {
                let mut b = vec![b'a'; 19];
                b[at] = v;
                for from in [0, 1, 7, 8, 9] {
                    let want = |hit: fn(u8) -> bool| {
                        (from..b.len()).find(|&i| hit(b[i])).unwrap_or(b.len())
                    };
                    assert_eq!(
                        quote_or_backslash(&b, from),
                        want(|c| c == b'"' || c == b'\\'),
                        "{v} at {at} from {from}"
                    );
                    assert_eq!(
                        json_escape(&b, from),
                        want(|c| c < 0x20 || c == b'"' || c == b'\\'),
                        "{v} at {at} from {from}"
                    );
                }
            }
        }
        // Bytes that borrow into their neighbours: high bytes, 0x20, 0x21.
        let b = [0xFFu8, 0x80, 0x20, 0x21, 0x23, 0x5B, 0x5D, 0xC3, 0xA9, b'"'];
        assert_eq!(quote_or_backslash(&b, 0), 9);
        assert_eq!(json_escape(&b, 0), 9);
        assert_eq!(json_escape(b"", 0), 0);
        assert_eq!(quote_or_backslash(b"abc", 5), 3);
    }
}
