//! Exact fixed-point decimals for exchange prices and quantities.
//!
//! Binance sends prices and quantities as decimal strings with at most eight
//! fractional digits (`"30000.01000000"`). They are parsed straight into an
//! integer count of 1e-8 units, never through a float, so a book built from
//! thousands of diffs never drifts and a level is found by exact equality.

use std::fmt;

/// Number of fractional digits a [`Fixed`] holds.
pub const SCALE_DIGITS: usize = 8;
/// `10^SCALE_DIGITS`: the number of units in 1.
pub const SCALE: i64 = 100_000_000;

/// A decimal number held exactly as an integer count of `1e-8` units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fixed(i64);

/// Why a decimal string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("empty decimal string")]
    Empty,
    #[error("invalid decimal {text:?}: unexpected character {ch:?} (only digits and one '.' are allowed; no sign)")]
    InvalidChar { text: String, ch: char },
    #[error("invalid decimal {text:?}: no digits before or after the '.'")]
    MissingDigits { text: String },
    #[error("invalid decimal {text:?}: more than {SCALE_DIGITS} significant fractional digits")]
    TooPrecise { text: String },
    #[error("invalid decimal {text:?}: out of range")]
    Overflow { text: String },
}

/// At most 40 characters of a refused input, for error messages.
fn excerpt(s: &str) -> String {
    s.chars().take(40).collect()
}

impl Fixed {
    pub const ZERO: Fixed = Fixed(0);

    /// A value from its count of `1e-8` units.
    pub const fn from_units(units: i64) -> Fixed {
        Fixed(units)
    }

    /// The count of `1e-8` units.
    pub const fn units(self) -> i64 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Parses a non-negative decimal string (`"123"`, `"0.00100000"`) exactly.
    /// Trailing zeros past the eighth fractional digit are accepted; any other
    /// extra digit is an error, never rounded.
    pub fn parse(text: &str) -> Result<Fixed, DecimalError> {
        let bytes = text.as_bytes();
        if bytes.is_empty() {
            return Err(DecimalError::Empty);
        }
        let mut int_part: i64 = 0;
        let mut frac_part: i64 = 0;
        let mut frac_digits = 0usize;
        let mut int_digits = 0usize;
        let mut seen_dot = false;
        let overflow = || DecimalError::Overflow { text: excerpt(text) };
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'0'..=b'9' => {
                    let d = i64::from(b - b'0');
                    if seen_dot {
                        if frac_digits < SCALE_DIGITS {
                            frac_part = frac_part * 10 + d;
                        } else if d != 0 {
                            return Err(DecimalError::TooPrecise { text: excerpt(text) });
                        }
                        frac_digits += 1;
                    } else {
                        int_part = int_part.checked_mul(10).and_then(|v| v.checked_add(d)).ok_or_else(overflow)?;
                        int_digits += 1;
                    }
                }
                b'.' if !seen_dot => seen_dot = true,
                _ => {
                    // Every byte before `i` was ASCII, so `i` is a char boundary.
                    let ch = text.get(i..).and_then(|t| t.chars().next()).unwrap_or('?');
                    return Err(DecimalError::InvalidChar { text: excerpt(text), ch });
                }
            }
        }
        if int_digits == 0 || (seen_dot && frac_digits == 0) {
            return Err(DecimalError::MissingDigits { text: excerpt(text) });
        }
        for _ in frac_digits.min(SCALE_DIGITS)..SCALE_DIGITS {
            frac_part *= 10;
        }
        int_part.checked_mul(SCALE).and_then(|v| v.checked_add(frac_part)).map(Fixed).ok_or_else(overflow)
    }

    /// The nearest `f64` (exact integer-to-float conversion below 2^53 units,
    /// then one correctly rounded division).
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / SCALE as f64
    }

    pub fn checked_add(self, other: Fixed) -> Option<Fixed> {
        self.0.checked_add(other.0).map(Fixed)
    }

    pub fn checked_sub(self, other: Fixed) -> Option<Fixed> {
        self.0.checked_sub(other.0).map(Fixed)
    }

    /// `self × n` (e.g. a tick size times a tick count).
    pub fn checked_mul_int(self, n: i64) -> Option<Fixed> {
        self.0.checked_mul(n).map(Fixed)
    }
}

impl fmt::Display for Fixed {
    /// Always eight fractional digits, as Binance prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let scale = SCALE as u64;
        write!(f, "{sign}{}.{:08}", abs / scale, abs % scale)
    }
}

impl std::str::FromStr for Fixed {
    type Err = DecimalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fixed::parse(s)
    }
}
