//! Exact comparison of JSON numbers as written: `100.00000000000000001` is
//! greater than `100`, `1e2` equals `100`, `-0` equals `0`, `1e-400` is
//! greater than `0`. No rounding to `f64`, no bignum: a number is its sign,
//! its significant digits and the position of the decimal point, and two
//! numbers compare by sign, then point position, then digits.
//!
//! The exponent is bounded ([`MAX_EXPONENT`]); a number beyond it is not
//! compared at all (the caller refuses), so a hostile `1e999999999999` can
//! neither overflow nor be mistaken for another number.

use std::cmp::Ordering;

/// The largest exponent magnitude (the `e` part of `1e300`) compared;
/// beyond it [`Decimal::parse`] returns `None`.
pub const MAX_EXPONENT: i64 = 100_000;

/// A decimal number, exactly: `0.d₁d₂d₃… × 10^point`, negated when
/// `negative`. `digits` (ASCII) has no leading or trailing zeros; it is
/// empty for zero, whatever the sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    point: i64,
}

impl Decimal {
    /// Parses a number in JSON syntax (`-12.5e3`; leading zeros are
    /// accepted). `None` for anything else, and for an exponent beyond
    /// [`MAX_EXPONENT`].
    pub fn parse(text: &str) -> Option<Decimal> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(at) => (rest.get(..at)?, Some(rest.get(at + 1..)?)),
            None => (rest, None),
        };
        let (int, frac) = match mantissa.split_once('.') {
            Some((int, frac)) if !frac.is_empty() => (int, frac),
            Some(_) => return None,
            None => (mantissa, ""),
        };
        if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let exponent = match exponent {
            Some(e) => parse_exponent(e)?,
            None => 0,
        };
        let all = int.bytes().chain(frac.bytes());
        let leading = all.clone().take_while(|&b| b == b'0').count();
        let mut digits: Vec<u8> = all.skip(leading).collect();
        while digits.last() == Some(&b'0') {
            digits.pop();
        }
        let int_len = i64::try_from(int.len()).ok()?;
        let leading = i64::try_from(leading).ok()?;
        Some(Decimal {
            negative: negative && !digits.is_empty(),
            point: if digits.is_empty() {
                0
            } else {
                int_len - leading + exponent
            },
            digits,
        })
    }

    /// The ordering of the magnitudes (absolute values).
    fn cmp_magnitude(&self, other: &Decimal) -> Ordering {
        match (self.digits.is_empty(), other.digits.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => self
                .point
                .cmp(&other.point)
                .then_with(|| self.digits.cmp(&other.digits)),
        }
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Decimal) -> Ordering {
        match (self.negative, other.negative) {
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// `[+-]digits`, at most [`MAX_EXPONENT`] in magnitude.
fn parse_exponent(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, text.get(1..)?),
        Some(b'+') => (false, text.get(1..)?),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(b - b'0');
        if value > MAX_EXPONENT {
            return None;
        }
    }
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap_or_else(|| panic!("{text:?} does not parse"))
    }

    /// Each row is in strictly increasing order; numbers in one inner
    /// slice are equal.
    const ASCENDING: &[&[&str]] = &[
        &["-1e309"],
        &["-100.00000000000000001"],
        &["-100", "-1e2", "-100.000", "-0.1e3", "-00100"],
        &["-99.99999999999999999"],
        &["-0.30000000000000004"],
        &["-0.3", "-3e-1", "-0.30"],
        &["-1e-400"],
        &["0", "-0", "-0.0", "0.000", "0e5", "-0e-5", "00", "0E+400"],
        &["1e-400"],
        &["0.1", "1e-1", "0.10", "10e-2"],
        &["0.2"],
        &["0.3", "3E-1"],
        &["0.30000000000000004"],
        &["1", "1.0", "10e-1", "0.01e2", "001"],
        &["99.99999999999999999"],
        &["100", "1e2", "100.0", "1E+2", "0.1e3", "100e0", "00100"],
        &["100.00000000000000001"],
        &["100.0000000000000001"],
        &["101"],
        &["18446744073709551615"],
        &["18446744073709551616"],
        &["1e308"],
        &["1.5e308"],
        &["1e309"],
        &["1e100000"],
    ];

    #[test]
    fn orders_numbers_as_written() {
        let rows: Vec<Vec<Decimal>> = ASCENDING
            .iter()
            .map(|same| same.iter().map(|t| d(t)).collect())
            .collect();
        for (i, a) in rows.iter().enumerate() {
            for (j, b) in rows.iter().enumerate() {
                for x in a {
                    for y in b {
                        assert_eq!(x.cmp(y), i.cmp(&j), "{x:?} vs {y:?}");
                    }
                }
            }
            for x in a {
                assert_eq!(x, &a[0], "equal forms normalise alike");
            }
        }
    }

    #[test]
    fn refuses_what_it_cannot_compare() {
        for text in [
            "",
            "-",
            "+1",
            ".5",
            "1.",
            "1e",
            "1e+",
            "1e-",
            "0x10",
            "1_000",
            "NaN",
            "Infinity",
            "--1",
            "1e100001",
            "1e-100001",
            "1e99999999999999999999999",
            " 1",
            "1 ",
        ] {
            assert_eq!(Decimal::parse(text), None, "{text:?}");
        }
        assert!(Decimal::parse("1e100000").is_some());
        assert!(Decimal::parse("1e-100000").is_some());
    }

    #[test]
    fn long_numbers_stay_exact() {
        let long = format!("1.{}1", "0".repeat(10_000));
        assert!(d(&long) > d("1"));
        assert!(d(&long) < d("1.0001"));
        let big = format!("{}1", "9".repeat(5_000));
        assert!(d(&big) > d("1e4999"));
        assert!(d(&big) < d("1e5001"));
    }
}
